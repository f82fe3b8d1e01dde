//! OpenAI's `audio/speech`, for OpenAI and for LAN servers with an OpenAI-compatible route
//! (the base URL, model and voice are configuration, the wire format is one).
//!
//! Each sentence is one request, `POST {base_url}/audio/speech` with `{model, input, voice,
//! response_format: "pcm", speed?, instructions?}`; the answer's body is raw PCM16 mono
//! (24 kHz from OpenAI), streamed as it is generated. Requests are pipelined: the next
//! sentence's request starts while the current one's audio streams, so its first byte is
//! usually ready when the current one ends; audio is still delivered strictly in order. At
//! most [`IN_FLIGHT`] requests are open per reply, so a long reply does not open a request per
//! sentence at once.
//!
//! A request that fails before any of its audio was delivered (429, 5xx, a refused connection,
//! a body cut before the first sample) is retried with backoff; after audio, a failure ends
//! the stream with the error. Dropping the stream drops the bodies, closing the connections.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{invalid, AudioSender, TtsSetupError, AUDIO_CHANNEL};
use crate::audio::pcm::Pcm16Decoder;
use crate::providers::http::{self, ApiKey, RetryPolicy};
use crate::providers::{AudioStream, ProviderError, Tts};

/// OpenAI's own endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini-tts";
/// The default voice.
pub const DEFAULT_VOICE: &str = "alloy";
/// The rate of OpenAI's `pcm` format; LAN servers may differ (configurable).
pub const DEFAULT_SAMPLE_RATE: u32 = 24_000;
/// The longest `input` the API takes, in characters; a longer sentence is split at a space.
pub const MAX_INPUT: usize = 4096;
/// Requests open at once per reply: the one streaming and the next.
pub const IN_FLIGHT: usize = 2;
/// Audio chunks a pipelined request may hold while the one before it plays.
const SEGMENT_CHANNEL: usize = 4;

/// How to reach an `audio/speech` server and what to ask it for.
#[derive(Clone)]
pub struct OpenAiTtsConfig {
    /// The API root, without `/audio/speech`.
    pub base_url: String,
    /// The model name as the server knows it.
    pub model: String,
    /// The voice name (`alloy`, `coral`, … for OpenAI).
    pub voice: String,
    /// Sent as `Authorization: Bearer …` when set and not empty; LAN servers need none.
    pub api_key: Option<ApiKey>,
    /// `speed`, 0.25 to 4; none: the server's default (1).
    pub speed: Option<f64>,
    /// `instructions` on how to speak (not for `tts-1`/`tts-1-hd`); none: not sent.
    pub instructions: Option<String>,
    /// The rate of the raw PCM the server sends (24 kHz for OpenAI).
    pub sample_rate: u32,
    /// Longest wait for the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait from sending a request to the first byte of its audio.
    pub first_byte_timeout: Duration,
    /// Longest silence between two pieces of a streamed body.
    pub idle_timeout: Duration,
    /// Retries of a request that failed before any of its audio was delivered.
    pub retry: RetryPolicy,
}

