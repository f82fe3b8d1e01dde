//! Deepgram live streaming speech-to-text (`wss://api.deepgram.com/v1/listen`).
//!
//! The options go in the query string (`model`, `language`, `encoding=linear16`,
//! `sample_rate`, `channels=1`, `interim_results=true`, `punctuate`, `smart_format`,
//! `endpointing`), the key in `Authorization: Token …`. Audio goes as binary messages of raw
//! PCM16 (40 ms each; Deepgram asks for 20 to 250 ms). Text messages control the stream:
//! `{"type":"KeepAlive"}` after 5 s without audio (Deepgram closes a socket that hears nothing
//! for 10 s with `NET-0001`), `{"type":"Finalize"}` when local VAD says the user stopped
//! speaking (Deepgram then finalises what it holds at once), `{"type":"CloseStream"}` when the
//! session's input is dropped (Deepgram answers the rest, sends `Metadata` and closes).
//!
//! `Results` messages carry `channel.alternatives[0].transcript` and `confidence`: with
//! `is_final` false they are [`SttEvent::Interim`], with `is_final` true a
//! [`SttEvent::Final`] (`speech_final` marks an endpoint, which changes nothing here: the
//! segments are already final). Empty transcripts are no event. Deepgram's Nova models have no
//! early-final hypothesis, so [`SttEvent::Preflight`] is never sent. `Metadata`,
//! `SpeechStarted` and `UtteranceEnd` are logged. Errors arrive as close frames with a code and
//! a `DATA-`/`NET-` reason: 1008 `DATA-0000` (audio that cannot be decoded) is a protocol error
//! here, not the key (a refused key fails the handshake with 401), and 1011 `NET-0000`/
//! `NET-0001` (timeouts on Deepgram's side) mean the service is unavailable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    auth_header, open_stream, parse_message, parse_url, StreamProtocol, StreamSpec, SttSetupError,
};
use crate::providers::http::{ApiKey, RetryPolicy};
use crate::providers::ws::{self, CloseCode, CloseFrame};
use crate::providers::{ProviderError, Stt, SttEvent, SttSession};

/// Deepgram's live streaming endpoint.
pub const DEFAULT_URL: &str = "wss://api.deepgram.com/v1/listen";
/// Deepgram's current general model.
pub const DEFAULT_MODEL: &str = "nova-3";

const LABEL: &str = "deepgram";

/// How to reach Deepgram and what to ask it for.
#[derive(Debug, Clone)]
pub struct DeepgramConfig {
    /// The streaming endpoint, without query (a self-hosted Deepgram's `ws://…/v1/listen`).
    pub url: String,
    /// The model (`nova-3`, `nova-2-phonecall`, …).
    pub model: String,
    /// BCP-47 language (`en`, `en-US`, `multi`); none: the model's default.
    pub language: Option<String>,
    /// Sent as `Authorization: Token …` when set and not empty. Never shown.
    pub api_key: Option<ApiKey>,
    /// The rate of the audio sent (and asked of the session).
    pub sample_rate: u32,
    /// Silence after which Deepgram finalises a segment by itself; none: `endpointing=false`
    /// (segments end on `Finalize` or when Deepgram's buffer is full).
    pub endpointing: Option<Duration>,
    /// Longest wait for the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Longest silence from Deepgram (pongs count) before the stream is given up.
    pub idle_timeout: Duration,
    /// Retries of a refused (429, 5xx) or failed handshake.
    pub retry: RetryPolicy,
}

