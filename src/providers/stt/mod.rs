//! Speech-to-text providers: implementations of [`crate::providers::Stt`] for real services.
//!
//! [`deepgram`] (live streaming) and [`assemblyai`] (Universal-Streaming v3) stream audio over a
//! WebSocket and answer with interim and final transcripts as the user speaks; [`openai`] sends
//! one `audio/transcriptions` request per utterance, which also serves LAN whisper servers.
//!
//! The two streaming providers share the machinery here and differ only in their
//! `StreamProtocol`: URL, messages and close codes. The audio path ([`SttInput::push_audio`])
//! converts samples to PCM16 into fixed-size frames and hands each full frame to the socket's
//! writer task with `try_reserve`: it never waits, and once its frame buffers and queue have gone
//! round it never allocates (sent frames come back to the input for reuse). When the service falls
//! behind and the queue is full, frames are dropped and counted, and a warning says how much
//! audio was lost, at most once a second. A reader task turns the service's messages into
//! [`SttEvent`]s; a stream that goes quiet (no message and no answer to our WebSocket pings for
//! the idle timeout) ends in [`ProviderError::Timeout`], and any end the session did not ask for
//! ends with an [`SttEvent::Error`], so a fallback wrapper can take over.

pub mod assemblyai;
pub mod deepgram;
pub mod openai;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error as WsError;

pub use assemblyai::{AssemblyAiConfig, AssemblyAiStt};
pub use deepgram::{DeepgramConfig, DeepgramStt};
pub use openai::{OpenAiStt, OpenAiSttConfig};

use super::http::{ApiKey, RetryPolicy};
use super::ws::{self, Bytes, CloseFrame, Message, WsStream};
use super::{ProviderError, SttEvent, SttInput, SttSession};
use crate::audio::pcm::encode_pcm16;

/// Why a provider could not be built from its config. Messages hold no key.
#[derive(Debug, thiserror::Error)]
pub enum SttSetupError {
    /// The URL does not parse or has the wrong scheme.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The key holds characters a header cannot carry (the key is not shown).
    #[error("the API key holds characters that cannot be sent in a header")]
    InvalidKey,
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// `url` parsed, with one of `schemes` (`ws`/`wss` for streaming, `http`/`https` for requests).
fn parse_url(url: &str, schemes: &[&str]) -> Result<reqwest::Url, SttSetupError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| SttSetupError::InvalidUrl(e.to_string()))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(SttSetupError::InvalidUrl(format!(
            "scheme {:?} is not {}",
            parsed.scheme(),
            schemes.join(" or ")
        )));
    }
    Ok(parsed)
}

/// `Authorization` with `prefix` and the key (`"Token "` for Deepgram, `""` for AssemblyAI),
/// checked to be sendable; `None` for no key or an empty one (LAN servers need none).
fn auth_header(key: Option<&ApiKey>, prefix: &str) -> Result<Option<String>, SttSetupError> {
    let Some(k) = key.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let value = format!("{prefix}{}", k.expose());
    reqwest::header::HeaderValue::from_str(&value).map_err(|_| SttSetupError::InvalidKey)?;
    Ok(Some(value))
}

/// What one streaming service's wire protocol says beyond "binary frames of PCM16".
pub(crate) trait StreamProtocol: Send + 'static {
    /// The text message that keeps an idle stream open.
    const KEEP_ALIVE: &'static str;
    /// The text message that asks for a final transcript of what was sent (end of speech).
    const FLUSH: &'static str;
    /// The text message that ends the stream once the service has answered what it has.
    const CLOSE: &'static str;
    /// Audio per binary message.
    const FRAME: Duration;

    /// Reads one text message into `out`. Malformed or unknown messages are logged and
    /// skipped; an error the service reports in a message ends the stream with it.
    fn on_text(&mut self, text: &str, out: &mut Vec<SttEvent>) -> Result<(), ProviderError>;

    /// What a close frame from the service means; `None` for a normal end.
    fn close_error(&self, frame: Option<&CloseFrame>) -> Option<ProviderError>;
}

/// How a streaming session is opened and watched: built once per provider, cloned per stream.
#[derive(Clone)]
pub(crate) struct StreamSpec {
    /// Provider label for logs.
    pub label: &'static str,
    /// The full URL, query included.
    pub url: String,
    /// `Authorization`'s value, if a key is set.
    pub auth: Option<String>,
    /// For redacting what the service says.
    pub key: Option<ApiKey>,
    /// Samples per second of the audio sent.
    pub rate: u32,
    /// Longest wait for the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Longest silence from the service (pongs count) before the stream is given up.
    pub idle_timeout: Duration,
    /// Retries of a refused or failed handshake.
    pub retry: RetryPolicy,
    /// The provider's count of samples dropped because the service was behind.
    pub dropped: Arc<AtomicU64>,
}