impl OpenAiTtsConfig {
    /// OpenAI's endpoint with the default model, voice and rate, no key, and the default
    /// timeouts (connect 5 s, first byte 10 s, idle 10 s) and retries (3 attempts).
    pub fn new() -> Self {
        OpenAiTtsConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            voice: DEFAULT_VOICE.to_owned(),
            api_key: None,
            speed: None,
            instructions: None,
            sample_rate: DEFAULT_SAMPLE_RATE,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl Default for OpenAiTtsConfig {
    fn default() -> Self {
        Self::new()
    }
}

// Hand-written so the config's shape is visible while the key stays hidden.
impl std::fmt::Debug for OpenAiTtsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiTtsConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("voice", &self.voice)
            .field("api_key", &self.api_key)
            .field("speed", &self.speed)
            .field("instructions", &self.instructions)
            .field("sample_rate", &self.sample_rate)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// `audio/speech` speech. Cheap to share: one per configured provider, used by every session.
pub struct OpenAiTts {
    shared: Arc<Shared>,
}

/// What every request of every reply needs.
struct Shared {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    /// The body without `input`.
    body: Map<String, Value>,
    key: Option<ApiKey>,
    sample_rate: u32,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiTts")
            .field("url", &self.shared.url.as_str())
            .field("body", &self.shared.body)
            .field("api_key", &self.shared.key)
            .finish_non_exhaustive()
    }
}

impl OpenAiTts {
    /// Checks the config and builds the provider on a client of the crate's HTTP stack with
    /// this provider's connect timeout.
    pub fn new(config: OpenAiTtsConfig) -> Result<OpenAiTts, TtsSetupError> {
        let (url, headers, key, body) = request_parts(&config)?;
        let client = http::http_client_builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(TtsSetupError::HttpClient)?;
        Ok(OpenAiTts {
            shared: Arc::new(Shared {
                client,
                url,
                headers,
                body,
                key,
                sample_rate: config.sample_rate,
                first_byte_timeout: config.first_byte_timeout,
                idle_timeout: config.idle_timeout,
                retry: config.retry,
            }),
        })
    }

    /// The JSON body for one piece of text.
    pub fn request_body(&self, input: &str) -> Value {
        self.shared.request_body(input)
    }
}

/// Checks `config` as [`OpenAiTts::new`] would, without building a client.
pub fn check(config: &OpenAiTtsConfig) -> Result<(), TtsSetupError> {
    request_parts(config).map(drop)
}

type Parts = (reqwest::Url, HeaderMap, Option<ApiKey>, Map<String, Value>);

fn request_parts(config: &OpenAiTtsConfig) -> Result<Parts, TtsSetupError> {
    let joined = format!("{}/audio/speech", config.base_url.trim_end_matches('/'));
    let url =
        reqwest::Url::parse(&joined).map_err(|e| TtsSetupError::InvalidBaseUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TtsSetupError::InvalidBaseUrl(format!(
            "scheme {:?} is not http(s)",
            url.scheme()
        )));
    }
    if config.model.trim().is_empty() {
        return Err(invalid("model", "a model name is required"));
    }
    if config.voice.trim().is_empty() {
        return Err(invalid("voice", "a voice name is required"));
    }
    if let Some(speed) = config.speed.filter(|s| !(0.25..=4.0).contains(s)) {
        return Err(invalid(
            "speed",
            format!("speed must be between 0.25 and 4, got {speed}"),
        ));
    }
    if !crate::audio::wav::RATES.contains(&config.sample_rate) {
        return Err(invalid(
            "sample_rate",
            format!(
                "sample rate {} is outside 8000 to 48000 Hz",
                config.sample_rate
            ),
        ));
    }
    let key = super::header_key(config.api_key.as_ref())?;
    let mut headers = HeaderMap::new();
    if let Some(k) = &key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose()))
            .map_err(|_| TtsSetupError::InvalidKey)?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model.trim()));
    body.insert("voice".into(), json!(config.voice.trim()));
    body.insert("response_format".into(), json!("pcm"));
    if let Some(speed) = config.speed {
        body.insert("speed".into(), json!(speed));
    }
    if let Some(i) = config
        .instructions
        .as_deref()
        .filter(|i| !i.trim().is_empty())
    {
        body.insert("instructions".into(), json!(i));
    }
    Ok((url, headers, key, body))
}

/// `text` in pieces of at most [`MAX_INPUT`] characters, cut at the last space before the
/// limit where there is one.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > MAX_INPUT {
        let limit = rest
            .char_indices()
            .nth(MAX_INPUT)
            .map_or(rest.len(), |(i, _)| i);
        let cut = rest[..limit]
            .rfind(char::is_whitespace)
            .filter(|&i| i > 0)
            .unwrap_or(limit);
        out.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

#[async_trait]
impl Tts for OpenAiTts {
    fn label(&self) -> &str {
        "openai"
    }

    fn sample_rate(&self) -> u32 {
        self.shared.sample_rate
    }

