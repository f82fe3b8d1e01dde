//! A server-sent events decoder for streamed LLM answers (the WHATWG `text/event-stream`
//! format, which OpenAI-compatible servers, Anthropic and Gemini all stream).
//!
//! Bytes go in as the network delivers them, split anywhere (inside a line, inside a UTF-8
//! character, between the CR and LF of a line end); whole events come out. Lines end in LF,
//! CRLF or a lone CR; `:` starts a comment (a keep-alive), ignored; several `data:` lines of
//! one event are joined with `\n`; an event ends at a blank line.

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty when the server sent none (OpenAI never does).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line was not UTF-8.
    #[error("event stream is not UTF-8")]
    NotUtf8,
    /// A line grew past the limit without ending (a broken server, or not an event stream).
    #[error("event stream line longer than {0} bytes")]
    LineTooLong(usize),
}

/// The longest line kept while waiting for its end: bounds memory per open stream.
pub const MAX_LINE: usize = 256 * 1024;

/// Decodes an event stream incrementally.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting this one belongs to that line end.
    after_cr: bool,
    /// The event being read.
    pending: SseEvent,
    /// Whether `pending` has a data line (an event with none is not dispatched).
    has_data: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; appends each event they complete to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
            self.line = line;
            self.line.clear();
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(SseError::LineTooLong(MAX_LINE));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// The stream ended: an event whose blank line never came is discarded, as the format
    /// says (a cut stream must not pass off half an event as whole).
    pub fn finish(&mut self) {
        self.line.clear();
        self.pending = SseEvent::default();
        self.has_data = false;
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.pending));
            } else {
                self.pending = SseEvent::default();
            }
            self.has_data = false;
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "event" => value.clone_into(&mut self.pending.event),
            // `id` and `retry` are for browsers reconnecting; a chat answer is not resumed.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(stream: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece) {
            d.push(chunk, &mut out).unwrap();
        }
        d.finish();
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_come_out_whole_however_the_bytes_are_split() {
        let stream = ": keep-alive\r\n\r\ndata: {\"a\":\"é\"}\r\n\r\ndata:x\n\nevent: error\ndata: one\ndata: two\n\ndata: [DONE]\r\r";
        for piece in 1..stream.len() {
            let events = decode_in_pieces(stream.as_bytes(), piece);
            assert_eq!(
                data(&events),
                ["{\"a\":\"é\"}", "x", "one\ntwo", "[DONE]"],
                "split every {piece} bytes"
            );
            assert_eq!(events[2].event, "error");
            assert_eq!(events[0].event, "");
        }
    }

    #[test]
    fn an_event_without_its_blank_line_is_dropped_at_the_end() {
        assert_eq!(data(&decode_in_pieces(b"data: a\n\ndata: b\n", 4)), ["a"]);
    }

    #[test]
    fn bad_bytes_and_endless_lines_are_errors() {
        let mut out = Vec::new();
        assert_eq!(
            SseDecoder::new().push(b"data: \xff\n", &mut out),
            Err(SseError::NotUtf8)
        );
        let mut d = SseDecoder::new();
        let big = vec![b'a'; MAX_LINE / 2 + 1];
        d.push(&big, &mut out).unwrap();
        assert_eq!(d.push(&big, &mut out), Err(SseError::LineTooLong(MAX_LINE)));
    }
}
