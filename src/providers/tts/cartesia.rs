//! Cartesia text-to-speech over its TTS WebSocket.
//!
//! One socket per reply: `GET {base_url}/tts/websocket?cartesia_version=…` with the key in the
//! `X-API-Key` header. A reply is one *context*: each sentence is a generation request with
//! `model_id`, `transcript`, `voice: {mode: "id", id}`, `output_format: {container: "raw",
//! encoding: "pcm_s16le", sample_rate}`, the reply's `context_id` and `continue: true`, so
//! the service keeps the prosody across sentences; a request with an empty transcript and
//! `continue: false` ends the context. Every request of a context carries the same fields but
//! the transcript and `continue`, as the service requires. The session sends whole sentences,
//! so `max_buffer_delay_ms` is 0: each is generated as soon as it arrives.
//!
//! The server answers `chunk` messages (`data`: base64 audio), `timestamps` and `flush_done`
//! (ignored), `done` when the context is complete, and `error` (`status_code`, and `error` or
//! `title`/`message`/`error_code` depending on the API version). Dropping the stream sends
//! `{"context_id": …, "cancel": true}` and closes the socket.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{
    header_key, invalid, run_socket, service_error, spaced, ws_base_url, Base64Pcm, Reply,
    SocketProtocol, Timeouts, TtsSetupError, AUDIO_CHANNEL,
};
use crate::providers::http::ApiKey;
use crate::providers::{ws, AudioStream, ProviderError, Tts};

/// Cartesia's own endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "wss://api.cartesia.ai";
/// The default model.
pub const DEFAULT_MODEL: &str = "sonic-3";
/// The API version sent as `cartesia_version`; the message shapes above are this version's.
pub const DEFAULT_API_VERSION: &str = "2025-04-16";
/// The default sample rate.
pub const DEFAULT_SAMPLE_RATE: u32 = 24_000;
/// The rates Cartesia's raw output offers.
pub const SAMPLE_RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];

/// How to reach Cartesia and which voice to speak with.
#[derive(Clone)]
pub struct CartesiaConfig {
    /// The API root for WebSockets, without `/tts/websocket`.
    pub base_url: String,
    /// The voice's ID.
    pub voice_id: String,
    /// The model ID.
    pub model: String,
    /// Sent as `X-API-Key`; required by the service.
    pub api_key: Option<ApiKey>,
    /// The `cartesia_version` (a date, e.g. `2025-04-16`).
    pub api_version: String,
    /// The PCM output rate: one of [`SAMPLE_RATES`].
    pub sample_rate: u32,
    /// The transcript's language (`en`, `de`, …); none: the service's default.
    pub language: Option<String>,
    /// `generation_config.speed` (0.6 to 1.5); none: normal speed.
    pub speed: Option<f64>,
    /// Longest wait for the connection (TCP, TLS and upgrade).
    pub connect_timeout: Duration,
    /// Longest wait from sending text to the first audio it brings.
    pub first_byte_timeout: Duration,
    /// Longest silence between two messages once the text is complete.
    pub idle_timeout: Duration,
}

impl CartesiaConfig {
    /// Cartesia's endpoint with `voice_id`, the default model, version and rate, no key, and
    /// the default timeouts (connect 5 s, first byte 10 s, idle 10 s).
    pub fn new(voice_id: impl Into<String>) -> Self {
        CartesiaConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            voice_id: voice_id.into(),
            model: DEFAULT_MODEL.to_owned(),
            api_key: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            sample_rate: DEFAULT_SAMPLE_RATE,
            language: None,
            speed: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

// Hand-written so the config's shape is visible while the key stays hidden.
impl std::fmt::Debug for CartesiaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CartesiaConfig")
            .field("base_url", &self.base_url)
            .field("voice_id", &self.voice_id)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("api_version", &self.api_version)
            .field("sample_rate", &self.sample_rate)
            .field("language", &self.language)
            .field("speed", &self.speed)
            .finish_non_exhaustive()
    }
}

/// Cartesia speech. Cheap to share: one per configured provider, one socket per reply.
pub struct CartesiaTts {
    url: String,
    key: ApiKey,
    /// The fields every request of a context repeats.
    request: Map<String, Value>,
    sample_rate: u32,
    connect_timeout: Duration,
    timeouts: Timeouts,
}

impl std::fmt::Debug for CartesiaTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CartesiaTts")
            .field("url", &self.url)
            .field("api_key", &self.key)
            .field("sample_rate", &self.sample_rate)
            .finish_non_exhaustive()
    }
}

