//! AssemblyAI Universal-Streaming v3 (`wss://streaming.assemblyai.com/v3/ws`).
//!
//! The options go in the query string (`sample_rate`, `encoding=pcm_s16le`, `format_turns`,
//! `speech_model`), the key in `Authorization: <key>`. Audio goes as binary messages of raw
//! PCM16, 50 ms each (AssemblyAI accepts 50 to 1000 ms per message and closes the session with
//! 3007 otherwise; a partial frame at the end of speech is padded with silence). Text messages
//! control the stream: `{"type":"ForceEndpoint"}` when local VAD says the user stopped
//! speaking (the current turn ends at once), `{"type":"KeepAlive"}` after 5 s without audio,
//! `{"type":"Terminate"}` when the session's input is dropped (AssemblyAI answers the turns in
//! flight, sends `Termination` and closes with 1000).
//!
//! AssemblyAI answers with `Begin`, then `Turn` messages: `transcript` is the turn so far,
//! `end_of_turn` says the turn is over, `turn_is_formatted` whether the text is punctuated and
//! cased (with `format_turns`, an ended turn comes twice: raw, then formatted). A turn in
//! progress is an [`SttEvent::Interim`]; an ended turn (its formatted version when formatting
//! is on) is an [`SttEvent::Final`] with the mean of its words' confidences. While a turn goes
//! on, a non-empty `utterance` marks a pause at which AssemblyAI considers the words so far
//! final, meant for starting the LLM early: that is an [`SttEvent::Preflight`] with the turn's
//! transcript, sent only when formatting is off (a formatted final never equals the raw
//! preflight, so the early answer would always be thrown away).
//!
//! Errors: a session refused after the upgrade gets an `Error` message (`error_code`, `error`)
//! and a close with the same code: 1008 (unauthorized) is [`ProviderError::Auth`], 3009 (too
//! many concurrent sessions) [`ProviderError::RateLimited`], 3005 (server error) and 3008
//! (session expired) [`ProviderError::Unavailable`], 3006 (invalid message) and 3007 (audio
//! too short, too long or too fast) [`ProviderError::Protocol`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    auth_header, open_stream, parse_message, parse_url, StreamProtocol, StreamSpec, SttSetupError,
};
use crate::providers::http::{shorten, ApiKey, RetryPolicy};
use crate::providers::ws::{self, CloseFrame};
use crate::providers::{ProviderError, Stt, SttEvent, SttSession};

/// AssemblyAI's streaming endpoint (`wss://streaming.eu.assemblyai.com/v3/ws` in the EU).
pub const DEFAULT_URL: &str = "wss://streaming.assemblyai.com/v3/ws";
/// The English Universal-Streaming model (`universal-streaming-multilingual` for others).
pub const DEFAULT_MODEL: &str = "universal-streaming-english";

const LABEL: &str = "assemblyai";

/// How to reach AssemblyAI and what to ask it for.
#[derive(Debug, Clone)]
pub struct AssemblyAiConfig {
    /// The streaming endpoint, without query.
    pub url: String,
    /// The `speech_model`.
    pub model: String,
    /// Sent as `Authorization: <key>` when set and not empty. Never shown.
    pub api_key: Option<ApiKey>,
    /// The rate of the audio sent (and asked of the session).
    pub sample_rate: u32,
    /// Ask for punctuated, cased finals (`format_turns`); off gives earlier finals and
    /// preflight transcripts.
    pub format_turns: bool,
    /// Longest wait for the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Longest silence from AssemblyAI (pongs count) before the stream is given up.
    pub idle_timeout: Duration,
    /// Retries of a refused (429, 5xx) or failed handshake.
    pub retry: RetryPolicy,
}

