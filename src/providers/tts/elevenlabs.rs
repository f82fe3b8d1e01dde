//! ElevenLabs text-to-speech over the stream-input WebSocket.
//!
//! One socket per reply: `GET {base_url}/text-to-speech/{voice_id}/stream-input?model_id=…&
//! output_format=pcm_{rate}` with the key in the `xi-api-key` header. The first message is a
//! single space with the optional `voice_settings` and `generation_config`; then each sentence
//! is sent as `{"text": "<sentence> ", "flush": true}`, and `{"text": ""}` ends the input.
//! The session hands over whole sentences, so each is flushed: generated as soon as it is
//! complete instead of waiting for the service's buffer schedule (120 characters by default)
//! to fill. The server answers `{"audio": "<base64 PCM16>", "normalizedAlignment": …,
//! "alignment": …}` messages and finally `{"isFinal": true}`; errors come as `{"message": …,
//! "error": "<code>", "code": 1008}` and a close frame.
//!
//! The service closes a socket that gets no text for 20 seconds; while the LLM is slow (a tool
//! call), a single space is sent every [`KEEP_ALIVE`] to keep it open, as the service
//! documents. The protocol has no cancel message: dropping the stream closes the socket.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{
    header_key, invalid, run_socket, service_error, spaced, ws_base_url, Base64Pcm, Reply,
    SocketProtocol, Timeouts, TtsSetupError, AUDIO_CHANNEL,
};
use crate::providers::http::{self, ApiKey};
use crate::providers::{ws, AudioStream, ProviderError, Tts};

/// ElevenLabs' own endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "wss://api.elevenlabs.io/v1";
/// The default model: ElevenLabs' low-latency model for real-time use.
pub const DEFAULT_MODEL: &str = "eleven_flash_v2_5";
/// The default sample rate (`output_format = "pcm_24000"`).
pub const DEFAULT_SAMPLE_RATE: u32 = 24_000;
/// The rates of ElevenLabs' `pcm_*` output formats.
pub const SAMPLE_RATES: [u32; 7] = [8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];
/// Silence after which a keep-alive (a single space) is sent; the service closes idle sockets
/// after 20 seconds.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How to reach ElevenLabs and which voice to speak with.
#[derive(Clone)]
pub struct ElevenLabsConfig {
    /// The API root for WebSockets, without `/text-to-speech/…`.
    pub base_url: String,
    /// The voice's ID (from the voice library or a cloned voice).
    pub voice_id: String,
    /// The model ID.
    pub model: String,
    /// Sent as `xi-api-key`; required by the service.
    pub api_key: Option<ApiKey>,
    /// The PCM output rate: one of [`SAMPLE_RATES`].
    pub sample_rate: u32,
    /// ISO 639-1 language to enforce (`language_code`); none: the model decides.
    pub language: Option<String>,
    /// `voice_settings.stability` (0 to 1); none: the voice's stored setting, unless another
    /// voice setting is given (the service then needs both, and gets its default 0.5).
    pub stability: Option<f64>,
    /// `voice_settings.similarity_boost` (0 to 1); as `stability`, default 0.75.
    pub similarity_boost: Option<f64>,
    /// `voice_settings.speed` (0.7 to 1.2); none: normal speed.
    pub speed: Option<f64>,
    /// `generation_config.chunk_length_schedule` (each 50 to 500 characters); none: the
    /// service's. Matters only within long sentences, as each sentence is flushed.
    pub chunk_length_schedule: Option<Vec<u32>>,
    /// Longest wait for the connection (TCP, TLS and upgrade).
    pub connect_timeout: Duration,
    /// Longest wait from sending text to the first audio it brings.
    pub first_byte_timeout: Duration,
    /// Longest silence between two messages once the text is complete.
    pub idle_timeout: Duration,
}