impl DeepgramConfig {
    /// Deepgram's endpoint with `nova-3` at 16 kHz, endpointing at 300 ms, no key, and the
    /// default timeouts (connect 5 s, idle 10 s) and retries (3 attempts).
    pub fn new() -> Self {
        DeepgramConfig {
            url: DEFAULT_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            language: None,
            api_key: None,
            sample_rate: 16_000,
            endpointing: Some(Duration::from_millis(300)),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl Default for DeepgramConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Deepgram live streaming. Cheap to share: one per configured provider, a stream per session.
pub struct DeepgramStt {
    spec: StreamSpec,
}

// Hand-written: the `Authorization` value holds the key.
impl std::fmt::Debug for DeepgramStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramStt")
            .field("url", &self.spec.url)
            .field("api_key", &self.spec.key)
            .field("rate", &self.spec.rate)
            .finish_non_exhaustive()
    }
}

impl DeepgramStt {
    /// Checks the config and builds the provider.
    pub fn new(config: DeepgramConfig) -> Result<DeepgramStt, SttSetupError> {
        let url = listen_url(&config)?;
        let auth = auth_header(config.api_key.as_ref(), "Token ")?;
        Ok(DeepgramStt {
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
        })
    }

    /// Audio dropped so far, over all this provider's streams, because Deepgram was behind.
    pub fn dropped_audio(&self) -> Duration {
        self.spec.dropped_audio()
    }
}

/// Checks the URL and key of `config` without building anything, for config validation.
pub fn check(config: &DeepgramConfig) -> Result<(), SttSetupError> {
    listen_url(config)?;
    auth_header(config.api_key.as_ref(), "Token ").map(drop)
}

/// The endpoint with the stream's options as its query.
fn listen_url(config: &DeepgramConfig) -> Result<reqwest::Url, SttSetupError> {
    let mut url = parse_url(&config.url, &["ws", "wss"])?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("model", &config.model);
        if let Some(language) = &config.language {
            q.append_pair("language", language);
        }
        q.append_pair("encoding", "linear16");
        q.append_pair("sample_rate", &config.sample_rate.to_string());
        q.append_pair("channels", "1");
        q.append_pair("interim_results", "true");
        q.append_pair("punctuate", "true");
        q.append_pair("smart_format", "true");
        match config.endpointing {
            Some(d) => q.append_pair("endpointing", &d.as_millis().to_string()),
            None => q.append_pair("endpointing", "false"),
        };
    }
    Ok(url)
}

#[async_trait]
impl Stt for DeepgramStt {
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
        open_stream(
            self.spec.clone(),
            Protocol {
                key: self.spec.key.clone(),
            },
        )
        .await
    }
}

/// Deepgram's messages and close codes.
struct Protocol {
    key: Option<ApiKey>,
}

/// A message from Deepgram; only the fields hark reads.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum Incoming {
    Results {
        channel: Channel,
        #[serde(default)]
        is_final: bool,
        #[serde(default)]
        speech_final: bool,
        #[serde(default)]
        from_finalize: bool,
    },
    Metadata {
        #[serde(default)]
        request_id: Option<String>,
        #[serde(default)]
        duration: Option<f64>,
    },
    SpeechStarted {},
    UtteranceEnd {},
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Channel {
    alternatives: Vec<Alternative>,
}

#[derive(Deserialize)]
struct Alternative {
    transcript: String,
    #[serde(default)]
    confidence: Option<f32>,
}

impl StreamProtocol for Protocol {
    const KEEP_ALIVE: &'static str = r#"{"type":"KeepAlive"}"#;
    const FLUSH: &'static str = r#"{"type":"Finalize"}"#;
    const CLOSE: &'static str = r#"{"type":"CloseStream"}"#;
    const FRAME: Duration = Duration::from_millis(40);

    fn on_text(&mut self, text: &str, out: &mut Vec<SttEvent>) -> Result<(), ProviderError> {
        let Some(message) = parse_message::<Incoming>(LABEL, text) else {
            return Ok(());
        };
        match message {
            Incoming::Results {
                channel,
                is_final,
                speech_final,
                from_finalize,
            } => {
                let Some(best) = channel.alternatives.into_iter().next() else {
                    return Ok(());
                };
                let transcript = best.transcript.trim();
                if transcript.is_empty() {
                    return Ok(());
                }
                tracing::trace!(is_final, speech_final, from_finalize, "deepgram result");
                out.push(if is_final {
                    SttEvent::Final {
                        text: transcript.to_owned(),
                        confidence: best.confidence,
                    }
                } else {
                    SttEvent::Interim(transcript.to_owned())
                });
            }
            Incoming::Metadata {
                request_id,
                duration,
            } => {
                tracing::debug!(provider = LABEL, ?request_id, ?duration, "stream metadata");
            }
            Incoming::SpeechStarted {} => tracing::trace!(provider = LABEL, "speech started"),
            Incoming::UtteranceEnd {} => tracing::trace!(provider = LABEL, "utterance end"),
            Incoming::Other => {
                tracing::debug!(provider = LABEL, "unknown message type; skipped");
            }
        }
        Ok(())
    }

