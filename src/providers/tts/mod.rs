//! Text-to-speech providers: implementations of [`crate::providers::Tts`] for real services,
//! and one that needs no network at all.
//!
//! - [`elevenlabs`]: ElevenLabs' stream-input WebSocket (one socket per reply, text in as it
//!   comes, base64 PCM out).
//! - [`openai`]: OpenAI's `audio/speech` (one streamed HTTP request per sentence, pipelined),
//!   which LAN servers with an OpenAI-compatible route also speak.
//! - [`cartesia`]: Cartesia's TTS WebSocket (one context per reply, continued per sentence).
//! - [`espeak`]: the `espeak-ng` program, the offline voice that can still apologise when the
//!   network is down.
//!
//! The session hands a provider whole sentences and reads mono `f32` chunks at the provider's
//! [`crate::providers::Tts::sample_rate`]; it resamples to the output itself. Dropping the audio
//! stream cancels: the WebSocket providers tell the service (where the protocol can) and close
//! the socket, the HTTP provider drops the response body, espeak-ng is killed.
//!
//! What the two WebSocket providers share lives here: [`SocketProtocol`] is what differs
//! between them (the messages), [`run_socket`] what does not (ordering, timeouts, keep-alive,
//! cancellation, close codes, never a key in an error).

pub mod cartesia;
pub mod elevenlabs;
pub mod espeak;
pub mod openai;

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::providers::http::{self, ApiKey};
use crate::providers::ws::{self, Message, WsStream};
use crate::providers::{sleep_until, ProviderError};

pub use cartesia::{CartesiaConfig, CartesiaTts};
pub use elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
pub use espeak::{EspeakConfig, EspeakTts};
pub use openai::{OpenAiTts, OpenAiTtsConfig};

/// Audio chunks buffered between a provider's task and the session. The session drains the
/// stream as chunks arrive, so this only rides out a moment's delay; it bounds the memory an
/// open stream can hold when nobody reads.
pub(crate) const AUDIO_CHANNEL: usize = 8;

/// The sender a provider task delivers audio (or its one error) through.
pub(crate) type AudioSender = mpsc::Sender<Result<Vec<f32>, ProviderError>>;

/// Why a TTS provider could not be built from its settings. Messages hold no key.
#[derive(Debug, thiserror::Error)]
pub enum TtsSetupError {
    /// The base URL does not parse or has the wrong scheme.
    #[error("invalid base URL: {0}")]
    InvalidBaseUrl(String),
    /// The service needs a key and none (or an empty one) was given.
    #[error("an API key is required")]
    MissingKey,
    /// The key holds characters a header cannot carry (the key is not shown).
    #[error("the API key holds characters that cannot be sent in a header")]
    InvalidKey,
    /// A setting is out of the service's range.
    #[error("{message}")]
    Invalid {
        /// The setting, named as its `[tts]` key (`speed`, `sample_rate`, `voice`, …).
        key: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// A setting `key` the provider refuses, and why.
pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> TtsSetupError {
    TtsSetupError::Invalid {
        key,
        message: message.into(),
    }
}

/// The error a service reports inside a stream (a JSON error message rather than an HTTP
/// status): `status` (HTTP-style, when the service gives one) and `code` (its machine-readable
/// name) say what kind, `message` is the service's text, kept redacted and shortened.
pub(crate) fn service_error(
    status: Option<u16>,
    code: &str,
    message: &str,
    key: Option<&ApiKey>,
) -> ProviderError {
    let code_lc = code.to_ascii_lowercase();
    let message = http::shorten(message.trim());
    let message = key.map_or(message.clone(), |k| k.redact(&message));
    let has = |words: &[&str]| words.iter().any(|w| code_lc.contains(w));
    if has(&["api_key", "auth", "unauthorized", "permission", "forbidden"]) {
        return ProviderError::Auth;
    }
    if has(&["rate_limit", "too_many", "concurren"]) {
        return ProviderError::RateLimited { retry_after: None };
    }
    if let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
        if !status.is_success() {
            let body = serde_json::json!({ "error": { "message": message } }).to_string();
            return http::status_error(status, &Default::default(), &body, None);
        }
    }
    let text = if code.is_empty() {
        message
    } else if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {message}")
    };
    if code_lc.starts_with("invalid") {
        ProviderError::Protocol(format!("the service refused the request: {text}"))
    } else {
        ProviderError::Unavailable(format!("the service reported an error: {text}"))
    }
}