impl AssemblyAiConfig {
    /// AssemblyAI's endpoint with the English model at 16 kHz, formatted turns, no key, and
    /// the default timeouts (connect 5 s, idle 10 s) and retries (3 attempts).
    pub fn new() -> Self {
        AssemblyAiConfig {
            url: DEFAULT_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            api_key: None,
            sample_rate: 16_000,
            format_turns: true,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl Default for AssemblyAiConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// AssemblyAI Universal-Streaming. One per configured provider, a stream per session.
pub struct AssemblyAiStt {
    spec: StreamSpec,
    format_turns: bool,
}

// Hand-written: the `Authorization` value is the key.
impl std::fmt::Debug for AssemblyAiStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssemblyAiStt")
            .field("url", &self.spec.url)
            .field("api_key", &self.spec.key)
            .field("rate", &self.spec.rate)
            .finish_non_exhaustive()
    }
}

impl AssemblyAiStt {
    /// Checks the config and builds the provider.
    pub fn new(config: AssemblyAiConfig) -> Result<AssemblyAiStt, SttSetupError> {
        let url = stream_url(&config)?;
        let auth = auth_header(config.api_key.as_ref(), "")?;
        Ok(AssemblyAiStt {
            spec: StreamSpec {
                label: LABEL,
                url: url.into(),
                auth,
                key: config.api_key.filter(|k| !k.is_empty()),
                rate: config.sample_rate,
                connect_timeout: config.connect_timeout,
                idle_timeout: config.idle_timeout,
                retry: config.retry,
                dropped: Arc::default(),
            },
            format_turns: config.format_turns,
        })
    }

    /// Audio dropped so far, over all this provider's streams, because AssemblyAI was behind.
    pub fn dropped_audio(&self) -> Duration {
        self.spec.dropped_audio()
    }
}

/// Checks the URL and key of `config` without building anything, for config validation.
pub fn check(config: &AssemblyAiConfig) -> Result<(), SttSetupError> {
    stream_url(config)?;
    auth_header(config.api_key.as_ref(), "").map(drop)
}

fn stream_url(config: &AssemblyAiConfig) -> Result<reqwest::Url, SttSetupError> {
    let mut url = parse_url(&config.url, &["ws", "wss"])?;
    url.query_pairs_mut()
        .append_pair("sample_rate", &config.sample_rate.to_string())
        .append_pair("encoding", "pcm_s16le")
        .append_pair(
            "format_turns",
            if config.format_turns { "true" } else { "false" },
        )
        .append_pair("speech_model", &config.model);
    Ok(url)
}

#[async_trait]
impl Stt for AssemblyAiStt {
    fn label(&self) -> &str {
        LABEL
    }

    fn sample_rate(&self) -> u32 {
        self.spec.rate
    }

    /// Opens a stream (the key is checked at the upgrade) and closes it unused.
    async fn ping(&self) -> Result<(), ProviderError> {
        self.connect().await.map(drop)
    }

