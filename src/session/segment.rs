//! Cutting streamed LLM text into pieces for TTS.
//!
//! TTS latency is the time to the first audio byte, so the agent speaks a sentence (or a clause)
//! as soon as it is complete instead of waiting for the whole reply. [`Segmenter`] follows the
//! reference `segment_text` (spec 20 §1.8) rule for rule:
//!
//! 1. **Delimiter cut.** Find the first character of the buffer that is one of
//!    [`SegmentOptions::delimiters`]. Emit the text up to and including it (excluding it when
//!    `keep_delimiter` is false), drop it and the whitespace after it, and look again. There is no
//!    minimum length: `"3.14"` splits into `"3."` and `"14"`.
//! 2. **Soft cut.** With no delimiter, if the buffer holds at least `max_buffer` characters or at
//!    least `2 * min_words` words: `target = max(min_chars, min(len, max_buffer))`; cut at the last
//!    space before `target` (at `target` itself if there is none), emit the part before the cut
//!    without trailing whitespace, drop the leading whitespace of the rest, and look again.
//! 3. Otherwise wait for more text. At the end of the stream the rest is emitted as it is.
//!
//! Lengths count characters (Unicode scalar values, like Python's `len`), never bytes.
//!
//! Deliberate differences from the Python, each a bug there:
//! - no empty or whitespace-only segment is ever emitted (Python yields `""` for `"..x"` with
//!   `keep_delimiter=False`, and `"\n"` for a stream starting with a newline);
//! - whitespace after a cut is dropped even when it arrives in a later chunk, so LLM tokens such
//!   as `" world"` do not give segments a leading space that depends on where chunks split;
//! - `min_words == 0` and `max_buffer == 0` are rejected: Python loops forever on them.
//!
//! Kept as specified: a soft cut happens as soon as the threshold is reached, so where it falls
//! depends on how the text was chunked (a delimiter-driven text segments the same however it is
//! chunked). Whitespace is Rust's `char::is_whitespace`, which differs from Python's `isspace`
//! only on the ASCII separators U+001C–U+001F.

use std::mem;

/// How text is cut; the defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOptions {
    /// Characters that end a segment (each character on its own, not a string to match).
    pub delimiters: String,
    /// Whether a segment ends with its delimiter (TTS voices read punctuation as prosody).
    pub keep_delimiter: bool,
    /// Lowest cut position of a soft cut, in characters.
    pub min_chars: usize,
    /// Half the word count that forces a soft cut in text without delimiters.
    pub min_words: usize,
    /// Character count that forces a soft cut in text without delimiters.
    pub max_buffer: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            delimiters: ".?!,;:\n".to_owned(),
            keep_delimiter: true,
            min_chars: 50,
            min_words: 12,
            max_buffer: 600,
        }
    }
}

/// Options a [`Segmenter`] refuses, because the reference algorithm never terminates with them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// `min_words == 0` would make an empty buffer reach the word threshold forever.
    #[error("min_words must be at least 1")]
    ZeroMinWords,
    /// `max_buffer == 0` would make an empty buffer reach the length threshold forever.
    #[error("max_buffer must be at least 1")]
    ZeroMaxBuffer,
}

/// Streaming segmenter: push LLM chunks as they arrive, take complete segments out.
///
/// Holds one growing `String` of pending text; each emitted segment is a fresh `String` (the
/// TTS request owns it), nothing else is allocated per chunk.
#[derive(Debug, Clone, Default)]
pub struct Segmenter {
    opts: SegmentOptions,
    buffer: String,
    /// A cut has happened in this stream, so whitespace at the front of the buffer is dropped.
    after_cut: bool,
}

/// The result of one step of the cutting loop.
enum Step {
    /// A segment to emit.
    Emit(String),
    /// A cut that produced nothing worth speaking; look again.
    Skip,
    /// Nothing more can be cut until more text arrives.
    Wait,
}

