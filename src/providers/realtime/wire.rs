//! What every realtime adapter shares on the wire: the audio queue between
//! [`RealtimeInput::push_audio`] and the connection's task, and base64 PCM16 both ways.
//!
//! The session pushes from its audio path, which must never wait on the network, so pushing
//! only converts the samples to PCM16 into a buffer allocated up front (under a lock held for
//! the copy) and wakes the connection's task; the task swaps the buffer for its own empty one
//! and sends what it holds. Neither side allocates once running. When the task falls behind
//! by more than the buffer holds (a stalled network), new audio is dropped and counted: late
//! speech is worth less than the speech after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use tokio::sync::Notify;

use super::{RealtimeEvent, RealtimeInput};
use crate::agent::context::ChatRole;
use crate::audio::pcm::{decode_pcm16, encode_pcm16};
use crate::providers::http::ApiKey;
use crate::providers::ws;
use crate::providers::ProviderError;

/// What the session's side and the connection's task share.
pub(crate) struct AudioQueue {
    pcm: Mutex<Vec<u8>>,
    capacity: usize,
    ready: Notify,
    dropped: AtomicU64,
}

impl AudioQueue {
    /// A queue holding up to `max_samples` samples (PCM16: twice as many bytes).
    pub(crate) fn new(max_samples: usize) -> Arc<Self> {
        let capacity = max_samples.max(1) * 2;
        Arc::new(AudioQueue {
            pcm: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        })
    }

    /// An empty buffer of the queue's size, for [`AudioQueue::take`] to swap in.
    pub(crate) fn spare(&self) -> Vec<u8> {
        Vec::with_capacity(self.capacity)
    }

    /// Appends `samples` as PCM16, dropping (and counting) what does not fit.
    pub(crate) fn push(&self, samples: &[f32]) {
        {
            let mut pcm = self.pcm.lock().unwrap_or_else(|e| e.into_inner());
            let room = (self.capacity - pcm.len()) / 2;
            let n = samples.len().min(room);
            encode_pcm16(&samples[..n], &mut pcm);
            if n < samples.len() {
                self.dropped
                    .fetch_add((samples.len() - n) as u64, Ordering::Relaxed);
            }
        }
        self.ready.notify_one();
    }

    /// Swaps the queued PCM16 bytes into `into` (which must be empty, and keeps its capacity
    /// for the next swap). Returns whether there was any.
    pub(crate) fn take(&self, into: &mut Vec<u8>) -> bool {
        debug_assert!(into.is_empty());
        let mut pcm = self.pcm.lock().unwrap_or_else(|e| e.into_inner());
        if pcm.is_empty() {
            return false;
        }
        std::mem::swap(&mut *pcm, into);
        true
    }

    /// Waits until audio may have been queued since the last wake-up.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }

    /// Samples dropped since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// The [`RealtimeInput`] every adapter returns.
pub(crate) struct QueuedInput(pub(crate) Arc<AudioQueue>);

impl RealtimeInput for QueuedInput {
    fn push_audio(&mut self, samples: &[f32]) {
        if !samples.is_empty() {
            self.0.push(samples);
        }
    }
}

/// Appends `pcm` (PCM16 bytes) to `out` as base64, the encoding both services take audio in.
pub(crate) fn encode_audio(pcm: &[u8], out: &mut String) {
    BASE64.encode_string(pcm, out);
}

/// The samples of a base64 PCM16 chunk, decoded through `scratch` (reused between calls). An
/// odd byte count (half a sample) is a protocol error: both services send whole samples.
pub(crate) fn decode_audio(b64: &str, scratch: &mut Vec<u8>) -> Result<Vec<f32>, ProviderError> {
    scratch.clear();
    BASE64
        .decode_vec(b64.as_bytes(), scratch)
        .map_err(|e| ProviderError::Protocol(format!("audio is not valid base64: {e}")))?;
    let mut samples = Vec::with_capacity(scratch.len() / 2);
    if decode_pcm16(scratch, &mut samples) {
        return Err(ProviderError::Protocol(
            "audio chunk ends in half a PCM16 sample".into(),
        ));
    }
    Ok(samples)
}

/// The error a failed read or write on an open connection means. A connection that ends
/// without a closing handshake (a cut cable, a killed server) is [`ProviderError::Unavailable`].
pub(crate) fn stream_error(
    e: tokio_tungstenite::tungstenite::Error,
    key: Option<&ApiKey>,
) -> ProviderError {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ProviderError::Unavailable("connection lost".into())
        }
        e => ws::error(e, key),
    }
}

/// `url` parsed and checked to be a WebSocket URL (`ws://` or `wss://`); the reason otherwise.
pub(crate) fn websocket_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(format!("scheme {:?} is not ws(s)", parsed.scheme()));
    }
    Ok(parsed)
}

/// The user's words as the model heard them.
pub(super) fn user(text: String, is_final: bool) -> RealtimeEvent {
    RealtimeEvent::Transcript {
        role: ChatRole::User,
        text,
        is_final,
    }
}

/// The model's words as it speaks them.
pub(super) fn assistant(text: String, is_final: bool) -> RealtimeEvent {
    RealtimeEvent::Transcript {
        role: ChatRole::Assistant,
        text,
        is_final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_audio_is_handed_over_as_pcm16_and_overflow_is_counted() {
        let q = AudioQueue::new(4);
        let mut input = QueuedInput(q.clone());
        input.push_audio(&[0.5, -0.5]);
        input.push_audio(&[1.0, 0.0, 0.25]);
        let mut got = q.spare();
        assert!(q.take(&mut got));
        assert_eq!(got.len(), 8, "four samples fit");
        assert_eq!(&got[..2], &16384i16.to_le_bytes());
        assert_eq!(q.take_dropped(), 1);
        got.clear();
        assert!(!q.take(&mut got), "nothing new");
        input.push_audio(&[0.1]);
        assert!(q.take(&mut got));
        assert_eq!(got.len(), 2, "the swapped-in buffer took new audio");
    }

    #[test]
    fn audio_round_trips_through_base64_and_half_samples_are_refused() {
        let mut pcm = Vec::new();
        encode_pcm16(&[0.5, -0.25], &mut pcm);
        let mut b64 = String::new();
        encode_audio(&pcm, &mut b64);
        assert_eq!(b64, "AEAA4A==");
        let mut scratch = Vec::new();
        assert_eq!(decode_audio(&b64, &mut scratch).unwrap(), [0.5, -0.25]);
        assert!(decode_audio("AAAA", &mut scratch).is_err(), "three bytes");
        assert!(decode_audio("not base64!", &mut scratch).is_err());
    }
}