    fn close_error(&self, frame: Option<&CloseFrame>) -> Option<ProviderError> {
        let f = frame?;
        if f.code == CloseCode::Policy {
            // DATA-0000: the audio could not be decoded. The key is checked at the handshake.
            let reason = match &self.key {
                Some(k) => k.redact(f.reason.as_str()),
                None => f.reason.to_string(),
            };
            return Some(ProviderError::Protocol(format!(
                "closed by the service (1008): {}",
                crate::providers::http::shorten(&reason)
            )));
        }
        ws::close_error(Some(f), self.key.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &str) -> Vec<SttEvent> {
        let mut out = Vec::new();
        Protocol { key: None }.on_text(text, &mut out).unwrap();
        out
    }

    #[test]
    fn the_query_carries_the_options() {
        let url = listen_url(&DeepgramConfig {
            language: Some("en-US".into()),
            ..DeepgramConfig::new()
        })
        .unwrap();
        assert_eq!(
            url.as_str(),
            "wss://api.deepgram.com/v1/listen?model=nova-3&language=en-US&encoding=linear16\
             &sample_rate=16000&channels=1&interim_results=true&punctuate=true\
             &smart_format=true&endpointing=300"
        );
        let url = listen_url(&DeepgramConfig {
            endpointing: None,
            ..DeepgramConfig::new()
        })
        .unwrap();
        assert!(url.as_str().ends_with("&endpointing=false"), "{url}");
    }

    #[test]
    fn results_map_to_interim_and_final_and_empty_ones_to_nothing() {
        let r = |t: &str, fin: bool| {
            serde_json::json!({"type": "Results", "channel_index": [0, 1], "duration": 1.0,
                "start": 0.0, "is_final": fin, "speech_final": fin,
                "channel": {"alternatives": [{"transcript": t, "confidence": 0.9, "words": []}]}})
            .to_string()
        };
        assert_eq!(
            feed(&r("hello", false)),
            [SttEvent::Interim("hello".into())]
        );
        assert_eq!(
            feed(&r("hello there", true)),
            [SttEvent::Final {
                text: "hello there".into(),
                confidence: Some(0.9)
            }]
        );
        assert!(feed(&r("", true)).is_empty());
        assert!(feed(r#"{"type":"Results","channel":{"alternatives":[]}}"#).is_empty());
        assert!(feed(r#"{"type":"Metadata","request_id":"x","duration":1.5}"#).is_empty());
        assert!(feed(r#"{"type":"SomethingNew","x":1}"#).is_empty());
        assert!(feed("not json").is_empty(), "skipped, not fatal");
    }

    #[test]
    fn close_codes_follow_deepgrams_meaning() {
        let p = Protocol {
            key: Some(ApiKey::new("dg-k")),
        };
        let frame = |code: u16, reason: &'static str| CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        assert_eq!(p.close_error(Some(&frame(1000, ""))), None);
        assert_eq!(
            p.close_error(Some(&frame(1008, "DATA-0000 dg-k"))),
            Some(ProviderError::Protocol(
                "closed by the service (1008): DATA-0000 ***".into()
            ))
        );
        assert_eq!(
            p.close_error(Some(&frame(1011, "NET-0001"))),
            Some(ProviderError::Unavailable(
                "closed by the service (1011): NET-0001".into()
            ))
        );
    }
}