impl Segmenter {
    /// A segmenter with these options, or why they cannot work.
    pub fn new(opts: SegmentOptions) -> Result<Self, SegmentError> {
        if opts.min_words == 0 {
            return Err(SegmentError::ZeroMinWords);
        }
        if opts.max_buffer == 0 {
            return Err(SegmentError::ZeroMaxBuffer);
        }
        Ok(Self {
            buffer: String::with_capacity(opts.max_buffer.saturating_mul(2).min(4096)),
            opts,
            after_cut: false,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SegmentOptions {
        &self.opts
    }

    /// Text received but not yet emitted.
    pub fn pending(&self) -> &str {
        &self.buffer
    }

    /// Forgets pending text and starts a new stream (an interrupted reply is not spoken later).
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.after_cut = false;
    }

    /// Adds a chunk and returns the segments it completes.
    ///
    /// Segments are cut lazily as the iterator is consumed; dropping it early loses nothing, the
    /// rest comes out of the next `push` or `finish`.
    pub fn push(&mut self, chunk: &str) -> Segments<'_> {
        let chunk = if self.after_cut && self.buffer.is_empty() {
            chunk.trim_start()
        } else {
            chunk
        };
        self.buffer.push_str(chunk);
        Segments {
            seg: self,
            finishing: false,
        }
    }

    /// Ends the stream: returns the remaining segments, then the rest as it is, and leaves the
    /// segmenter ready for a new stream.
    pub fn finish(&mut self) -> Segments<'_> {
        Segments {
            seg: self,
            finishing: true,
        }
    }

    /// One pass of the reference loop.
    fn step(&mut self) -> Step {
        if self.buffer.is_empty() {
            return Step::Wait;
        }
        let delims = &self.opts.delimiters;
        if let Some((at, d)) = self
            .buffer
            .char_indices()
            .find(|&(_, c)| delims.contains(c))
        {
            let after = at + d.len_utf8();
            let end = if self.opts.keep_delimiter { after } else { at };
            let seg = speakable(&self.buffer[..end]);
            self.consume(after);
            return seg;
        }
        let len = self.buffer.chars().count();
        let word_limit = self.opts.min_words.saturating_mul(2);
        let many_words = self.buffer.split_whitespace().nth(word_limit - 1).is_some();
        if len >= self.opts.max_buffer || many_words {
            let target = self.opts.min_chars.max(len.min(self.opts.max_buffer));
            let target = byte_offset(&self.buffer, target);
            let cut = self.buffer[..target].rfind(' ').unwrap_or(target);
            let seg = speakable(self.buffer[..cut].trim_end());
            self.consume(cut);
            return seg;
        }
        Step::Wait
    }

    /// Drops the first `n` bytes of the buffer and the whitespace after them.
    fn consume(&mut self, n: usize) {
        let rest = &self.buffer[n..];
        let start = n + (rest.len() - rest.trim_start().len());
        self.buffer.drain(..start);
        self.after_cut = true;
    }
}

/// Segments completed by a [`Segmenter::push`] or [`Segmenter::finish`], cut as they are read.
#[derive(Debug)]
pub struct Segments<'a> {
    seg: &'a mut Segmenter,
    /// The stream has ended: once nothing more can be cut, the rest is emitted.
    finishing: bool,
}

impl Iterator for Segments<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            match self.seg.step() {
                Step::Emit(s) => return Some(s),
                Step::Skip => continue,
                Step::Wait => break,
            }
        }
        if !self.finishing {
            return None;
        }
        let rest = mem::take(&mut self.seg.buffer);
        self.seg.after_cut = false;
        self.finishing = false;
        (!rest.trim().is_empty()).then_some(rest)
    }
}

/// A segment worth sending to TTS, or a skip for empty and whitespace-only text.
fn speakable(s: &str) -> Step {
    if s.trim().is_empty() {
        Step::Skip
    } else {
        Step::Emit(s.to_owned())
    }
}

