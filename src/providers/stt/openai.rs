//! OpenAI audio transcriptions (`POST {base_url}/audio/transcriptions`), one request per
//! utterance: for OpenAI (`whisper-1`, `gpt-4o-transcribe`, `gpt-4o-mini-transcribe`) and the
//! LAN servers that speak the same API (faster-whisper-server / speaches, whisper.cpp's server
//! with its OpenAI-compatible route, LocalAI) through `base_url`.
//!
//! The service is not streaming, so the audio between two flushes is kept (as PCM16, at most
//! `max_utterance`, the oldest dropped) and, when local VAD says the user stopped speaking
//! ([`SttInput::flush`]), sent as one WAV file in a `multipart/form-data` body with `model`,
//! `response_format=json` and the optional `language` and `prompt`; the `{"text": …}` answer
//! becomes one [`SttEvent::Final`] (no confidence: the JSON answer has none). There are no
//! interim or preflight transcripts. Leading silence beyond 0.3 s is cut (the audio since the
//! last flush includes the pause before the user spoke), and an utterance with less than
//! 100 ms of sound is not sent at all (whisper models invent words for silence).
//!
//! The body is built by hand (the multipart format is simple, and reqwest's `multipart`
//! feature is not enabled in this crate). Failures before an answer (429 with `Retry-After`,
//! 5xx, a refused connection) are retried with [`RetryPolicy`]; a failure after the retries
//! ends the stream with [`SttEvent::Error`], so a fallback provider can take over.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{parse_url, SttSetupError};
use crate::audio::pcm::encode_pcm16;
use crate::audio::wav::write_wav_to;
use crate::providers::http::{self, ApiKey, RetryPolicy};
use crate::providers::ws::Bytes;
use crate::providers::{ProviderError, Stt, SttEvent, SttInput, SttSession};

/// OpenAI's own endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The model every compatible server knows.
pub const DEFAULT_MODEL: &str = "whisper-1";

const LABEL: &str = "openai";
/// Utterances waiting for their request; more while one is in flight are dropped.
const QUEUED_UTTERANCES: usize = 4;
/// Peak below which a 20 ms window counts as silence (about -46 dBFS).
const SILENCE_PEAK: i16 = 164;
/// Sound an utterance needs to be sent.
const MIN_SOUND: Duration = Duration::from_millis(100);
/// Silence kept before the first sound.
const LEAD_IN: Duration = Duration::from_millis(300);

/// How to reach an audio transcriptions server and what to ask it for.
#[derive(Debug, Clone)]
pub struct OpenAiSttConfig {
    /// The API root, without `/audio/transcriptions` (e.g. `http://192.168.1.5:8000/v1`).
    pub base_url: String,
    /// The model name as the server knows it.
    pub model: String,
    /// ISO-639-1 language of the audio (`en`, `de`); none: detected by the model.
    pub language: Option<String>,
    /// Text that guides the model's spelling and style (names, jargon).
    pub prompt: Option<String>,
    /// Sent as `Authorization: Bearer …` when set and not empty. Never shown.
    pub api_key: Option<ApiKey>,
    /// The rate the session gives audio at, and the WAV's.
    pub sample_rate: u32,
    /// The longest utterance kept; older audio is dropped.
    pub max_utterance: Duration,
    /// Longest wait for the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait for one request's answer, body included.
    pub timeout: Duration,
    /// Retries of a request that failed before an answer.
    pub retry: RetryPolicy,
}