impl StreamSpec {
    /// Audio dropped so far over all the provider's streams because the service was behind.
    pub fn dropped_audio(&self) -> Duration {
        let samples = self.dropped.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_secs_f64(samples as f64 / self.rate as f64)
    }
}

/// Audio queued for the socket, in frames: about two seconds, so a brief stall costs no audio
/// and a long one costs bounded memory (64 KB at 16 kHz).
const QUEUE: Duration = Duration::from_secs(2);
/// After this much time without audio, the keep-alive message is sent (services close sockets
/// idle for 10 s or more).
const KEEP_ALIVE_AFTER: Duration = Duration::from_secs(5);
/// How long the service may take to answer the close message with its last transcripts.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Frame buffers allocated up front, so the audio path normally never allocates.
const SPARE_FRAMES: usize = 4;

/// Opens a streaming session: connects (retrying what may be retried), starts the writer and
/// reader tasks, and returns the session's input and events.
pub(crate) async fn open_stream<P: StreamProtocol>(
    spec: StreamSpec,
    protocol: P,
) -> Result<SttSession, ProviderError> {
    let socket = connect_with_retries(&spec).await?;
    let frame_samples = (spec.rate as u128 * P::FRAME.as_millis() / 1000) as usize;
    let frame_bytes = 2 * frame_samples;
    let queue = (QUEUE.as_millis() / P::FRAME.as_millis()).max(2) as usize;
    let (frames_tx, frames_rx) = mpsc::channel(queue);
    let (spares_tx, spares_rx) = mpsc::channel(queue + SPARE_FRAMES + 1);
    for _ in 0..SPARE_FRAMES {
        let _ = spares_tx.try_send(Vec::with_capacity(frame_bytes));
    }
    let flush = Arc::new(Notify::new());
    let (events_tx, events_rx) = mpsc::channel(64);
    let (closing_tx, closing_rx) = oneshot::channel();
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop::<P>(
        sink,
        frames_rx,
        spares_tx,
        flush.clone(),
        closing_tx,
        ping_interval(spec.idle_timeout),
    ));
    let reader = Reader {
        protocol,
        tx: events_tx,
        key: spec.key.clone(),
        label: spec.label,
        idle_timeout: spec.idle_timeout,
    };
    tokio::spawn(reader.run(stream, closing_rx, writer));
    tracing::debug!(
        provider = spec.label,
        rate = spec.rate,
        "speech-to-text stream open"
    );
    let input = FrameInput {
        frame_bytes,
        current: Vec::with_capacity(frame_bytes),
        frames: frames_tx,
        spares: spares_rx,
        flush,
        drops: DropLog {
            label: spec.label,
            rate: spec.rate,
            total: spec.dropped,
            unlogged: 0,
            last: None,
        },
    };
    Ok(SttSession {
        input: Box::new(input),
        events: events_rx,
    })
}

/// Pings often enough that a healthy, silent service answers twice per idle timeout.
fn ping_interval(idle_timeout: Duration) -> Duration {
    KEEP_ALIVE_AFTER
        .min(idle_timeout / 2)
        .max(Duration::from_millis(10))
}