/// Base64 as the speech services send it: the standard alphabet, padding optional (some
/// servers leave it off chunks).
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes base64 PCM16 into samples without allocating beyond the chunk it returns: the bytes
/// go through a buffer kept across chunks, and a sample split across two chunks (an odd byte
/// count) is carried over.
#[derive(Debug, Default)]
pub(crate) struct Base64Pcm {
    bytes: Vec<u8>,
    pcm: crate::audio::pcm::Pcm16Decoder,
}

impl Base64Pcm {
    /// The samples `data` completes, in a new `Vec` sized to them.
    pub(crate) fn decode(&mut self, data: &str) -> Result<Vec<f32>, ProviderError> {
        self.bytes.clear();
        BASE64
            .decode_vec(data.trim(), &mut self.bytes)
            .map_err(|e| ProviderError::Protocol(format!("audio is not valid base64: {e}")))?;
        let mut samples = Vec::with_capacity(self.bytes.len() / 2 + 1);
        self.pcm.push(&self.bytes, &mut samples);
        Ok(samples)
    }
}

/// A segment as sent to a service that concatenates what it is given: one trailing space, so
/// the next sentence does not run into this one.
pub(crate) fn spaced(segment: &str) -> String {
    let mut s = String::with_capacity(segment.len() + 1);
    s.push_str(segment.trim());
    s.push(' ');
    s
}

/// What a server message meant, as far as the driver needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Audio (possibly no whole sample yet).
    Audio,
    /// The synthesis is complete.
    Done,
    /// Anything else (alignment, timestamps, acknowledgements).
    Other,
}

/// The messages of one WebSocket speech protocol; [`run_socket`] does the rest.
pub(crate) trait SocketProtocol: Send + 'static {
    /// Provider name for logs.
    fn label(&self) -> &'static str;
    /// The message carrying one segment of text (already trimmed, not empty).
    fn segment(&mut self, text: &str) -> String;
    /// The message saying the text is complete.
    fn finish(&mut self) -> String;
    /// The message asking the service to stop, sent before the socket is closed on cancel.
    fn cancel(&mut self) -> Option<String>;
    /// A message that keeps an idle connection open, sent after [`Timeouts::keep_alive`] of
    /// silence while waiting for text.
    fn keep_alive(&mut self) -> Option<String>;
    /// Reads one server message; the audio it carries goes to `samples` (empty on entry).
    fn receive(&mut self, message: &str, samples: &mut Vec<f32>) -> Result<Reply, ProviderError>;
}

/// How long the driver waits, and how often it keeps an idle connection open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From sending text (a segment, or the end) to the first audio it brings.
    pub first_byte: Duration,
    /// Between two server messages once the text is complete.
    pub idle: Duration,
    /// Silence after which [`SocketProtocol::keep_alive`] is sent while text is awaited;
    /// none: the service needs no keep-alive.
    pub keep_alive: Option<Duration>,
}

/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a synthesis on a socket ended.
enum End {
    /// The service sent its final message.
    Done,
    /// The caller dropped the audio stream.
    Cancelled,
    /// Something went wrong; the caller is told.
    Failed(ProviderError),
}