    /// `GET {base}/models` (OpenAI's listing; LAN servers with this route serve it too).
    async fn ping(&self) -> Result<(), ProviderError> {
        let s = &self.shared;
        let mut url = s.url.clone();
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("not a base URL".into()))?
            .pop()
            .pop()
            .push("models");
        let mut headers = s.headers.clone();
        headers.remove(reqwest::header::CONTENT_TYPE);
        http::ping(
            &s.client,
            url,
            headers,
            s.key.as_ref(),
            s.first_byte_timeout,
        )
        .await
    }

    /// Starts the reply's task and returns at once: requests go out as sentences arrive, and
    /// their failures come through the stream.
    async fn synthesize(&self, text: mpsc::Receiver<String>) -> Result<AudioStream, ProviderError> {
        let (tx, rx) = mpsc::channel(AUDIO_CHANNEL);
        tokio::spawn(reply(self.shared.clone(), text, tx));
        Ok(rx)
    }
}

/// One reply: a request per sentence, at most [`IN_FLIGHT`] open, audio forwarded in order.
async fn reply(shared: Arc<Shared>, mut text: mpsc::Receiver<String>, out: AudioSender) {
    // The open requests' audio, oldest first; dropping one cancels its request.
    let mut queue: VecDeque<mpsc::Receiver<Result<Vec<f32>, ProviderError>>> = VecDeque::new();
    // Pieces of a sentence waiting for a free slot.
    let mut waiting: VecDeque<String> = VecDeque::new();
    let mut text_open = true;
    loop {
        while queue.len() < IN_FLIGHT {
            let Some(input) = waiting.pop_front() else {
                break;
            };
            let (tx, rx) = mpsc::channel(SEGMENT_CHANNEL);
            tokio::spawn(segment(shared.clone(), input, tx));
            queue.push_back(rx);
        }
        if !text_open && queue.is_empty() {
            tracing::debug!(provider = "openai", "TTS stream complete");
            return;
        }
        tokio::select! {
            biased;
            _ = out.closed() => {
                tracing::debug!(provider = "openai", "TTS stream dropped by the caller; closing its requests");
                return;
            }
            chunk = head(&mut queue), if !queue.is_empty() => match chunk {
                Some(Ok(samples)) => {
                    if out.send(Ok(samples)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(provider = "openai", error = %e, "TTS stream failed");
                    let _ = out.send(Err(e)).await;
                    return;
                }
                None => {
                    queue.pop_front();
                }
            },
            s = text.recv(), if text_open && waiting.is_empty() => match s {
                Some(s) => waiting.extend(pieces(&s)),
                None => text_open = false,
            },
        }
    }
}

async fn head(
    queue: &mut VecDeque<mpsc::Receiver<Result<Vec<f32>, ProviderError>>>,
) -> Option<Result<Vec<f32>, ProviderError>> {
    queue.front_mut().expect("guarded: not empty").recv().await
}

/// One request's failure, and whether audio had been delivered before it.
struct Failure {
    error: ProviderError,
    delivered: bool,
}

/// Synthesises one piece of text into `out`, retrying what may be retried.
async fn segment(shared: Arc<Shared>, input: String, out: AudioSender) {
    let body = match serde_json::to_vec(&shared.request_body(&input)) {
        Ok(b) => b,
        Err(e) => {
            let e = ProviderError::Protocol(format!("cannot encode the request: {e}"));
            let _ = out.send(Err(e)).await;
            return;
        }
    };
    let mut attempt = 1;
    loop {
        let failure = tokio::select! {
            _ = out.closed() => return,
            r = shared.stream_once(&body, &out) => match r {
                Ok(()) => return,
                Err(f) => f,
            },
        };
        let retry = if failure.delivered {
            None
        } else {
            shared.retry.next_delay(attempt, &failure.error)
        };
        let Some(delay) = retry else {
            let _ = out.send(Err(failure.error)).await;
            return;
        };
        tracing::warn!(
            provider = "openai",
            attempt,
            error = %failure.error,
            "TTS request failed; retrying in {delay:?}"
        );
        tokio::select! {
            _ = out.closed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        attempt += 1;
    }
}

/// Content types that say the server sent something other than raw PCM.
const NOT_PCM: [&str; 11] = [
    "application/json",
    "text/",
    "audio/mpeg",
    "audio/mp3",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/ogg",
    "audio/opus",
    "audio/aac",
    "audio/flac",
];

impl Shared {
    fn request_body(&self, input: &str) -> Value {
        let mut body = self.body.clone();
        body.insert("input".into(), json!(input));
        Value::Object(body)
    }

    /// One try: sends the request and streams its audio into `out`.
    async fn stream_once(&self, body: &[u8], out: &AudioSender) -> Result<(), Failure> {
        let fail = |error, delivered| Failure { error, delivered };
        let deadline = Instant::now() + self.first_byte_timeout;
        let send = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body.to_vec())
            .send();
        let mut response = tokio::time::timeout_at(deadline, send)
            .await
            .map_err(|_| fail(ProviderError::Timeout, false))?
            .map_err(|e| fail(http::transport_error(e), false))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            // The body only explains the error; a server that will not send it is not waited for.
            let text = tokio::time::timeout_at(deadline, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let e = http::status_error(status, &headers, &text, self.key.as_ref());
            return Err(fail(e, false));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if NOT_PCM.iter().any(|t| content_type.starts_with(t)) {
            let e = ProviderError::Protocol(format!(
                "expected raw PCM audio, got {content_type} (does the server support response_format \"pcm\"?)"
            ));
            return Err(fail(e, false));
        }
        let mut decoder = Pcm16Decoder::default();
        let mut delivered = false;
        let mut deadline = deadline;
        loop {
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .map_err(|_| fail(ProviderError::Timeout, delivered))?
                .map_err(|e| fail(http::transport_error(e), delivered))?;
            let Some(bytes) = chunk else {
                if !delivered {
                    let e = ProviderError::Protocol("the server sent no audio".into());
                    return Err(fail(e, false));
                }
                return Ok(());
            };
            let mut samples = Vec::with_capacity(bytes.len() / 2 + 1);
            decoder.push(&bytes, &mut samples);
            if !samples.is_empty() {
                if out.send(Ok(samples)).await.is_err() {
                    return Ok(()); // cancelled
                }
                delivered = true;
            }
            // The wait for the consumer is not the server's silence.
            deadline = Instant::now() + self.idle_timeout;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_spaces_below_the_limit() {
        let word = "abcdefghi "; // 10 characters
        let text = word.repeat(500); // 5000 characters
        let p = pieces(&text);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|s| s.chars().count() <= MAX_INPUT));
        assert_eq!(p.join(" "), text.trim());
        let unbroken = "x".repeat(MAX_INPUT + 5);
        assert_eq!(
            pieces(&unbroken)
                .iter()
                .map(String::len)
                .collect::<Vec<_>>(),
            [MAX_INPUT, 5]
        );
        assert!(pieces("  ").is_empty());
    }

    #[test]
    fn the_body_has_what_is_set() {
        let t = OpenAiTts::new(OpenAiTtsConfig {
            speed: Some(1.25),
            instructions: Some("Speak warmly.".into()),
            ..OpenAiTtsConfig::new()
        })
        .unwrap();
        assert_eq!(
            t.request_body("Hi."),
            json!({"model": "gpt-4o-mini-tts", "voice": "alloy", "response_format": "pcm",
                   "speed": 1.25, "instructions": "Speak warmly.", "input": "Hi."})
        );
        let bad = |c: OpenAiTtsConfig| OpenAiTts::new(c).unwrap_err().to_string();
        assert!(bad(OpenAiTtsConfig {
            speed: Some(5.0),
            ..OpenAiTtsConfig::new()
        })
        .contains("speed"));
        assert!(bad(OpenAiTtsConfig {
            base_url: "ws://x".into(),
            ..OpenAiTtsConfig::new()
        })
        .contains("not http(s)"));
    }
}
