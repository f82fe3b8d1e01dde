//! Voicemail detection for outbound calls: after the first seconds of what the callee says,
//! ask the LLM whether an answering machine picked up (the spec's `VoiceMailDetector`,
//! spec 10 §3.11 and spec 40 §5.3).
//!
//! Differences from the reference, each a bug there:
//! - the reference's prompt asks "determine if a human answered or if the call went to
//!   voicemail … answer yes or no", which has no yes/no reading; ours asks one question;
//! - the reference counts `"yes" in answer`, so "eyes" or "yes, a human" flip it; ours reads
//!   the first word only.

use std::time::Duration;

use crate::agent::context::{ChatContext, ChatRole};
use crate::providers::{Llm, LlmEvent, LlmRequest, ProviderError};

/// How long the callee's speech is collected before asking (the reference's 2.0 s).
pub const DEFAULT_LISTEN: Duration = Duration::from_secs(2);

/// The classifier's instructions when none are configured.
pub const DEFAULT_PROMPT: &str = "You classify the start of an outbound phone call. A bot \
called a number; below is a transcript of what the callee said first. Did the call reach a \
voicemail greeting or an answering machine rather than a live person? Answer with one word: \
yes or no.";

/// What the session does once voicemail is detected.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum VoicemailAction {
    /// Hang up at once.
    #[default]
    HangUp,
    /// Say this message (after the greeting's beep, when the callee's greeting is done), then
    /// hang up.
    LeaveMessage(String),
    /// Only report it (a [`crate::session::SessionEvent::Voicemail`] event); the application
    /// decides.
    Report,
}

/// Voicemail detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VoicemailOptions {
    /// How long to collect the callee's transcript, from its first final transcript.
    pub listen: Duration,
    /// The classifier's instructions (a yes/no question), [`DEFAULT_PROMPT`] by default.
    pub prompt: String,
    /// What to do on "yes".
    pub action: VoicemailAction,
}

impl Default for VoicemailOptions {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            prompt: DEFAULT_PROMPT.to_string(),
            action: VoicemailAction::default(),
        }
    }
}

/// Asks `llm` whether `transcript` is a voicemail greeting. An empty transcript is not.
pub async fn classify(
    llm: &dyn Llm,
    prompt: &str,
    transcript: &str,
) -> Result<bool, ProviderError> {
    if transcript.trim().is_empty() {
        return Ok(false);
    }
    let mut context = ChatContext::new();
    context.add_message(ChatRole::System, prompt.to_string());
    context.add_message(
        ChatRole::User,
        format!("Text to classify: {}", transcript.trim()),
    );
    let mut stream = llm
        .chat(LlmRequest {
            context,
            tools: Vec::new(),
        })
        .await?;
    let mut answer = String::new();
    while let Some(ev) = stream.recv().await {
        if let LlmEvent::Text(t) = ev? {
            answer.push_str(&t);
        }
    }
    Ok(is_yes(&answer))
}

/// Whether an answer's first word is "yes" (any case, punctuation ignored).
pub fn is_yes(answer: &str) -> bool {
    answer
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())
        .is_some_and(|w| w.eq_ignore_ascii_case("yes"))
}

#[cfg(test)]
mod tests {
    use super::is_yes;

    #[test]
    fn only_a_leading_yes_counts_unlike_the_reference_substring_test() {
        assert!(is_yes("Yes"));
        assert!(is_yes(" yes."));
        assert!(is_yes("**YES**"));
        assert!(!is_yes("No"));
        assert!(!is_yes("no, a person said yes"));
        assert!(!is_yes("eyes"));
        assert!(!is_yes(""));
    }
}