impl ElevenLabsConfig {
    /// ElevenLabs' endpoint with `voice_id`, the default model and rate, no key, and the
    /// default timeouts (connect 5 s, first byte 10 s, idle 10 s).
    pub fn new(voice_id: impl Into<String>) -> Self {
        ElevenLabsConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            voice_id: voice_id.into(),
            model: DEFAULT_MODEL.to_owned(),
            api_key: None,
            sample_rate: DEFAULT_SAMPLE_RATE,
            language: None,
            stability: None,
            similarity_boost: None,
            speed: None,
            chunk_length_schedule: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

// Hand-written so the config's shape is visible while the key stays hidden.
impl std::fmt::Debug for ElevenLabsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsConfig")
            .field("base_url", &self.base_url)
            .field("voice_id", &self.voice_id)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("sample_rate", &self.sample_rate)
            .field("language", &self.language)
            .field("stability", &self.stability)
            .field("similarity_boost", &self.similarity_boost)
            .field("speed", &self.speed)
            .field("chunk_length_schedule", &self.chunk_length_schedule)
            .finish_non_exhaustive()
    }
}

/// ElevenLabs speech. Cheap to share: one per configured provider, one socket per reply.
pub struct ElevenLabsTts {
    url: String,
    /// `GET {base}/voices/{voice_id}` over HTTP(S): what `ping` asks.
    voice_url: reqwest::Url,
    key: ApiKey,
    first_message: String,
    sample_rate: u32,
    connect_timeout: Duration,
    timeouts: Timeouts,
}

impl std::fmt::Debug for ElevenLabsTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsTts")
            .field("url", &self.url)
            .field("api_key", &self.key)
            .field("sample_rate", &self.sample_rate)
            .finish_non_exhaustive()
    }
}

impl ElevenLabsTts {
    /// Checks the config and builds the provider.
    pub fn new(config: ElevenLabsConfig) -> Result<ElevenLabsTts, TtsSetupError> {
        let url = stream_url(&config)?;
        let key = header_key(config.api_key.as_ref())?.ok_or(TtsSetupError::MissingKey)?;
        Ok(ElevenLabsTts {
            url,
            voice_url: voice_url(&config)?,
            key,
            first_message: first_message(&config).to_string(),
            sample_rate: config.sample_rate,
            connect_timeout: config.connect_timeout,
            timeouts: Timeouts {
                first_byte: config.first_byte_timeout,
                idle: config.idle_timeout,
                keep_alive: Some(KEEP_ALIVE),
            },
        })
    }
}

/// Checks `config` as [`ElevenLabsTts::new`] would, without building anything.
pub fn check(config: &ElevenLabsConfig) -> Result<(), TtsSetupError> {
    ElevenLabsTts::new(config.clone()).map(drop)
}

/// The voice's own page of the REST API, on the socket's host (`wss` → `https`): a bad key
/// or an unknown voice is refused there, while the socket would accept both until the first
/// message.
fn voice_url(config: &ElevenLabsConfig) -> Result<reqwest::Url, TtsSetupError> {
    let mut url = ws_base_url(&config.base_url)?;
    let scheme = if url.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    url.set_scheme(scheme)
        .map_err(|()| TtsSetupError::InvalidBaseUrl("no HTTP form".into()))?;
    url.path_segments_mut()
        .map_err(|_| TtsSetupError::InvalidBaseUrl("not a base URL".into()))?
        .pop_if_empty()
        .extend(["voices", config.voice_id.trim()]);
    Ok(url)
}