/// Runs one reply's synthesis on an open socket: sends each segment of `text` as it arrives,
/// then the end; delivers the audio in order through `out`; ends at the service's final
/// message, with the first error, or when `out`'s receiver is dropped (then the service is told
/// to stop where the protocol can, and the socket is closed).
///
/// A deadline runs whenever audio is owed: from a segment sent until audio follows, and from
/// the end of the text until the final message (each message then restarts it). Waiting for
/// the LLM's next sentence is not a stall; a long wait sends the protocol's keep-alive.
pub(crate) async fn run_socket<P: SocketProtocol>(
    socket: WsStream,
    mut text: mpsc::Receiver<String>,
    out: AudioSender,
    mut protocol: P,
    timeouts: Timeouts,
    key: Option<ApiKey>,
) {
    let label = protocol.label();
    let (mut sink, mut stream) = socket.split();
    let mut text_open = true;
    let mut owed: Option<Instant> = None;
    let mut last_sent = Instant::now();
    let mut sent_any = false;
    let end = loop {
        let keep_alive_at = timeouts.keep_alive.map(|k| last_sent + k);
        let outgoing = tokio::select! {
            biased;
            _ = out.closed() => break End::Cancelled,
            _ = sleep_until(owed) => break End::Failed(ProviderError::Timeout),
            segment = text.recv(), if text_open => match segment {
                Some(s) if s.trim().is_empty() => continue,
                Some(s) => {
                    owed.get_or_insert(Instant::now() + timeouts.first_byte);
                    sent_any = true;
                    protocol.segment(s.trim())
                }
                None => {
                    text_open = false;
                    if sent_any {
                        owed.get_or_insert(Instant::now() + timeouts.first_byte);
                    } else {
                        // Nothing to say: the service owes only its final message.
                        owed = Some(Instant::now() + timeouts.idle);
                    }
                    protocol.finish()
                }
            },
            _ = sleep_until(keep_alive_at), if text_open && owed.is_none() => {
                match protocol.keep_alive() {
                    Some(m) => m,
                    None => {
                        last_sent = Instant::now();
                        continue;
                    }
                }
            }
            incoming = stream.next() => {
                let message = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break End::Failed(socket_error(e, key.as_ref())),
                    None => break End::Failed(cut_short()),
                };
                let data = match &message {
                    Message::Text(t) => t.as_str(),
                    Message::Close(frame) => {
                        let e = ws::close_error(frame.as_ref(), key.as_ref());
                        break End::Failed(e.unwrap_or_else(cut_short));
                    }
                    Message::Binary(_) => {
                        break End::Failed(ProviderError::Protocol(
                            "unexpected binary message (audio is expected as JSON)".into(),
                        ))
                    }
                    _ => continue, // ping, pong: tungstenite answers pings itself
                };
                let mut samples = Vec::new();
                let reply = protocol.receive(data, &mut samples);
                if !samples.is_empty() && out.send(Ok(samples)).await.is_err() {
                    break End::Cancelled;
                }
                match reply {
                    Err(e) => break End::Failed(e),
                    Ok(Reply::Done) => {
                        if text_open {
                            tracing::warn!(
                                provider = label,
                                "the service ended the synthesis before the text was complete"
                            );
                        }
                        break End::Done;
                    }
                    Ok(Reply::Audio) => {
                        owed = (!text_open).then(|| Instant::now() + timeouts.idle);
                    }
                    Ok(Reply::Other) => {
                        if !text_open {
                            owed = Some(Instant::now() + timeouts.idle);
                        }
                    }
                }
                continue;
            }
        };
        // A stalled server can stop reading too: the send is bounded like a reply would be.
        match tokio::time::timeout(timeouts.idle, sink.send(Message::text(outgoing))).await {
            Err(_) => break End::Failed(ProviderError::Timeout),
            Ok(Err(e)) => break End::Failed(ws::error(e, key.as_ref())),
            Ok(Ok(())) => last_sent = Instant::now(),
        }
    };
    match end {
        End::Done => {
            tracing::debug!(provider = label, "TTS stream complete");
        }
        End::Cancelled => {
            tracing::debug!(
                provider = label,
                "TTS stream dropped by the caller; cancelling"
            );
            if let Some(cancel) = protocol.cancel() {
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::text(cancel))).await;
            }
        }
        End::Failed(e) => {
            tracing::warn!(provider = label, error = %e, "TTS stream failed");
            let _ = out.send(Err(e)).await;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

/// [`ws::error`], except that a connection dropped without a closing handshake is the service
/// going away (unavailable), not a protocol violation.
fn socket_error(e: tokio_tungstenite::tungstenite::Error, key: Option<&ApiKey>) -> ProviderError {
    use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
    match e {
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ProviderError::Unavailable("the connection was lost (no closing handshake)".into())
        }
        e => ws::error(e, key),
    }
}