impl OpenAiSttConfig {
    /// OpenAI's endpoint with `whisper-1` at 16 kHz, 30 s utterances, no key, and the default
    /// timeouts (connect 5 s, answer 10 s) and retries (3 attempts).
    pub fn new() -> Self {
        OpenAiSttConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            language: None,
            prompt: None,
            api_key: None,
            sample_rate: 16_000,
            max_utterance: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl Default for OpenAiSttConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Audio transcriptions, one request per utterance. Cheap to share.
#[derive(Clone)]
pub struct OpenAiStt {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `Authorization` (a sensitive value) and `Accept`.
    headers: HeaderMap,
    key: Option<ApiKey>,
    /// The form's text fields, in order.
    fields: Vec<(&'static str, String)>,
    rate: u32,
    max_bytes: usize,
    timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiStt")
            .field("url", &self.inner.url.as_str())
            .field("fields", &self.inner.fields)
            .field("api_key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl OpenAiStt {
    /// Checks the config and builds the provider on a client of the crate's HTTP stack with
    /// this provider's connect timeout.
    pub fn new(config: OpenAiSttConfig) -> Result<OpenAiStt, SttSetupError> {
        let (url, headers, key) = request_parts(&config)?;
        let client = http::http_client_builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(SttSetupError::HttpClient)?;
        let mut fields = vec![
            ("model", config.model),
            ("response_format", "json".to_owned()),
        ];
        fields.extend(config.language.map(|l| ("language", l)));
        fields.extend(config.prompt.map(|p| ("prompt", p)));
        let max_bytes =
            2 * (config.max_utterance.as_secs_f64() * config.sample_rate as f64) as usize;
        Ok(OpenAiStt {
            inner: Arc::new(Inner {
                client,
                url,
                headers,
                key,
                fields,
                rate: config.sample_rate,
                max_bytes,
                timeout: config.timeout,
                retry: config.retry,
            }),
        })
    }
}

/// Checks the URL and key of `config` without building a client, for config validation.
pub fn check(config: &OpenAiSttConfig) -> Result<(), SttSetupError> {
    request_parts(config).map(drop)
}

fn request_parts(
    config: &OpenAiSttConfig,
) -> Result<(reqwest::Url, HeaderMap, Option<ApiKey>), SttSetupError> {
    let joined = format!(
        "{}/audio/transcriptions",
        config.base_url.trim_end_matches('/')
    );
    let url = parse_url(&joined, &["http", "https"])?;
    let key = config.api_key.clone().filter(|k| !k.is_empty());
    let mut headers = HeaderMap::new();
    if let Some(k) = &key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose()))
            .map_err(|_| SttSetupError::InvalidKey)?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    Ok((url, headers, key))
}

#[async_trait]
impl Stt for OpenAiStt {
    fn label(&self) -> &str {
        LABEL
    }

    fn sample_rate(&self) -> u32 {
        self.inner.rate
    }

    /// `GET {base}/models` (served by OpenAI and by LAN whisper servers with this route).
    async fn ping(&self) -> Result<(), ProviderError> {
        let mut url = self.inner.url.clone();
        url.path_segments_mut()
            .map_err(|()| ProviderError::Protocol("not a base URL".into()))?
            .pop()
            .pop()
            .push("models");
        let mut headers = self.inner.headers.clone();
        headers.remove(reqwest::header::ACCEPT);
        http::ping(
            &self.inner.client,
            url,
            headers,
            self.inner.key.as_ref(),
            self.inner.timeout,
        )
        .await
    }

    async fn connect(&self) -> Result<SttSession, ProviderError> {
        let (utterances_tx, utterances_rx) = mpsc::channel(QUEUED_UTTERANCES);
        let (spares_tx, spares_rx) = mpsc::channel(QUEUED_UTTERANCES + 2);
        let (events_tx, events_rx) = mpsc::channel(16);
        tokio::spawn(
            self.inner
                .clone()
                .transcribe_each(utterances_rx, spares_tx, events_tx),
        );
        let input = UtteranceInput {
            pcm: Vec::new(),
            max_bytes: self.inner.max_bytes,
            slack: 2 * self.inner.rate as usize,
            dropped_bytes: 0,
            rate: self.inner.rate,
            utterances: utterances_tx,
            spares: spares_rx,
        };
        Ok(SttSession {
            input: Box::new(input),
            events: events_rx,
        })
    }
}

/// The session's side: PCM16 kept until a flush hands it to the request task.
struct UtteranceInput {
    pcm: Vec<u8>,
    max_bytes: usize,
    /// Dropped at once when the utterance is too long (one second), so the copy is rare.
    slack: usize,
    /// Dropped from the start of this utterance, for the log.
    dropped_bytes: usize,
    rate: u32,
    utterances: mpsc::Sender<Vec<u8>>,
    /// Sent utterances' buffers coming back for reuse.
    spares: mpsc::Receiver<Vec<u8>>,
}

impl SttInput for UtteranceInput {
    fn push_audio(&mut self, samples: &[f32]) {
        encode_pcm16(samples, &mut self.pcm);
        if self.pcm.len() > self.max_bytes {
            let cut = ((self.pcm.len() - self.max_bytes + self.slack) & !1).min(self.pcm.len());
            self.pcm.drain(..cut);
            self.dropped_bytes += cut;
        }
    }

    fn flush(&mut self) {
        if self.dropped_bytes > 0 {
            tracing::warn!(
                provider = LABEL,
                dropped_ms = self.dropped_bytes as u64 * 500 / self.rate as u64,
                "utterance longer than the longest kept: its start was dropped"
            );
            self.dropped_bytes = 0;
        }
        if self.pcm.is_empty() {
            return;
        }
        let fresh = self.spares.try_recv().unwrap_or_default();
        let utterance = std::mem::replace(&mut self.pcm, fresh);
        match self.utterances.try_send(utterance) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    provider = LABEL,
                    "transcription requests are behind: an utterance was dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The answer of `response_format=json`.
#[derive(Deserialize)]
struct Transcription {
    text: String,
}

impl Inner {
    /// Sends each utterance in turn; ends when the input is dropped, the events receiver is
    /// dropped (an in-flight request is abandoned), or a request fails for good.
    async fn transcribe_each(
        self: Arc<Self>,
        mut utterances: mpsc::Receiver<Vec<u8>>,
        spares: mpsc::Sender<Vec<u8>>,
        tx: mpsc::Sender<SttEvent>,
    ) {
        loop {
            let mut pcm = tokio::select! {
                u = utterances.recv() => match u {
                    Some(u) => u,
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let wav = self.wav(&pcm);
            pcm.clear();
            let _ = spares.try_send(pcm);
            let Some(wav) = wav else { continue };
            let result = tokio::select! {
                r = self.transcribe(wav) => r,
                _ = tx.closed() => return,
            };
            match result {
                Ok(text) if text.is_empty() => {}
                Ok(text) => {
                    let event = SttEvent::Final {
                        text,
                        confidence: None,
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = LABEL, error = %e, "transcription failed");
                    let _ = tx.send(SttEvent::Error(e)).await;
                    return;
                }
            }
        }
    }

    /// The WAV file to send for `pcm`, leading silence cut; `None` when there is too little
    /// sound to be worth a request.
    fn wav(&self, pcm: &[u8]) -> Option<Vec<u8>> {
        let samples = || {
            pcm.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
        };
        let window = (self.rate / 50).max(1) as usize;
        let total = pcm.len() / 2;
        let mut first_sound = None;
        let mut sound_windows = 0usize;
        for (i, w) in pcm.chunks(2 * window).enumerate() {
            let peak = w
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs())
                .max()
                .unwrap_or(0);
            if peak >= SILENCE_PEAK.unsigned_abs() {
                first_sound.get_or_insert(i * window);
                sound_windows += 1;
            }
        }
        let sound = Duration::from_secs_f64((sound_windows * window) as f64 / self.rate as f64);
        let Some(first) = first_sound.filter(|_| sound >= MIN_SOUND) else {
            tracing::debug!(
                provider = LABEL,
                ?sound,
                "utterance too short or silent; not sent"
            );
            return None;
        };
        let lead_in = (LEAD_IN.as_secs_f64() * self.rate as f64) as usize;
        let start = first.saturating_sub(lead_in);
        let mut out = std::io::Cursor::new(Vec::with_capacity(44 + 2 * (total - start)));
        match write_wav_to(&mut out, self.rate, samples().skip(start)) {
            Ok(()) => Some(out.into_inner()),
            Err(e) => {
                // Writing to memory cannot fail short of a bug; say so rather than panic.
                tracing::warn!(provider = LABEL, error = %e, "cannot write the utterance as WAV");
                None
            }
        }
    }

    /// One utterance's transcript, retrying what may be retried. The WAV is dropped once it
    /// is in the body, so an utterance is held once while it is being sent.
    async fn transcribe(&self, wav: Vec<u8>) -> Result<String, ProviderError> {
        let boundary = boundary();
        let seconds = wav.len().saturating_sub(44) as f64 / (2.0 * self.rate as f64);
        let body = Bytes::from(multipart_body(&boundary, &self.fields, &wav));
        drop(wav);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        tracing::debug!(provider = LABEL, seconds, "transcription request");
        let mut attempt = 1;
        loop {
            let error = match self.try_once(body.clone(), &content_type).await {
                Ok(text) => return Ok(text),
                Err(e) => e,
            };
            let Some(delay) = self.retry.next_delay(attempt, &error) else {
                return Err(error);
            };
            tracing::warn!(
                provider = LABEL,
                attempt,
                error = %error,
                "transcription request failed; retrying in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn try_once(&self, body: Bytes, content_type: &str) -> Result<String, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let content_type = HeaderValue::from_str(content_type)
            .map_err(|_| ProviderError::Protocol("invalid multipart boundary".into()))?;
        let send = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send();
        let response = tokio::time::timeout_at(deadline, send)
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(http::transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = tokio::time::timeout_at(deadline, response.text())
            .await
            .map_err(|_| ProviderError::Timeout)?;
        if !status.is_success() {
            // The body only explains the error; an unreadable one is left out.
            let text = text.unwrap_or_default();
            return Err(http::status_error(
                status,
                &headers,
                &text,
                self.key.as_ref(),
            ));
        }
        let text = text.map_err(http::transport_error)?;
        let parsed: Transcription = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Protocol(format!("malformed transcription answer: {e}")))?;
        Ok(parsed.text.trim().to_owned())
    }
}

/// A boundary that will not occur in the audio by chance: 128 random bits.
fn boundary() -> String {
    use std::hash::BuildHasher;
    let h = |n: u64| std::collections::hash_map::RandomState::new().hash_one(n);
    format!("hark-boundary-{:016x}{:016x}", h(1), h(2))
}

/// `multipart/form-data` with the text `fields` and the WAV as `file`.
fn multipart_body(boundary: &str, fields: &[(&'static str, String)], wav: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(wav.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(wav);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Arc<Inner> {
        OpenAiStt::new(OpenAiSttConfig::new()).unwrap().inner
    }

    fn pcm(samples: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_pcm16(samples, &mut out);
        out
    }

    #[test]
    fn silence_and_clicks_are_not_sent_and_leading_silence_is_cut() {
        let i = inner();
        assert!(i.wav(&pcm(&[0.0; 16_000])).is_none(), "silent");
        let mut click = vec![0.0; 16_000];
        click[8000..8100].fill(0.5);
        assert!(i.wav(&pcm(&click)).is_none(), "a click is not speech");
        // 2 s of silence, then 0.5 s of sound: 0.3 s of the silence is kept.
        let mut speech = vec![0.0; 32_000];
        speech.extend(std::iter::repeat_n(0.2, 8_000));
        let wav = i.wav(&pcm(&speech)).unwrap();
        let audio = crate::audio::read_wav_bytes(&wav).unwrap();
        assert_eq!(audio.samples.len(), 4_800 + 8_000);
    }

    #[test]
    fn the_body_is_multipart_form_data() {
        let fields = [("model", "whisper-1".to_owned())];
        let body = multipart_body("B", &fields, b"RIFF");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
             --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n\
             Content-Type: audio/wav\r\n\r\nRIFF\r\n--B--\r\n"
        );
        assert_ne!(boundary(), boundary());
    }

    #[test]
    fn long_utterances_keep_their_end() {
        let (tx, _rx) = mpsc::channel(1);
        let (_stx, spares) = mpsc::channel(1);
        let mut input = UtteranceInput {
            pcm: Vec::new(),
            max_bytes: 2 * 16_000,
            slack: 2 * 1_600,
            dropped_bytes: 0,
            rate: 16_000,
            utterances: tx,
            spares,
        };
        for i in 0..30 {
            input.push_audio(&[i as f32 / 100.0; 1_600]);
        }
        assert!(input.pcm.len() <= 2 * 16_000 && input.pcm.len() >= 2 * 14_400);
        let last = i16::from_le_bytes([
            input.pcm[input.pcm.len() - 2],
            input.pcm[input.pcm.len() - 1],
        ]);
        assert_eq!(last, (0.29f32 * 32767.0).round() as i16);
    }
}