/// Byte offset of character `chars` in `s`, or its length if `s` is shorter.
fn byte_offset(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opts: SegmentOptions, chunks: &[&str]) -> Vec<String> {
        let mut s = Segmenter::new(opts).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(c));
        }
        out.extend(s.finish());
        out
    }

    fn default_run(chunks: &[&str]) -> Vec<String> {
        run(SegmentOptions::default(), chunks)
    }

    fn no_delim() -> SegmentOptions {
        SegmentOptions {
            keep_delimiter: false,
            ..SegmentOptions::default()
        }
    }

    #[test]
    fn defaults_are_the_references() {
        let o = SegmentOptions::default();
        assert_eq!(o.delimiters, ".?!,;:\n");
        assert!(o.keep_delimiter);
        assert_eq!((o.min_chars, o.min_words, o.max_buffer), (50, 12, 600));
    }

    #[test]
    fn spec_vector_split_chunks_and_decimal_point() {
        assert_eq!(
            default_run(&["Hello, wor", "ld. Pi is 3.14! ok"]),
            ["Hello,", "world.", "Pi is 3.", "14!", "ok"]
        );
    }

    #[test]
    fn spec_vector_lone_delimiters_are_segments() {
        assert_eq!(default_run(&["..x"]), [".", ".", "x"]);
    }

    #[test]
    fn spec_vector_thirty_words_soft_cut_before_last_word() {
        let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        assert_eq!(default_run(&[&text]), [words[..29].join(" "), "w29".into()]);
    }

    #[test]
    fn spec_vector_max_buffer_forced_cut_without_spaces() {
        let text = "a".repeat(700);
        assert_eq!(default_run(&[&text]), ["a".repeat(600), "a".repeat(100)]);
    }

    #[test]
    fn spec_vector_drop_delimiter_and_following_whitespace() {
        assert_eq!(run(no_delim(), &["Hi.\n\nThere"]), ["Hi", "There"]);
    }

    #[test]
    fn earliest_delimiter_wins_whatever_its_place_in_the_option() {
        assert_eq!(default_run(&["a;b.c"]), ["a;", "b.", "c"]);
        assert_eq!(default_run(&["x\ny"]), ["x\n", "y"]);
    }

    #[test]
    fn custom_delimiters_replace_the_defaults() {
        let opts = SegmentOptions {
            delimiters: "|".into(),
            ..SegmentOptions::default()
        };
        assert_eq!(
            run(opts, &["one, two|three. four"]),
            ["one, two|", "three. four"]
        );
    }

    #[test]
    fn soft_cut_below_min_chars_cuts_at_last_space() {
        // 24 one-letter words are only 47 characters: target = min_chars = 50 is past the end,
        // so the cut is at the last space of the whole buffer.
        let text = vec!["a"; 24].join(" ");
        assert_eq!(default_run(&[&text]), [vec!["a"; 23].join(" "), "a".into()]);
    }

    #[test]
    fn max_buffer_cut_at_last_space_before_limit() {
        // 20 words of 39 letters: 799 characters, fewer than 24 words, no delimiter.
        let word = "b".repeat(39);
        let text = [word.as_str(); 20].join(" ");
        let got = default_run(&[&text]);
        // The last space before character 600 is at 599, right after word 15.
        assert_eq!(
            got,
            [[word.as_str(); 15].join(" "), [word.as_str(); 5].join(" ")]
        );
    }

    #[test]
    fn min_chars_above_max_buffer_sets_the_cut_target() {
        let opts = SegmentOptions {
            min_chars: 20,
            max_buffer: 10,
            ..SegmentOptions::default()
        };
        assert_eq!(
            run(opts, &["abcdefghij klmnopqrstuvw"]),
            ["abcdefghij", "klmnopqrstuvw"]
        );
    }

    #[test]
    fn forced_cut_counts_characters_not_bytes() {
        let text = "é".repeat(700);
        assert_eq!(default_run(&[&text]), ["é".repeat(600), "é".repeat(100)]);
    }

    #[test]
    fn end_of_stream_emits_rest_as_is() {
        assert_eq!(default_run(&["Hello there "]), ["Hello there "]);
        assert_eq!(default_run(&["Done. tail  "]), ["Done.", "tail  "]);
    }

    #[test]
    fn nothing_is_emitted_before_a_boundary() {
        let mut s = Segmenter::default();
        assert_eq!(s.push("Hello wor").count(), 0);
        assert_eq!(s.pending(), "Hello wor");
        assert_eq!(s.push("").count(), 0);
        assert_eq!(s.finish().collect::<Vec<_>>(), ["Hello wor"]);
    }

    #[test]
    fn no_empty_segments_python_yields_empty_strings() {
        assert_eq!(run(no_delim(), &["..x"]), ["x"]);
        assert_eq!(default_run(&["\nHello"]), ["Hello"]);
        assert_eq!(default_run(&["   "]), Vec::<String>::new());
    }

    #[test]
    fn whitespace_after_cut_dropped_across_chunks_python_keeps_it() {
        // Python yields " world." here: the space arrived after the cut.
        assert_eq!(
            default_run(&["Hello", ",", " ", " world", "."]),
            ["Hello,", "world."]
        );
    }

    #[test]
    fn leading_whitespace_of_the_stream_is_kept_as_specified() {
        assert_eq!(default_run(&[" Hi. there"]), [" Hi.", "there"]);
    }

    #[test]
    fn chunking_does_not_change_delimiter_driven_segments() {
        let text = "Sure, I can help with that. Your order number 4521 shipped on Monday; it \
                    should arrive by Thursday! Anything else?\nJust ask: I'm here. Bye";
        let whole = default_run(&[text]);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let by_char: Vec<&str> = chars.iter().map(String::as_str).collect();
        // LLM-style tokens: each word carries its leading space.
        let mut by_word = Vec::new();
        let mut start = 0;
        for (i, _) in text.match_indices(' ') {
            by_word.push(&text[start..i]);
            start = i;
        }
        by_word.push(&text[start..]);
        assert_eq!(
            whole,
            [
                "Sure,",
                "I can help with that.",
                "Your order number 4521 shipped on Monday;",
                "it should arrive by Thursday!",
                "Anything else?",
                "Just ask:",
                "I'm here.",
                "Bye"
            ]
        );
        assert_eq!(default_run(&by_char), whole);
        assert_eq!(default_run(&by_word), whole);
    }

    #[test]
    fn soft_cut_fires_at_threshold_so_it_depends_on_chunking() {
        let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let mut tokens = vec![words[0].clone()];
        tokens.extend(words[1..].iter().map(|w| format!(" {w}")));
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        // Word by word the 24th word triggers the cut; whole, the 30 words are seen at once.
        assert_eq!(
            default_run(&tokens),
            [words[..23].join(" "), words[23..].join(" ")]
        );
    }

    #[test]
    fn dropped_iterator_keeps_its_segments_for_later() {
        let mut s = Segmenter::default();
        assert_eq!(s.push("a. b. c").next().as_deref(), Some("a."));
        assert_eq!(s.push(" d.").collect::<Vec<_>>(), ["b.", "c d."]);
        let mut s = Segmenter::default();
        let _ = s.push("x. y. z");
        assert_eq!(s.finish().collect::<Vec<_>>(), ["x.", "y.", "z"]);
    }

    #[test]
    fn finish_starts_a_new_stream() {
        let mut s = Segmenter::default();
        assert_eq!(s.push("One. two").count(), 1);
        assert_eq!(s.finish().collect::<Vec<_>>(), ["two"]);
        // A new stream keeps its leading whitespace, like the first.
        assert_eq!(s.push(" Three.").collect::<Vec<_>>(), [" Three."]);
        s.reset();
        assert_eq!(s.pending(), "");
    }

    #[test]
    fn reset_drops_pending_text() {
        let mut s = Segmenter::default();
        assert_eq!(s.push("interrupted repl").count(), 0);
        s.reset();
        assert_eq!(s.finish().count(), 0);
    }

    #[test]
    fn options_that_never_terminate_in_python_are_rejected() {
        let zero_words = SegmentOptions {
            min_words: 0,
            ..SegmentOptions::default()
        };
        assert_eq!(
            Segmenter::new(zero_words).unwrap_err(),
            SegmentError::ZeroMinWords
        );
        let zero_buf = SegmentOptions {
            max_buffer: 0,
            min_chars: 0,
            ..SegmentOptions::default()
        };
        assert_eq!(
            Segmenter::new(zero_buf).unwrap_err(),
            SegmentError::ZeroMaxBuffer
        );
    }

    #[test]
    fn tiny_limits_still_terminate() {
        let opts = SegmentOptions {
            min_chars: 0,
            min_words: 1,
            max_buffer: 1,
            ..SegmentOptions::default()
        };
        // Every character forces a cut: target = 1, no space before it, cut after 1 char.
        assert_eq!(run(opts, &["ab  c"]), ["a", "b", "c"]);
    }
}