async fn connect_with_retries(spec: &StreamSpec) -> Result<WsStream, ProviderError> {
    let headers: Vec<(&str, &str)> = spec
        .auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let mut attempt = 1;
    loop {
        let error =
            match ws::connect(&spec.url, &headers, spec.key.as_ref(), spec.connect_timeout).await {
                Ok(socket) => return Ok(socket),
                Err(e) => e,
            };
        let Some(delay) = spec.retry.next_delay(attempt, &error) else {
            return Err(error);
        };
        tracing::warn!(
            provider = spec.label,
            attempt,
            error = %error,
            "speech-to-text connection failed; retrying in {delay:?}"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// The session's side of a streaming session: PCM16 frames into a bounded queue.
struct FrameInput {
    frame_bytes: usize,
    /// The frame being filled; its capacity is one frame.
    current: Vec<u8>,
    frames: mpsc::Sender<Vec<u8>>,
    /// Sent frames coming back for reuse.
    spares: mpsc::Receiver<Vec<u8>>,
    flush: Arc<Notify>,
    drops: DropLog,
}

impl FrameInput {
    /// Queues the current (full) frame, or drops and counts it if the queue is full.
    fn ship(&mut self) {
        match self.frames.try_reserve() {
            Ok(permit) => {
                let fresh = self
                    .spares
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(self.frame_bytes));
                permit.send(std::mem::replace(&mut self.current, fresh));
            }
            Err(TrySendError::Full(())) => {
                self.drops.note(self.current.len() / 2);
                self.current.clear();
            }
            // The stream has ended and said why; the audio has nowhere to go.
            Err(TrySendError::Closed(())) => self.current.clear(),
        }
    }

    /// Pads a partial frame with silence and queues it (services want whole frames, and
    /// AssemblyAI refuses messages under 50 ms).
    fn ship_partial(&mut self) {
        if !self.current.is_empty() {
            self.current.resize(self.frame_bytes, 0);
            self.ship();
        }
    }
}

impl SttInput for FrameInput {
    fn push_audio(&mut self, mut samples: &[f32]) {
        while !samples.is_empty() {
            let room = (self.frame_bytes - self.current.len()) / 2;
            let (now, later) = samples.split_at(room.min(samples.len()));
            encode_pcm16(now, &mut self.current);
            samples = later;
            if self.current.len() >= self.frame_bytes {
                self.ship();
            }
        }
    }

    fn flush(&mut self) {
        self.ship_partial();
        self.flush.notify_one();
    }
}

impl Drop for FrameInput {
    /// Sends what is left; the writer then sends the close message once the queue is empty.
    fn drop(&mut self) {
        self.ship_partial();
    }
}

/// Counts dropped audio and says so in the log, at most once a second.
struct DropLog {
    label: &'static str,
    rate: u32,
    total: Arc<AtomicU64>,
    unlogged: u64,
    last: Option<std::time::Instant>,
}

impl DropLog {
    fn note(&mut self, samples: usize) {
        self.total.fetch_add(samples as u64, Ordering::Relaxed);
        self.unlogged += samples as u64;
        let now = std::time::Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(
                provider = self.label,
                dropped_ms = self.unlogged * 1000 / self.rate as u64,
                total_dropped_ms = self.total.load(Ordering::Relaxed) * 1000 / self.rate as u64,
                "speech-to-text service is behind: audio dropped"
            );
            self.unlogged = 0;
            self.last = Some(now);
        }
    }
}

/// Sends queued frames, the flush message after the audio before it, keep-alives when no
/// audio flows, and pings; sends the close message when the input is dropped, then tells the
/// reader (`closing`) and ends.
async fn write_loop<P: StreamProtocol>(
    mut sink: SplitSink<WsStream, Message>,
    mut frames: mpsc::Receiver<Vec<u8>>,
    spares: mpsc::Sender<Vec<u8>>,
    flush: Arc<Notify>,
    closing: oneshot::Sender<()>,
    ping_every: Duration,
) {
    let keep_alive = tokio::time::sleep(KEEP_ALIVE_AFTER);
    tokio::pin!(keep_alive);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sends a frame and returns its buffer for reuse.
    async fn send_frame(
        sink: &mut SplitSink<WsStream, Message>,
        spares: &mpsc::Sender<Vec<u8>>,
        mut frame: Vec<u8>,
    ) -> Result<(), WsError> {
        let message = Message::Binary(Bytes::copy_from_slice(&frame));
        frame.clear();
        let _ = spares.try_send(frame);
        sink.send(message).await
    }
    let result: Result<(), WsError> = async {
        loop {
            tokio::select! {
                biased;
                _ = flush.notified() => {
                    // Everything queued before the flush goes first.
                    while let Ok(frame) = frames.try_recv() {
                        send_frame(&mut sink, &spares, frame).await?;
                    }
                    sink.send(Message::text(P::FLUSH)).await?;
                    keep_alive.as_mut().reset(Instant::now() + KEEP_ALIVE_AFTER);
                }
                frame = frames.recv() => match frame {
                    Some(frame) => {
                        send_frame(&mut sink, &spares, frame).await?;
                        keep_alive.as_mut().reset(Instant::now() + KEEP_ALIVE_AFTER);
                    }
                    None => {
                        sink.send(Message::text(P::CLOSE)).await?;
                        let _ = closing.send(());
                        return Ok(());
                    }
                },
                _ = &mut keep_alive => {
                    sink.send(Message::text(P::KEEP_ALIVE)).await?;
                    keep_alive.as_mut().reset(Instant::now() + KEEP_ALIVE_AFTER);
                }
                _ = ping.tick() => sink.send(Message::Ping(Bytes::new())).await?,
            }
        }
    }
    .await;
    if let Err(e) = result {
        // The reader sees the same failure on its side and reports it.
        tracing::debug!(error = %e, "speech-to-text writer stopped");
    }
}

/// Turns the service's messages into events until the stream ends.
struct Reader<P> {
    protocol: P,
    tx: mpsc::Sender<SttEvent>,
    key: Option<ApiKey>,
    label: &'static str,
    idle_timeout: Duration,
}

impl<P: StreamProtocol> Reader<P> {
    async fn run(
        mut self,
        mut stream: SplitStream<WsStream>,
        mut closing: oneshot::Receiver<()>,
        writer: tokio::task::JoinHandle<()>,
    ) {
        let error = self.read(&mut stream, &mut closing).await;
        writer.abort();
        match error {
            Some(e) => {
                tracing::warn!(provider = self.label, error = %e, "speech-to-text stream failed");
                let _ = self.tx.send(SttEvent::Error(e)).await;
            }
            None => tracing::debug!(provider = self.label, "speech-to-text stream closed"),
        }
    }

    /// Reads until the end; the error to report, if the end was not the one asked for.
    async fn read(
        &mut self,
        stream: &mut SplitStream<WsStream>,
        closing: &mut oneshot::Receiver<()>,
    ) -> Option<ProviderError> {
        let mut out = Vec::new();
        let mut forwarding = true;
        let mut last_heard = Instant::now();
        // When the close message went out, and until when its answer is waited for.
        let mut close_by: Option<Instant> = None;
        let mut writer_done = false;
        loop {
            let idle_deadline = last_heard + self.idle_timeout;
            let deadline = close_by.map_or(idle_deadline, |c| c.min(idle_deadline));
            let message = tokio::select! {
                m = stream.next() => m,
                r = &mut *closing, if !writer_done => {
                    writer_done = true;
                    if r.is_ok() {
                        close_by = Some(Instant::now() + CLOSE_WAIT);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return if close_by.is_some() { None } else { Some(ProviderError::Timeout) };
                }
            };
            last_heard = Instant::now();
            let closing_asked = close_by.is_some();
            match message {
                Some(Ok(Message::Text(text))) => {
                    out.clear();
                    if let Err(e) = self.protocol.on_text(text.as_str(), &mut out) {
                        return Some(e);
                    }
                    for event in out.drain(..) {
                        if forwarding && self.tx.send(event).await.is_err() {
                            // Nobody listens any more; the stream ends when the input is dropped.
                            forwarding = false;
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match self.protocol.close_error(frame.as_ref()) {
                        Some(e) => Some(e),
                        None if closing_asked => None,
                        None => Some(ProviderError::Unavailable(
                            "the service ended the stream".into(),
                        )),
                    };
                }
                Some(Ok(Message::Binary(b))) => {
                    tracing::warn!(
                        provider = self.label,
                        bytes = b.len(),
                        "unexpected binary message from the speech-to-text service; skipped"
                    );
                }
                // Pongs (and pings, answered by the library) only show the service is there.
                Some(Ok(_)) => {}
                Some(Err(e)) if closing_asked => {
                    tracing::debug!(provider = self.label, error = %e, "stream ended while closing");
                    return None;
                }
                Some(Err(e)) => return Some(stream_error(e, self.key.as_ref())),
                None if closing_asked => return None,
                None => return Some(ProviderError::Unavailable("connection lost".into())),
            }
        }
    }
}

/// The error a failed read means: a connection dropped without a close frame is the service
/// being unavailable, not a protocol fault.
fn stream_error(e: WsError, key: Option<&ApiKey>) -> ProviderError {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ProviderError::Unavailable("connection lost".into())
        }
        other => ws::error(other, key),
    }
}

/// A JSON text message parsed into `T`, or a warning (without the message, which may hold
/// transcript text) and `None`.
fn parse_message<T: serde::de::DeserializeOwned>(label: &str, text: &str) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                provider = label,
                error = %e,
                bytes = text.len(),
                "malformed message from the speech-to-text service; skipped"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_have_the_right_scheme() {
        assert!(parse_url("wss://api.example.com/v1/listen", &["ws", "wss"]).is_ok());
        let e = parse_url("https://api.example.com/", &["ws", "wss"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid URL: scheme \"https\" is not ws or wss"
        );
        assert!(parse_url("not a url", &["ws"]).is_err());
    }

    #[test]
    fn auth_headers_are_left_out_without_a_key_and_refused_when_unsendable() {
        assert_eq!(auth_header(None, "Token ").unwrap(), None);
        assert_eq!(
            auth_header(Some(&ApiKey::new(" ")), "Token ").unwrap(),
            None
        );
        assert_eq!(
            auth_header(Some(&ApiKey::new("k1")), "Token ").unwrap(),
            Some("Token k1".into())
        );
        assert!(matches!(
            auth_header(Some(&ApiKey::new("bad\nkey")), ""),
            Err(SttSetupError::InvalidKey)
        ));
    }

    #[test]
    fn pings_come_twice_per_idle_timeout_at_most_every_five_seconds() {
        assert_eq!(ping_interval(Duration::from_secs(30)), KEEP_ALIVE_AFTER);
        assert_eq!(
            ping_interval(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
    }
}
