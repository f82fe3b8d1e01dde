//! Hooks: application code that rewrites the text flowing through a session, and hears when
//! user and agent turns start and end (the spec's `PipelineHooks`, spec 40 §4).
//!
//! Text hooks are plain functions called on the session task, so they must be quick and never
//! block; start a task for slow work. The reference's `stt`/`tts` hooks replace whole provider
//! streams; here providers are traits, so a replacement is another provider, and the hooks
//! keep to the text: transcripts in, the text recorded for the agent, the text spoken.
//!
//! Differences from the reference, each a bug there:
//! - `user_turn_start` runs for every user turn, also one confirmed by preemptive generation
//!   (the reference skips it on that path);
//! - `agent_turn_end` runs for every `agent_turn_start`, also when the agent is interrupted
//!   (the reference only runs it at the last audio byte, leaving turns unbalanced).

use std::sync::Arc;

/// Rewrites text and observes turns. Every method has a pass-through default.
pub trait Hooks: Send + Sync {
    /// A transcript of the user (interim, preflight or final) before the session uses it;
    /// `None` drops it (e.g. a wake word, or noise the STT transcribed).
    fn stt_text(&self, text: String) -> Option<String> {
        Some(text)
    }

    /// The agent's complete reply as reported in [`super::SessionEvent::AgentText`] (for
    /// display, logs, redaction). As in the reference, the chat context keeps the LLM's own
    /// words, so the model is not confused by edits it did not make.
    fn llm_text(&self, text: String) -> String {
        text
    }

    /// Each sentence just before it goes to text-to-speech (pronunciations, markup removal).
    fn tts_text(&self, text: String) -> String {
        text
    }

    /// The user's turn was decided with this text, before it joins the chat context.
    fn user_turn_start(&self, _transcript: &str) {}

    /// The agent's answer to the user's turn is over (spoken, interrupted or failed).
    fn user_turn_end(&self) {}

    /// The agent starts speaking a reply (before text-to-speech starts).
    fn agent_turn_start(&self) {}

    /// The agent's reply has played out or was cut off.
    fn agent_turn_end(&self) {}
}

/// The session's hooks; by default none (every text passes unchanged).
#[derive(Clone)]
pub struct HookSet(pub Arc<dyn Hooks>);

struct NoHooks;
impl Hooks for NoHooks {}

impl Default for HookSet {
    fn default() -> Self {
        Self(Arc::new(NoHooks))
    }
}

impl std::fmt::Debug for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSet")
    }
}

impl<H: Hooks + 'static> From<Arc<H>> for HookSet {
    fn from(h: Arc<H>) -> Self {
        Self(h)
    }
}