fn cut_short() -> ProviderError {
    ProviderError::Unavailable(
        "the service closed the connection before the audio was complete".into(),
    )
}

/// Parses a WebSocket base URL (`ws://` or `wss://`).
pub(crate) fn ws_base_url(base: &str) -> Result<reqwest::Url, TtsSetupError> {
    let url = reqwest::Url::parse(base.trim_end_matches('/'))
        .map_err(|e| TtsSetupError::InvalidBaseUrl(e.to_string()))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(TtsSetupError::InvalidBaseUrl(format!(
            "scheme {:?} is not ws(s)",
            url.scheme()
        )));
    }
    if url.cannot_be_a_base() {
        return Err(TtsSetupError::InvalidBaseUrl("not a base URL".into()));
    }
    Ok(url)
}

/// The key, when one is given and not empty, checked to fit in a header.
pub(crate) fn header_key(key: Option<&ApiKey>) -> Result<Option<ApiKey>, TtsSetupError> {
    match key.filter(|k| !k.is_empty()) {
        None => Ok(None),
        Some(k) => {
            reqwest::header::HeaderValue::from_str(k.expose())
                .map_err(|_| TtsSetupError::InvalidKey)?;
            Ok(Some(k.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_are_classified_and_redacted() {
        let key = ApiKey::new("sk-9");
        let e =
            |status, code: &str, message: &str| service_error(status, code, message, Some(&key));
        assert_eq!(e(None, "invalid_api_key", "bad sk-9"), ProviderError::Auth);
        assert_eq!(e(Some(401), "", "no"), ProviderError::Auth);
        assert_eq!(
            e(None, "too_many_concurrent_requests", ""),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(
            e(Some(429), "", "slow"),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(
            e(Some(500), "", "oops sk-9"),
            ProviderError::Unavailable("HTTP 500: oops ***".into())
        );
        assert_eq!(
            e(Some(400), "model_not_found", "The model is not valid."),
            ProviderError::Protocol("HTTP 400: The model is not valid.".into())
        );
        assert_eq!(
            e(None, "invalid_input_message", "Could not parse"),
            ProviderError::Protocol(
                "the service refused the request: invalid_input_message: Could not parse".into()
            )
        );
        assert_eq!(
            e(None, "quota_exceeded", "sk-9 is out of credits"),
            ProviderError::Unavailable(
                "the service reported an error: quota_exceeded: *** is out of credits".into()
            )
        );
    }

    #[test]
    fn base64_pcm_carries_half_samples_and_tolerates_missing_padding() {
        let mut bytes = Vec::new();
        crate::audio::pcm::encode_pcm16(&[0.5, -0.25, 0.125], &mut bytes);
        let mut whole = Vec::new();
        crate::audio::pcm::decode_pcm16(&bytes, &mut whole);
        let mut d = Base64Pcm::default();
        let a = BASE64.encode(&bytes[..3]); // a sample and a half
        let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes[3..]);
        let mut got = d.decode(&a).unwrap();
        assert_eq!(got.len(), 1);
        got.extend(d.decode(&b).unwrap());
        assert_eq!(got, whole);
        assert!(matches!(
            d.decode("not base64!"),
            Err(ProviderError::Protocol(_))
        ));
    }

    #[test]
    fn segments_get_one_trailing_space() {
        assert_eq!(spaced(" Hello there. "), "Hello there. ");
    }
}