/// The socket's URL: the voice in the path, the model, format and language in the query.
fn stream_url(config: &ElevenLabsConfig) -> Result<String, TtsSetupError> {
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
                "sample rate {} is not one of ElevenLabs' PCM rates {SAMPLE_RATES:?}",
                config.sample_rate
            ),
        ));
    }
    let check = |name: &'static str, v: Option<f64>, range: std::ops::RangeInclusive<f64>| match v {
        Some(x) if !range.contains(&x) => Err(invalid(
            name,
            format!(
                "{name} must be between {} and {}, got {x}",
                range.start(),
                range.end()
            ),
        )),
        _ => Ok(()),
    };
    check("stability", config.stability, 0.0..=1.0)?;
    check("similarity_boost", config.similarity_boost, 0.0..=1.0)?;
    check("speed", config.speed, 0.7..=1.2)?;
    if let Some(schedule) = &config.chunk_length_schedule {
        if schedule.is_empty() || schedule.iter().any(|n| !(50..=500).contains(n)) {
            return Err(invalid(
                "chunk_length_schedule",
                format!(
                "chunk_length_schedule must hold 50 to 500 characters per step, got {schedule:?}"
            ),
            ));
        }
    }
    let mut url = ws_base_url(&config.base_url)?;
    url.path_segments_mut()
        .map_err(|_| TtsSetupError::InvalidBaseUrl("not a base URL".into()))?
        .pop_if_empty()
        .extend(["text-to-speech", voice, "stream-input"]);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("model_id", config.model.trim());
        q.append_pair("output_format", &format!("pcm_{}", config.sample_rate));
        if let Some(lang) = config.language.as_deref().filter(|l| !l.trim().is_empty()) {
            q.append_pair("language_code", lang.trim());
        }
    }
    Ok(url.into())
}

/// The first message: a single space (the protocol's start), and the settings that are set.
pub fn first_message(config: &ElevenLabsConfig) -> Value {
    let mut m = Map::new();
    m.insert("text".into(), json!(" "));
    if config.stability.is_some() || config.similarity_boost.is_some() || config.speed.is_some() {
        // The service requires stability and similarity_boost whenever settings are sent.
        let mut v = Map::new();
        v.insert("stability".into(), json!(config.stability.unwrap_or(0.5)));
        v.insert(
            "similarity_boost".into(),
            json!(config.similarity_boost.unwrap_or(0.75)),
        );
        if let Some(speed) = config.speed {
            v.insert("speed".into(), json!(speed));
        }
        m.insert("voice_settings".into(), Value::Object(v));
    }
    if let Some(schedule) = &config.chunk_length_schedule {
        m.insert(
            "generation_config".into(),
            json!({ "chunk_length_schedule": schedule }),
        );
    }
    Value::Object(m)
}