    async fn connect(&self) -> Result<SttSession, ProviderError> {
        let protocol = Protocol {
            key: self.spec.key.clone(),
            format_turns: self.format_turns,
            last_preflight: None,
        };
        open_stream(self.spec.clone(), protocol).await
    }
}

/// AssemblyAI's messages and close codes.
struct Protocol {
    key: Option<ApiKey>,
    format_turns: bool,
    /// The turn whose preflight was sent, so an utterance is offered once.
    last_preflight: Option<(u64, String)>,
}

/// A message from AssemblyAI; only the fields hark reads.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum Incoming {
    Begin {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        expires_at: Option<u64>,
    },
    Turn(Turn),
    Termination {
        #[serde(default)]
        audio_duration_seconds: Option<f64>,
    },
    Error {
        error_code: u16,
        #[serde(default)]
        error: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Turn {
    #[serde(default)]
    turn_order: u64,
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    end_of_turn: bool,
    #[serde(default)]
    turn_is_formatted: bool,
    #[serde(default)]
    utterance: String,
    #[serde(default)]
    words: Vec<Word>,
}

#[derive(Deserialize)]
struct Word {
    #[serde(default)]
    confidence: Option<f32>,
}

impl Protocol {
    fn on_turn(&mut self, turn: Turn, out: &mut Vec<SttEvent>) {
        let text = turn.transcript.trim();
        if text.is_empty() {
            return;
        }
        if turn.end_of_turn {
            if self.format_turns && !turn.turn_is_formatted {
                return; // the formatted version follows
            }
            let (sum, n) = turn
                .words
                .iter()
                .filter_map(|w| w.confidence)
                .fold((0.0f64, 0usize), |(s, n), c| (s + c as f64, n + 1));
            let confidence = (n > 0).then(|| (sum / n as f64) as f32);
            out.push(SttEvent::Final {
                text: text.to_owned(),
                confidence,
            });
            return;
        }
        let pause = !turn.utterance.trim().is_empty();
        let offered = self
            .last_preflight
            .as_ref()
            .is_some_and(|(order, t)| *order == turn.turn_order && t == text);
        if pause && !self.format_turns && !offered {
            self.last_preflight = Some((turn.turn_order, text.to_owned()));
            out.push(SttEvent::Preflight(text.to_owned()));
        } else {
            out.push(SttEvent::Interim(text.to_owned()));
        }
    }

    /// The error an AssemblyAI error code means, with its message (redacted, shortened).
    fn code_error(&self, code: u16, message: &str) -> Option<ProviderError> {
        let message = match &self.key {
            Some(k) => k.redact(message),
            None => message.to_owned(),
        };
        let message = shorten(&message);
        let described = || format!("AssemblyAI error {code}: {message}");
        Some(match code {
            1000 | 1001 => return None,
            // Older sessions said "too many concurrent sessions" with 1008 too.
            1008 if message.contains("concurrent") => {
                ProviderError::RateLimited { retry_after: None }
            }
            1008 => ProviderError::Auth,
            3009 => ProviderError::RateLimited { retry_after: None },
            3005 | 3008 | 1011..=1013 => ProviderError::Unavailable(described()),
            _ => ProviderError::Protocol(described()),
        })
    }
}

impl StreamProtocol for Protocol {
    const KEEP_ALIVE: &'static str = r#"{"type":"KeepAlive"}"#;
    const FLUSH: &'static str = r#"{"type":"ForceEndpoint"}"#;
    const CLOSE: &'static str = r#"{"type":"Terminate"}"#;
    const FRAME: Duration = Duration::from_millis(50);

    fn on_text(&mut self, text: &str, out: &mut Vec<SttEvent>) -> Result<(), ProviderError> {
        let Some(message) = parse_message::<Incoming>(LABEL, text) else {
            return Ok(());
        };
        match message {
            Incoming::Begin { id, expires_at } => {
                tracing::debug!(provider = LABEL, ?id, ?expires_at, "session began");
            }
            Incoming::Turn(turn) => self.on_turn(turn, out),
            Incoming::Termination {
                audio_duration_seconds,
            } => {
                tracing::debug!(
                    provider = LABEL,
                    ?audio_duration_seconds,
                    "session terminated"
                );
            }
            Incoming::Error { error_code, error } => {
                if let Some(e) = self.code_error(error_code, &error) {
                    return Err(e);
                }
            }
            Incoming::Other => {
                tracing::debug!(provider = LABEL, "unknown message type; skipped");
            }
        }
        Ok(())
    }

    fn close_error(&self, frame: Option<&CloseFrame>) -> Option<ProviderError> {
        let f = frame?;
        match u16::from(f.code) {
            1008 | 3000..=3999 => self.code_error(u16::from(f.code), f.reason.as_str()),
            _ => ws::close_error(Some(f), self.key.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn protocol(format_turns: bool) -> Protocol {
        Protocol {
            key: Some(ApiKey::new("aai-k")),
            format_turns,
            last_preflight: None,
        }
    }

    fn turn(order: u64, text: &str, end: bool, formatted: bool, utterance: &str) -> String {
        json!({"type": "Turn", "turn_order": order, "turn_is_formatted": formatted,
               "end_of_turn": end, "transcript": text, "end_of_turn_confidence": 0.5,
               "utterance": utterance,
               "words": [{"start": 0, "end": 10, "text": "x", "confidence": 0.8, "word_is_final": true},
                         {"start": 10, "end": 20, "text": "y", "confidence": 0.6, "word_is_final": true}]})
        .to_string()
    }

    fn feed(p: &mut Protocol, text: &str) -> Vec<SttEvent> {
        let mut out = Vec::new();
        p.on_text(text, &mut out).unwrap();
        out
    }

    #[test]
    fn the_query_carries_the_options() {
        let url = stream_url(&AssemblyAiConfig::new()).unwrap();
        assert_eq!(
            url.as_str(),
            "wss://streaming.assemblyai.com/v3/ws?sample_rate=16000&encoding=pcm_s16le\
             &format_turns=true&speech_model=universal-streaming-english"
        );
    }

    #[test]
    fn formatted_turns_give_interims_and_one_formatted_final() {
        let mut p = protocol(true);
        assert!(feed(&mut p, &turn(0, "", false, false, "")).is_empty());
        assert_eq!(
            feed(&mut p, &turn(0, "hi my name", false, false, "")),
            [SttEvent::Interim("hi my name".into())]
        );
        // A pause: no preflight while formatting is on.
        assert_eq!(
            feed(
                &mut p,
                &turn(
                    0,
                    "hi my name is sonny",
                    false,
                    false,
                    "hi my name is sonny"
                )
            ),
            [SttEvent::Interim("hi my name is sonny".into())]
        );
        assert!(feed(&mut p, &turn(0, "hi my name is sonny", true, false, "")).is_empty());
        let out = feed(&mut p, &turn(0, "Hi, my name is Sonny.", true, true, ""));
        let [SttEvent::Final { text, confidence }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(text, "Hi, my name is Sonny.");
        assert!((confidence.unwrap() - 0.7).abs() < 1e-6);
    }

    #[test]
    fn raw_turns_offer_a_preflight_at_a_pause_once() {
        let mut p = protocol(false);
        let pause = turn(3, "book a room", false, false, "book a room");
        assert_eq!(
            feed(&mut p, &pause),
            [SttEvent::Preflight("book a room".into())]
        );
        assert_eq!(
            feed(&mut p, &pause),
            [SttEvent::Interim("book a room".into())]
        );
        assert!(matches!(
            &feed(&mut p, &turn(3, "book a room", true, false, "book a room"))[..],
            [SttEvent::Final { text, .. }] if text == "book a room"
        ));
    }

    #[test]
    fn error_codes_map_to_provider_errors_without_the_key() {
        let p = protocol(true);
        let err = |code, m: &str| p.code_error(code, m).unwrap();
        assert_eq!(
            err(1008, "Unauthorized Connection: bad key aai-k"),
            ProviderError::Auth
        );
        assert_eq!(
            err(
                3009,
                "Unauthorized Connection: Too many concurrent sessions"
            ),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(
            err(3005, "Session Cancelled: An error occurred"),
            ProviderError::Unavailable(
                "AssemblyAI error 3005: Session Cancelled: An error occurred".into()
            )
        );
        assert_eq!(
            err(3007, "Input duration violation: 20 ms. Expected between 50 and 1000 ms"),
            ProviderError::Protocol(
                "AssemblyAI error 3007: Input duration violation: 20 ms. Expected between 50 and 1000 ms"
                    .into()
            )
        );
        let mut p = protocol(true);
        let mut out = Vec::new();
        let e = p
            .on_text(
                r#"{"type":"Error","error_code":3006,"error":"Invalid JSON: aai-k"}"#,
                &mut out,
            )
            .unwrap_err();
        assert_eq!(
            e,
            ProviderError::Protocol("AssemblyAI error 3006: Invalid JSON: ***".into())
        );
        let frame = CloseFrame {
            code: 3008.into(),
            reason: "Session Expired: Maximum session duration exceeded".into(),
        };
        assert!(matches!(
            p.close_error(Some(&frame)),
            Some(ProviderError::Unavailable(_))
        ));
    }
}
