//! What the session needs from a speech-to-speech ("realtime") model: one long-lived connection
//! that hears the user, answers in speech or text, calls tools, and can be cut off mid-answer.
//!
//! The shape follows the two protocols it has to carry, so that an adapter is a translation and
//! never has to invent behaviour:
//!
//! | here | OpenAI Realtime (WebSocket) | Gemini Live (`BidiGenerateContent`) |
//! |---|---|---|
//! | [`Realtime::connect`] + [`RealtimeSetup`] | `session.update` (instructions, voice, tools, modalities, turn detection) | `setup` |
//! | [`RealtimeInput::push_audio`] | `input_audio_buffer.append` (PCM16, 24 kHz) | `realtimeInput.audio` (PCM16, 16 kHz) |
//! | [`RealtimeCommand::UpdateSession`] | `session.update` | a new `setup` is not allowed: reconnect with the new one |
//! | [`RealtimeCommand::SendText`] | `conversation.item.create` (user `input_text`) | `clientContent` with `turnComplete: false` |
//! | [`RealtimeCommand::CreateResponse`] | `response.create` (with `instructions` when given) | `clientContent` with `turnComplete: true` |
//! | [`RealtimeCommand::ToolOutput`] | `conversation.item.create` (`function_call_output`) | `toolResponse.functionResponses` |
//! | [`RealtimeCommand::Cancel`] | `response.cancel` | (stops on its own; see the command) |
//! | [`RealtimeCommand::Truncate`] | `conversation.item.truncate` (`audio_end_ms`) | nothing to send |
//! | [`RealtimeEvent::UserSpeechStarted`] / `Ended` | `input_audio_buffer.speech_started` / `speech_stopped` | `serverContent.interrupted` only (the session's own VAD covers the rest) |
//! | [`RealtimeEvent::Audio`] | `response.output_audio.delta` | `serverContent.modelTurn` inline audio |
//! | [`RealtimeEvent::Transcript`] | input transcription, `response.output_audio_transcript.*`, `response.output_text.*` | `inputTranscription` / `outputTranscription`, model text |
//! | [`RealtimeEvent::ToolCall`] | `response.function_call_arguments.done` | `toolCall.functionCalls` |
//! | [`RealtimeEvent::ResponseDone`] | `response.done` (any status) | `serverContent.turnComplete` |
//!
//! The session, not the service, decides barge-in (it honours utterances that must not be
//! interrupted, and knows how much audio was really played), so adapters configure the service
//! not to cut its own answers when it hears the user where the protocol allows (OpenAI
//! `turn_detection.interrupt_response: false`) and report the user's speech instead.
//!
//! The adapters: [`openai`] (OpenAI Realtime over WebSocket) and [`gemini`] (Gemini Live).

pub mod gemini;
pub mod openai;
mod wire;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{ProviderError, ToolCallRequest};
use crate::agent::context::ChatRole;
use crate::agent::ToolSpec;

/// How the model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealtimeModality {
    /// Speech (with a transcript): the model is the agent's voice.
    Audio,
    /// Text only: a separate text-to-speech speaks it (the hybrid mode with external TTS, and
    /// the model used as a plain LLM), so no audio is generated and paid for.
    Text,
}

/// What a connection starts with: the active agent and how the session will use the model.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeSetup {
    /// The active agent's instructions (the system prompt).
    pub instructions: String,
    /// The tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// How it answers.
    pub modality: RealtimeModality,
    /// Whether user audio will be pushed. Without it (user turns arrive as text from an
    /// external speech-to-text) the adapter can turn off the service's turn detection and
    /// input transcription.
    pub audio_input: bool,
}

/// The audio side of a connection. Called on the audio path: must not block.
pub trait RealtimeInput: Send {
    /// Queues mono samples at [`Realtime::input_rate`]; drops (and counts) audio if the
    /// connection is behind rather than blocking.
    fn push_audio(&mut self, samples: &[f32]);
}