#[async_trait]
impl Tts for ElevenLabsTts {
    fn label(&self) -> &str {
        "elevenlabs"
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// `GET {base}/voices/{voice_id}` with the key: the service answers, takes the key and
    /// knows the voice.
    async fn ping(&self) -> Result<(), ProviderError> {
        let client = http::shared_http_client()
            .map_err(|e| ProviderError::Unavailable(format!("no HTTP client: {e}")))?;
        let mut key = reqwest::header::HeaderValue::from_str(self.key.expose())
            .map_err(|_| ProviderError::Auth)?;
        key.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("xi-api-key", key);
        let timeout = self.connect_timeout + self.timeouts.first_byte;
        http::ping(
            &client,
            self.voice_url.clone(),
            headers,
            Some(&self.key),
            timeout,
        )
        .await
    }

    /// Opens the socket and sends the first message, so a refused key or an unreachable
    /// service is reported here, before any text is owed.
    async fn synthesize(&self, text: mpsc::Receiver<String>) -> Result<AudioStream, ProviderError> {
        use futures_util::SinkExt;
        let headers = [("xi-api-key", self.key.expose())];
        let mut socket =
            ws::connect(&self.url, &headers, Some(&self.key), self.connect_timeout).await?;
        tokio::time::timeout(
            self.timeouts.idle,
            socket.send(ws::Message::text(self.first_message.clone())),
        )
        .await
        .map_err(|_| ProviderError::Timeout)?
        .map_err(|e| ws::error(e, Some(&self.key)))?;
        tracing::debug!(provider = "elevenlabs", "TTS socket open");
        let (tx, rx) = mpsc::channel(AUDIO_CHANNEL);
        let protocol = StreamInput {
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

/// The stream-input messages.
struct StreamInput {
    key: ApiKey,
    audio: Base64Pcm,
}

/// A server message, as far as it is read; `audio` is borrowed from the message (base64 has
/// nothing to unescape), so reading it allocates nothing.
#[derive(Deserialize)]
struct ServerMessage<'a> {
    #[serde(default, borrow)]
    audio: Option<Cow<'a, str>>,
    #[serde(default, rename = "isFinal")]
    is_final: Option<bool>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
}

impl SocketProtocol for StreamInput {
    fn label(&self) -> &'static str {
        "elevenlabs"
    }

    fn segment(&mut self, text: &str) -> String {
        json!({ "text": spaced(text), "flush": true }).to_string()
    }

    fn finish(&mut self) -> String {
        json!({ "text": "" }).to_string()
    }

    fn cancel(&mut self) -> Option<String> {
        None
    }

    fn keep_alive(&mut self) -> Option<String> {
        Some(json!({ "text": " " }).to_string())
    }

    fn receive(&mut self, message: &str, samples: &mut Vec<f32>) -> Result<Reply, ProviderError> {
        let m: ServerMessage = serde_json::from_str(message)
            .map_err(|e| ProviderError::Protocol(format!("malformed message: {e}")))?;
        if let Some(error) = m.error.filter(|e| !e.is_null()) {
            let code = error.as_str().unwrap_or("error");
            let text = m.message.as_ref().and_then(Value::as_str).unwrap_or("");
            return Err(service_error(None, code, text, Some(&self.key)));
        }
        let mut reply = Reply::Other;
        if let Some(audio) = m.audio.filter(|a| !a.is_empty()) {
            *samples = self.audio.decode(&audio)?;
            reply = Reply::Audio;
        }
        if m.is_final == Some(true) {
            reply = Reply::Done;
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_carries_voice_model_format_and_language() {
        let mut c = ElevenLabsConfig::new("21m00Tcm4TlvDq8ikWAM");
        c.language = Some("de".into());
        c.sample_rate = 16_000;
        assert_eq!(
            stream_url(&c).unwrap(),
            "wss://api.elevenlabs.io/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_16000&language_code=de"
        );
        c.base_url = "ws://10.0.0.2:8080/v1/".into();
        c.language = None;
        c.voice_id = "a b/c".into();
        assert_eq!(
            stream_url(&c).unwrap(),
            "ws://10.0.0.2:8080/v1/text-to-speech/a%20b%2Fc/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_16000"
        );
    }

    #[test]
    fn settings_are_checked() {
        let bad = |f: fn(&mut ElevenLabsConfig)| {
            let mut c = ElevenLabsConfig::new("v");
            c.api_key = Some(ApiKey::new("k"));
            f(&mut c);
            ElevenLabsTts::new(c).unwrap_err().to_string()
        };
        assert!(bad(|c| c.sample_rate = 44_000).contains("not one of"));
        assert!(bad(|c| c.speed = Some(2.0)).contains("speed must be between 0.7 and 1.2"));
        assert!(bad(|c| c.chunk_length_schedule = Some(vec![10])).contains("50 to 500"));
        assert!(bad(|c| c.base_url = "https://x".into()).contains("not ws(s)"));
        assert_eq!(bad(|c| c.api_key = None), "an API key is required");
        assert_eq!(bad(|c| c.voice_id = " ".into()), "a voice ID is required");
    }

    #[test]
    fn voice_settings_are_sent_whole_or_not_at_all() {
        let mut c = ElevenLabsConfig::new("v");
        assert_eq!(first_message(&c), json!({"text": " "}));
        c.speed = Some(1.1);
        c.chunk_length_schedule = Some(vec![50, 120]);
        assert_eq!(
            first_message(&c),
            json!({"text": " ",
                   "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.1},
                   "generation_config": {"chunk_length_schedule": [50, 120]}})
        );
    }
}