impl CartesiaTts {
    /// Checks the config and builds the provider.
    pub fn new(config: CartesiaConfig) -> Result<CartesiaTts, TtsSetupError> {
        let voice = config.voice_id.trim();
        if voice.is_empty() {
            return Err(invalid("voice", "a voice ID is required"));
        }
        if config.model.trim().is_empty() {
            return Err(invalid("model", "a model ID is required"));
        }
        if !SAMPLE_RATES.contains(&config.sample_rate) {
            return Err(invalid(
                "sample_rate",
                format!(
                    "sample rate {} is not one of Cartesia's rates {SAMPLE_RATES:?}",
                    config.sample_rate
                ),
            ));
        }
        if let Some(speed) = config.speed.filter(|s| !(0.6..=1.5).contains(s)) {
            return Err(invalid(
                "speed",
                format!("speed must be between 0.6 and 1.5, got {speed}"),
            ));
        }
        let version = config.api_version.trim();
        if version.is_empty() {
            return Err(invalid("api_version", "an API version is required"));
        }
        let mut url = ws_base_url(&config.base_url)?;
        url.path_segments_mut()
            .map_err(|_| TtsSetupError::InvalidBaseUrl("not a base URL".into()))?
            .pop_if_empty()
            .extend(["tts", "websocket"]);
        url.query_pairs_mut()
            .append_pair("cartesia_version", version);
        let key = header_key(config.api_key.as_ref())?.ok_or(TtsSetupError::MissingKey)?;
        let mut request = Map::new();
        request.insert("model_id".into(), json!(config.model.trim()));
        request.insert("voice".into(), json!({"mode": "id", "id": voice}));
        request.insert(
            "output_format".into(),
            json!({"container": "raw", "encoding": "pcm_s16le", "sample_rate": config.sample_rate}),
        );
        if let Some(lang) = config.language.as_deref().filter(|l| !l.trim().is_empty()) {
            request.insert("language".into(), json!(lang.trim()));
        }
        if let Some(speed) = config.speed {
            request.insert("generation_config".into(), json!({ "speed": speed }));
        }
        request.insert("max_buffer_delay_ms".into(), json!(0));
        Ok(CartesiaTts {
            url: url.into(),
            key,
            request,
            sample_rate: config.sample_rate,
            connect_timeout: config.connect_timeout,
            timeouts: Timeouts {
                first_byte: config.first_byte_timeout,
                idle: config.idle_timeout,
                // The protocol has no keep-alive message.
                keep_alive: None,
            },
        })
    }
}

/// Checks `config` as [`CartesiaTts::new`] would, without building anything.
pub fn check(config: &CartesiaConfig) -> Result<(), TtsSetupError> {
    CartesiaTts::new(config.clone()).map(drop)
}

/// A context ID unique to this process and start: the service matches replies by it.
fn context_id() -> String {
    use std::hash::BuildHasher;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
    format!("hark-{salt:016x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[async_trait]
impl Tts for CartesiaTts {
    fn label(&self) -> &str {
        "cartesia"
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Opens the socket (the upgrade carries the key) and closes it unused.
    async fn ping(&self) -> Result<(), ProviderError> {
        let headers = [("X-API-Key", self.key.expose())];
        let mut socket =
            ws::connect(&self.url, &headers, Some(&self.key), self.connect_timeout).await?;
        let _ = socket.close(None).await;
        Ok(())
    }

    /// Opens the socket, so a refused key or an unreachable service is reported here.
    async fn synthesize(&self, text: mpsc::Receiver<String>) -> Result<AudioStream, ProviderError> {
        let headers = [("X-API-Key", self.key.expose())];
        let socket =
            ws::connect(&self.url, &headers, Some(&self.key), self.connect_timeout).await?;
        let context_id = context_id();
        tracing::debug!(provider = "cartesia", context = %context_id, "TTS socket open");
        let mut request = self.request.clone();
        request.insert("context_id".into(), json!(context_id));
        let (tx, rx) = mpsc::channel(AUDIO_CHANNEL);
        let protocol = Contexts {
            request,
            context_id,
            key: self.key.clone(),
            audio: Base64Pcm::default(),
        };
        tokio::spawn(run_socket(
            socket,
            text,
            tx,
            protocol,
            self.timeouts,
            Some(self.key.clone()),
        ));
        Ok(rx)
    }
}

/// One context's messages.
struct Contexts {
    request: Map<String, Value>,
    context_id: String,
    key: ApiKey,
    audio: Base64Pcm,
}

impl Contexts {
    fn request(&mut self, transcript: String, more: bool) -> String {
        self.request
            .insert("transcript".into(), Value::String(transcript));
        self.request.insert("continue".into(), Value::Bool(more));
        serde_json::to_string(&self.request).expect("a JSON map serialises")
    }
}

/// A server message, as far as it is read; `data` is borrowed from the message.
#[derive(Deserialize)]
struct ServerMessage<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default)]
    done: bool,
    #[serde(default, borrow)]
    context_id: Option<Cow<'a, str>>,
    #[serde(default)]
    status_code: Option<f64>,
    /// The error's text (API versions up to 2025).
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
}