/// What the session asks of an open connection.
#[derive(Debug, Clone, PartialEq)]
pub enum RealtimeCommand {
    /// The active agent changed (a hand-off): new instructions and tools from now on.
    UpdateSession {
        /// The new agent's instructions.
        instructions: String,
        /// The new agent's tools.
        tools: Vec<ToolSpec>,
    },
    /// A user turn given as text (external speech-to-text, or `reply()`); it joins the
    /// conversation but is not answered until [`RealtimeCommand::CreateResponse`].
    SendText(String),
    /// Answer now. `instructions` apply to this answer only (the session's `say()` uses them
    /// to have words spoken verbatim without adding a fake user turn). Every response, asked
    /// for or started by the service on its own, ends with exactly one
    /// [`RealtimeEvent::ResponseDone`], also when cancelled or failed: the session counts on
    /// it. Services that answer tool outputs by themselves (Gemini Live) treat a
    /// `CreateResponse` right after [`RealtimeCommand::ToolOutput`]s as that answer.
    CreateResponse {
        /// One-off instructions for this response.
        instructions: Option<String>,
    },
    /// The result of a [`RealtimeEvent::ToolCall`]; the model continues only after a
    /// [`RealtimeCommand::CreateResponse`] (none follows when the call ended the turn: a
    /// hand-off, the end of the call, the tool-depth limit).
    ToolOutput {
        /// The call's id.
        call_id: String,
        /// The tool's name (Gemini's function responses carry it).
        name: String,
        /// The output, or the error text.
        output: String,
        /// Whether the tool failed (the model should apologise or retry, not trust `output`).
        is_error: bool,
    },
    /// Stop the response in progress, or one asked for that has not started yet. A service
    /// that already stopped on its own when the user spoke has nothing to do.
    Cancel,
    /// The user heard only the first `played_ms` of this item's audio: the service drops the
    /// rest and its transcript, so the model does not believe it said what nobody heard.
    /// (The reference Python never sends this, so its model remembers whole answers the user
    /// cut off.)
    Truncate {
        /// The assistant item whose audio was cut.
        item_id: String,
        /// Milliseconds of it actually played to the user.
        played_ms: u32,
    },
}

/// What an open connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum RealtimeEvent {
    /// The service's voice activity detection heard the user start speaking (a barge-in
    /// signal when the agent is talking).
    UserSpeechStarted,
    /// The user stopped speaking; the service will usually answer.
    UserSpeechEnded,
    /// Part of the answer's speech: mono samples at [`Realtime::output_rate`].
    Audio {
        /// The assistant item the audio belongs to (what [`RealtimeCommand::Truncate`] names).
        item_id: String,
        /// The samples.
        samples: Vec<f32>,
    },
    /// A transcript: the user's words (audio input) or the model's (its speech, or its text
    /// answer with [`RealtimeModality::Text`]). Non-final pieces extend the message so far;
    /// a final one carries the message's whole text, and every message gets one.
    Transcript {
        /// Whose words.
        role: ChatRole,
        /// A piece (non-final) or the whole message (final).
        text: String,
        /// Whether the message is complete.
        is_final: bool,
    },
    /// The model wants a tool run (arguments complete).
    ToolCall(ToolCallRequest),
    /// The current response is over (complete, cancelled or failed): everything it will say
    /// has been sent, though the session may still be playing it.
    ResponseDone,
    /// Something failed but the connection is still usable (a refused command, a failed
    /// response). A closed event channel means the connection itself is gone.
    Error(ProviderError),
}

/// An open connection. Dropping it (all three parts) closes it.
pub struct RealtimeSession {
    /// Where the user's audio goes.
    pub input: Box<dyn RealtimeInput>,
    /// Where commands go. Unbounded because the session's task must never wait on the
    /// network; commands are few (a handful per turn) and small.
    pub commands: mpsc::UnboundedSender<RealtimeCommand>,
    /// Where events come from; closed when the connection ends.
    pub events: mpsc::Receiver<RealtimeEvent>,
}

/// A speech-to-speech model service (OpenAI Realtime, Gemini Live).
#[async_trait]
pub trait Realtime: Send + Sync {
    /// Provider name for logs and metrics.
    fn label(&self) -> &str;
    /// The rate it wants audio at (OpenAI 24 kHz, Gemini 16 kHz).
    fn input_rate(&self) -> u32 {
        24_000
    }
    /// The rate of the audio it produces (24 kHz for both).
    fn output_rate(&self) -> u32 {
        24_000
    }
    /// Opens a connection configured with `setup`.
    async fn connect(&self, setup: RealtimeSetup) -> Result<RealtimeSession, ProviderError>;

    /// Whether the service answers and takes the key, without spending anything: what
    /// `hark check --online` asks. Opens a session (the upgrade carries the key; the service
    /// accepts the set-up) and closes it unused.
    async fn ping(&self) -> Result<(), ProviderError> {
        let setup = RealtimeSetup {
            instructions: String::new(),
            tools: Vec::new(),
            modality: RealtimeModality::Audio,
            audio_input: true,
        };
        self.connect(setup).await.map(drop)
    }
}
