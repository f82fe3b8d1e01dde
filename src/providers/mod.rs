//! What the session needs from speech-to-text, LLM and text-to-speech services, as traits.
//!
//! Streams are tokio channels: a provider task sends, the session receives, and dropping the
//! receiver cancels (an interrupted reply stops its LLM and TTS that way). Implementations for
//! real services live in submodules ([`stt`], [`llm`], [`tts`], [`realtime`]) and [`fallback`]
//! chains them; tests script these traits. [`http`] holds what every HTTP provider shares: the
//! crate's one HTTP client, keys that cannot leak, error mapping and retries; [`ws`] is the one
//! WebSocket client, and [`tls`] the TLS both use. Speech-to-speech models have their own
//! trait, [`Realtime`].

pub mod fallback;
pub mod http;
pub mod llm;
pub mod realtime;
pub mod stt;
pub mod tls;
pub mod tts;
pub mod ws;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::agent::context::ChatContext;
use crate::agent::ToolSpec;
pub use realtime::{
    Realtime, RealtimeCommand, RealtimeEvent, RealtimeInput, RealtimeModality, RealtimeSession,
    RealtimeSetup,
};

/// Why a provider call failed. Messages never contain keys or secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The credentials were refused (HTTP 401/403 or the protocol's equivalent).
    #[error("authentication failed")]
    Auth,
    /// Too many requests; retry after the given time if the service said.
    #[error("rate limited")]
    RateLimited {
        /// The service's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The service failed or could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The service answered something we could not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

/// A transcript event from streaming speech-to-text.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// A hypothesis that may still change.
    Interim(String),
    /// An early, likely-final hypothesis (for preemptive generation).
    Preflight(String),
    /// A final transcript segment.
    Final {
        /// The text.
        text: String,
        /// The service's confidence, if given.
        confidence: Option<f32>,
    },
    /// The service failed; the stream ends after this.
    Error(ProviderError),
}

/// The audio side of a speech-to-text stream. Called on the audio path: must not block.
pub trait SttInput: Send {
    /// Queues mono samples at [`Stt::sample_rate`]; drops (and counts) audio if the service is
    /// behind rather than blocking.
    fn push_audio(&mut self, samples: &[f32]);
    /// The user stopped speaking: ask the service to finalise what it has.
    fn flush(&mut self);
}

/// An open speech-to-text stream.
pub struct SttSession {
    /// Where audio goes.
    pub input: Box<dyn SttInput>,
    /// Where transcripts come from; closed when the stream ends.
    pub events: mpsc::Receiver<SttEvent>,
}

/// Streaming speech-to-text.
#[async_trait]
pub trait Stt: Send + Sync {
    /// Provider name for logs and metrics.
    fn label(&self) -> &str;
    /// The rate it wants audio at.
    fn sample_rate(&self) -> u32 {
        16_000
    }
    /// Opens a stream.
    async fn connect(&self) -> Result<SttSession, ProviderError>;

    /// Whether the service answers and takes the key, without spending anything (no audio,
    /// no tokens): what `hark check --online` asks. The default is for providers with nothing
    /// to reach (in-process ones); every network provider overrides it.
    async fn ping(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A function call the LLM asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRequest {
    /// The id that ties the call to its output.
    pub call_id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// One piece of a streamed LLM answer.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// Text to speak.
    Text(String),
    /// A tool call (complete, arguments assembled).
    ToolCall(ToolCallRequest),
    /// Token usage.
    Usage {
        /// Prompt tokens.
        input_tokens: u32,
        /// Completion tokens.
        output_tokens: u32,
    },
}

/// What the LLM is asked.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The conversation so far (the system message holds the active agent's instructions).
    pub context: ChatContext,
    /// Tools it may call.
    pub tools: Vec<ToolSpec>,
}

/// A streamed answer; the channel closes at the end. Dropping it cancels the request.
pub type LlmStream = mpsc::Receiver<Result<LlmEvent, ProviderError>>;

/// A chat model with streaming and tool calls.
#[async_trait]
pub trait Llm: Send + Sync {
    /// Provider name for logs and metrics.
    fn label(&self) -> &str;
    /// Starts a streamed answer.
    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError>;

    /// Whether the service answers and takes the key, without spending anything (no audio,
    /// no tokens): what `hark check --online` asks. The default is for providers with nothing
    /// to reach (in-process ones); every network provider overrides it.
    async fn ping(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Synthesised audio: mono chunks at [`Tts::sample_rate`]; the channel closes at the end.
/// Dropping it cancels synthesis.
pub type AudioStream = mpsc::Receiver<Result<Vec<f32>, ProviderError>>;

/// Streaming text-to-speech: text arrives in segments, audio leaves in chunks.
#[async_trait]
pub trait Tts: Send + Sync {
    /// Provider name for logs and metrics.
    fn label(&self) -> &str;
    /// The rate of the audio it produces.
    fn sample_rate(&self) -> u32;
    /// Starts synthesising what arrives on `text` (closed when the reply's text is complete).
    async fn synthesize(&self, text: mpsc::Receiver<String>) -> Result<AudioStream, ProviderError>;

    /// Whether the service answers and takes the key, without spending anything (no audio,
    /// no tokens): what `hark check --online` asks. The default is for providers with nothing
    /// to reach (in-process ones); every network provider overrides it.
    async fn ping(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Sleeps until `deadline`, or forever without one: the arm of a `select!` for an optional
/// timeout (a stall, a keep-alive).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