impl SocketProtocol for Contexts {
    fn label(&self) -> &'static str {
        "cartesia"
    }

    fn segment(&mut self, text: &str) -> String {
        self.request(spaced(text), true)
    }

    fn finish(&mut self) -> String {
        self.request(String::new(), false)
    }

    fn cancel(&mut self) -> Option<String> {
        Some(json!({ "context_id": self.context_id, "cancel": true }).to_string())
    }

    fn keep_alive(&mut self) -> Option<String> {
        None
    }

    fn receive(&mut self, message: &str, samples: &mut Vec<f32>) -> Result<Reply, ProviderError> {
        let m: ServerMessage = serde_json::from_str(message)
            .map_err(|e| ProviderError::Protocol(format!("malformed message: {e}")))?;
        if let Some(id) = m.context_id.as_deref().filter(|id| *id != self.context_id) {
            // Another context's (a cancelled one's late message): not this reply's audio.
            tracing::debug!(provider = "cartesia", context = %id, "ignoring a message for another context");
            return Ok(Reply::Other);
        }
        if m.kind == "error" {
            let text = match (&m.title, &m.message, &m.error) {
                (Some(t), Some(msg), _) => format!("{t}: {msg}"),
                (_, Some(msg), _) | (Some(msg), None, _) => msg.clone(),
                (None, None, Some(e)) => e.clone(),
                (None, None, None) => String::new(),
            };
            let status = m.status_code.map(|s| s as u16);
            let code = m.error_code.as_deref().unwrap_or("");
            return Err(service_error(status, code, &text, Some(&self.key)));
        }
        let mut reply = Reply::Other;
        if m.kind == "chunk" {
            if let Some(data) = m.data.filter(|d| !d.is_empty()) {
                *samples = self.audio.decode(&data)?;
            }
            reply = Reply::Audio;
        }
        if m.kind == "done" || m.done {
            reply = Reply::Done;
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CartesiaConfig {
        CartesiaConfig {
            api_key: Some(ApiKey::new("k")),
            ..CartesiaConfig::new("a0e99841-438c-4a64-b679-ae501e7d6091")
        }
    }

    #[test]
    fn the_url_carries_the_version_and_never_the_key() {
        let t = CartesiaTts::new(config()).unwrap();
        assert_eq!(
            t.url,
            "wss://api.cartesia.ai/tts/websocket?cartesia_version=2025-04-16"
        );
    }

    #[test]
    fn requests_repeat_every_field_but_transcript_and_continue() {
        let t = CartesiaTts::new(CartesiaConfig {
            speed: Some(1.2),
            language: Some("en".into()),
            ..config()
        })
        .unwrap();
        let mut c = Contexts {
            request: t.request.clone(),
            context_id: "ctx".into(),
            key: ApiKey::new("k"),
            audio: Base64Pcm::default(),
        };
        c.request.insert("context_id".into(), json!("ctx"));
        let first: Value = serde_json::from_str(&c.segment("Hello.")).unwrap();
        let last: Value = serde_json::from_str(&c.finish()).unwrap();
        assert_eq!(
            first,
            json!({"model_id": "sonic-3", "transcript": "Hello. ", "continue": true,
                   "voice": {"mode": "id", "id": "a0e99841-438c-4a64-b679-ae501e7d6091"},
                   "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
                   "language": "en", "generation_config": {"speed": 1.2},
                   "max_buffer_delay_ms": 0, "context_id": "ctx"})
        );
        let (mut a, mut b) = (first, last.clone());
        for v in [&mut a, &mut b] {
            let o = v.as_object_mut().unwrap();
            o.remove("transcript");
            o.remove("continue");
        }
        assert_eq!(a, b);
        assert_eq!(
            (&last["transcript"], &last["continue"]),
            (&json!(""), &json!(false))
        );
    }

    #[test]
    fn context_ids_differ() {
        assert_ne!(context_id(), context_id());
    }
}
