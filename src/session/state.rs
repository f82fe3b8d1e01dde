//! Session states and the events a session publishes.

use serde::Serialize;

/// What the agent is doing (the spec's `AgentState`, same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// `start()` is running (`on_enter` not yet done).
    Starting,
    /// Nothing to do.
    Idle,
    /// The user is talking and the agent listens.
    Listening,
    /// Waiting for the LLM (or a tool).
    Thinking,
    /// Its audio is playing.
    Speaking,
    /// `close()` or `leave()` was called.
    Closing,
}

/// What the user is doing (the spec's `UserState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Silent.
    Idle,
    /// Talking.
    Speaking,
    /// Listening to the agent.
    Listening,
}

/// Everything a session publishes on its event stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// The user state changed (never emitted for an unchanged state).
    UserStateChanged {
        /// The new state.
        state: UserState,
    },
    /// The agent state changed (never emitted for an unchanged state).
    AgentStateChanged {
        /// The new state.
        state: AgentState,
    },
    /// A transcript of the user's speech.
    UserTranscript {
        /// The text.
        text: String,
        /// Final (part of the turn) or interim.
        is_final: bool,
    },
    /// The end-of-utterance decision closed a user turn with this text.
    UserTurn {
        /// The accumulated final transcripts.
        text: String,
    },
    /// The agent's full reply text for a turn (after the LLM text hook).
    AgentText {
        /// The text.
        text: String,
    },
    /// The LLM called a tool.
    ToolCalled {
        /// Tool name.
        name: String,
        /// Arguments as JSON text.
        arguments: String,
    },
    /// A tool returned another agent, which is now active.
    AgentSwitched,
    /// The agent was interrupted by the user or by `interrupt()`.
    Interrupted,
    /// The agent paused for a possible false interruption.
    SpeechPaused,
    /// The agent resumed after a false interruption.
    SpeechResumed,
    /// The wake-up timer fired.
    WakeUp,
    /// The voicemail classifier decided (once per session).
    Voicemail {
        /// An answering machine picked up.
        detected: bool,
    },
    /// A background sound started or stopped (also when a non-looping one ended).
    BackgroundAudio {
        /// Playing from now on.
        playing: bool,
    },
    /// A provider failed; the session goes on (the text says what happened, without secrets).
    Error {
        /// Which component.
        component: &'static str,
        /// What failed.
        message: String,
    },
    /// A finished turn's timings.
    TurnMetrics(super::metrics::TurnMetrics),
    /// A warm transfer moved to `phase` (the reference's `warm_transfer` event).
    WarmTransfer {
        /// Where the transfer is.
        phase: crate::telephony::warm_transfer::WarmTransferPhase,
        /// The phase's details (summary, reason, call ids).
        data: serde_json::Value,
    },
}
