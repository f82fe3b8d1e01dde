//! `[agent]`: a conversational agent defined in `hark.toml` rather than in Rust.
//!
//! An installer gives the agent its instructions, a greeting, the built-in call tools it may
//! use, HTTP webhooks and MCP servers as further tools, and the conversation's timing (end of
//! utterance, barge-in, the wake-up timer). [`AgentConfig::session_options`] turns the timing
//! into [`SessionOptions`]; [`crate::agent::configured::ConfiguredAgent`] turns the rest into an
//! [`crate::agent::Agent`].
//!
//! Keys are lowercase (`mode = "adaptive"`, `mode = "vad_only"`); the Python framework's
//! uppercase spelling is accepted too. Rules spanning several keys (min < max, unique tool
//! names) are checked by [`AgentConfig::validate`], whose [`AgentIssue`] names the key so the
//! config loader can point at its line.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::dtmf::DtmfConfig;
use crate::agent::builtin::BuiltinTool;
use crate::agent::mcp::{McpError, McpServerConfig};
use crate::agent::webhook::{WebhookConfig, WebhookError};
use crate::audio::mixer::{Clip, ClipError, DEFAULT_THINKING_VOLUME};
use crate::session::{
    EouConfig, EouMode, InterruptConfig, InterruptMode, SessionOptions, ThinkingAudio, WakeUp,
};
use crate::telephony::voicemail::{self, VoicemailAction, VoicemailOptions};
use crate::telephony::warm_transfer::WarmTransferOptions;

/// `[agent]`: who the agent is, what it may do, and how the conversation is timed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The system instructions given to the LLM. Required: an agent without them is a
    /// configuration mistake, not a default.
    pub instructions: String,
    /// Said by the agent when it starts (and when it takes over after a hand-off); none: the
    /// agent waits for the user to speak first.
    #[serde(default)]
    pub greeting: Option<String>,
    /// Call controls the LLM may use: `end_call`, `transfer_call`, `send_dtmf`.
    #[serde(default)]
    pub builtin_tools: Vec<BuiltinTool>,
    /// LLM rounds per reply, tool calls included (1 = tools are never answered back).
    #[serde(default = "AgentConfig::default_max_tool_depth")]
    pub max_tool_depth: usize,
    /// Seconds one tool call may take before the LLM is told it timed out.
    #[serde(default = "AgentConfig::default_tool_timeout")]
    pub tool_timeout: f64,
    /// Keep the chat context to this many items (the instructions are always kept); none:
    /// unbounded.
    #[serde(default)]
    pub max_context_items: Option<usize>,
    /// `[agent.eou]`: when the user's turn is over.
    #[serde(default)]
    pub eou: AgentEouConfig,
    /// `[agent.interrupt]`: when the user may talk over the agent.
    #[serde(default)]
    pub interrupt: AgentInterruptConfig,
    /// `[agent.wake_up]`: what to do when nobody speaks; none: wait forever.
    #[serde(default)]
    pub wake_up: Option<WakeUpConfig>,
    /// Start the LLM on the STT's early transcript and speak once the final one confirms it
    /// (needs an STT that sends preflight transcripts).
    #[serde(default)]
    pub preemptive_generation: bool,
    /// `[agent.voicemail]`: detect answering machines at the start of a call; none: off.
    #[serde(default)]
    pub voicemail: Option<VoicemailConfig>,
    /// `[agent.warm_transfer]`: the supervisor the `warm_transfer` tool briefs and hands the
    /// caller to; none: no warm transfer.
    #[serde(default)]
    pub warm_transfer: Option<WarmTransferConfig>,
    /// `[agent.thinking_audio]`: a sound looped while the LLM works; none: silence.
    #[serde(default)]
    pub thinking_audio: Option<ThinkingAudioConfig>,
    /// `[[agent.webhooks]]`: HTTP endpoints the LLM may call.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// `[[agent.mcp_servers]]`: MCP servers whose tools the LLM may call.
    #[serde(default)]
    pub mcp_servers: Vec<McpServerConfig>,
    /// `[agent.dtmf]`: keys a caller presses mapped to actions, or collected for the LLM.
    #[serde(default)]
    pub dtmf: DtmfConfig,
}

/// `[agent.eou]`: the end-of-utterance wait (the spec's `EOUConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentEouConfig {
    /// `"default"`: `max_speech_wait` while the turn detector is unsure (p < 0.85), else
    /// `min_speech_wait`; `"adaptive"`: sliding between them with the probability.
    #[serde(deserialize_with = "eou_mode")]
    pub mode: EouMode,
    /// Seconds to wait for more speech when the turn is surely over.
    pub min_speech_wait: f64,
    /// Seconds to wait for more speech when it may not be.
    pub max_speech_wait: f64,
}

impl Default for AgentEouConfig {
    fn default() -> Self {
        let d = EouConfig::default();
        Self {
            mode: d.mode,
            min_speech_wait: d.min_max_speech_wait_timeout[0],
            max_speech_wait: d.min_max_speech_wait_timeout[1],
        }
    }
}

impl AgentEouConfig {
    /// As the session takes it.
    pub fn to_eou(&self) -> EouConfig {
        EouConfig {
            mode: self.mode,
            min_max_speech_wait_timeout: [self.min_speech_wait, self.max_speech_wait],
        }
    }
}

/// `[agent.interrupt]`: barge-in (the spec's `InterruptConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentInterruptConfig {
    /// `"hybrid"` (speech or words), `"vad_only"` (speech), `"stt_only"` (words).
    #[serde(deserialize_with = "interrupt_mode")]
    pub mode: InterruptMode,
    /// Seconds of continuous user speech that interrupt the agent.
    pub min_duration: f64,
    /// Words in a transcript that interrupt the agent.
    pub min_words: usize,
    /// Seconds the agent stays paused before deciding an interruption was false.
    pub false_interrupt_pause: f64,
    /// Pause instead of stopping, and go on speaking if the user said nothing after all.
    pub resume_on_false_interrupt: bool,
}

impl Default for AgentInterruptConfig {
    fn default() -> Self {
        let d = InterruptConfig::default();
        Self {
            mode: d.mode,
            min_duration: d.interrupt_min_duration,
            min_words: d.interrupt_min_words,
            false_interrupt_pause: d.false_interrupt_pause_duration,
            resume_on_false_interrupt: d.resume_on_false_interrupt,
        }
    }
}

impl AgentInterruptConfig {
    /// As the session takes it.
    pub fn to_interrupt(&self) -> InterruptConfig {
        InterruptConfig {
            mode: self.mode,
            interrupt_min_duration: self.min_duration,
            interrupt_min_words: self.min_words,
            false_interrupt_pause_duration: self.false_interrupt_pause,
            resume_on_false_interrupt: self.resume_on_false_interrupt,
        }
    }
}

/// `[agent.wake_up]`: the inactivity timer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeUpConfig {
    /// Seconds of silence (nobody speaking) before it fires.
    pub after: f64,
    /// What the agent says when it fires; none: the session ends at the first firing.
    #[serde(default)]
    pub prompt: Option<String>,
    /// How many times the prompt is said before the agent gives up.
    #[serde(default = "WakeUpConfig::default_max_prompts")]
    pub max_prompts: u32,
    /// Said once before the session ends (and the call is hung up).
    #[serde(default)]
    pub goodbye: Option<String>,
}

impl WakeUpConfig {
    fn default_max_prompts() -> u32 {
        1
    }
}

/// `[agent.voicemail]`: the LLM classifies the callee's first words.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoicemailConfig {
    /// Seconds of the callee's speech collected before asking.
    #[serde(default = "VoicemailConfig::default_listen")]
    pub listen: f64,
    /// The classifier's yes/no question; none: the built-in one.
    #[serde(default)]
    pub prompt: Option<String>,
    /// `"hang_up"`, `"leave_message"` (says `message` after the greeting, then hangs up) or
    /// `"report"` (an event only).
    #[serde(default)]
    pub action: VoicemailActionName,
    /// The message left with `action = "leave_message"`.
    #[serde(default)]
    pub message: Option<String>,
}

/// `[agent.warm_transfer]`: hold, brief a supervisor, join them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmTransferConfig {
    /// The supervisor's SIP URI (`sip:user@host`).
    pub destination: String,
    /// The summariser's instructions; none: the built-in ones.
    #[serde(default)]
    pub summary_prompt: Option<String>,
    /// Seconds the supervisor has to answer and be heard.
    #[serde(default = "WarmTransferConfig::default_join")]
    pub supervisor_join_timeout: f64,
    /// Seconds the briefing may take before the transfer is given up.
    #[serde(default = "WarmTransferConfig::default_briefing")]
    pub briefing_timeout: f64,
    /// A WAV file (any rate) looped to the caller while they are on hold, so the line does
    /// not sound dead; none: silence after the hold line.
    #[serde(default)]
    pub hold_music: Option<PathBuf>,
}

impl WarmTransferConfig {
    fn default_join() -> f64 {
        120.0
    }

    fn default_briefing() -> f64 {
        180.0
    }

    /// The transfer's options for a session whose output runs at `rate` (the hold music is
    /// loaded and resampled here, once).
    pub fn to_options(&self, rate: u32) -> Result<WarmTransferOptions, SoundError> {
        let hold_music = self
            .hold_music
            .as_ref()
            .map(|f| Clip::load(f, rate))
            .transpose()
            .map_err(|source| SoundError {
                key: "warm_transfer.hold_music",
                source,
            })?;
        Ok(WarmTransferOptions {
            summary_prompt: self.summary_prompt.clone(),
            supervisor_join_timeout: Duration::from_secs_f64(self.supervisor_join_timeout),
            briefing_timeout: Duration::from_secs_f64(self.briefing_timeout),
            hold_music,
            ..WarmTransferOptions::new(self.destination.trim())
        })
    }
}

/// The voicemail actions as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoicemailActionName {
    /// Hang up at once.
    #[default]
    HangUp,
    /// Leave `message`, then hang up.
    LeaveMessage,
    /// Only report it.
    Report,
}

impl VoicemailConfig {
    fn default_listen() -> f64 {
        voicemail::DEFAULT_LISTEN.as_secs_f64()
    }

    /// The session's voicemail options.
    pub fn to_options(&self) -> VoicemailOptions {
        VoicemailOptions {
            listen: Duration::from_secs_f64(self.listen),
            prompt: self
                .prompt
                .clone()
                .unwrap_or_else(|| voicemail::DEFAULT_PROMPT.to_string()),
            action: match self.action {
                VoicemailActionName::HangUp => VoicemailAction::HangUp,
                VoicemailActionName::LeaveMessage => {
                    VoicemailAction::LeaveMessage(self.message.clone().unwrap_or_default())
                }
                VoicemailActionName::Report => VoicemailAction::Report,
            },
        }
    }
}

/// `[agent.thinking_audio]`: a WAV file looped under silence while the agent thinks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinkingAudioConfig {
    /// The WAV file (any rate; resampled once when loaded).
    pub file: PathBuf,
    /// Its gain (the reference's 0.3).
    #[serde(default = "ThinkingAudioConfig::default_volume")]
    pub volume: f32,
}

impl ThinkingAudioConfig {
    fn default_volume() -> f32 {
        DEFAULT_THINKING_VOLUME
    }

    /// Loads the sound for a session whose output runs at `rate`.
    pub fn load(&self, rate: u32) -> Result<ThinkingAudio, ClipError> {
        Ok(ThinkingAudio {
            clip: Clip::load(&self.file, rate)?,
            volume: self.volume,
        })
    }
}

/// A sound file an `[agent]` section names that cannot be played.
#[derive(Debug, thiserror::Error)]
#[error("agent.{key}: {source}")]
pub struct SoundError {
    /// The key naming the file (`thinking_audio.file`, `warm_transfer.hold_music`).
    pub key: &'static str,
    /// Why it cannot be played (the WAV error names the file).
    #[source]
    pub source: ClipError,
}

/// A rule an `[agent]` section breaks, found after it was read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("agent.{key}: {message}")]
pub struct AgentIssue {
    /// The offending key below `agent`, as `serde_path_to_error` writes paths
    /// (`eou.min_speech_wait`, `webhooks[1].name`).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn issue(key: impl Into<String>, message: impl Into<String>) -> AgentIssue {
    AgentIssue {
        key: key.into(),
        message: message.into(),
    }
}

impl AgentConfig {
    fn default_max_tool_depth() -> usize {
        SessionOptions::default().max_tool_depth
    }

    fn default_tool_timeout() -> f64 {
        SessionOptions::default().tool_timeout.as_secs_f64()
    }

    /// An agent with these instructions and every other key at its default, for building one
    /// in code (`AgentConfig { greeting: Some(..), ..AgentConfig::new("…") }`).
    pub fn new(instructions: impl Into<String>) -> Self {
        Self {
            instructions: instructions.into(),
            greeting: None,
            builtin_tools: Vec::new(),
            max_tool_depth: Self::default_max_tool_depth(),
            tool_timeout: Self::default_tool_timeout(),
            max_context_items: None,
            eou: AgentEouConfig::default(),
            interrupt: AgentInterruptConfig::default(),
            wake_up: None,
            preemptive_generation: false,
            voicemail: None,
            warm_transfer: None,
            thinking_audio: None,
            webhooks: Vec::new(),
            mcp_servers: Vec::new(),
            dtmf: DtmfConfig::default(),
        }
    }

    /// The thinking sound for a session whose output runs at `rate`, loaded (and resampled)
    /// once; `None` without `[agent.thinking_audio]`.
    pub fn thinking_sound(&self, rate: u32) -> Result<Option<ThinkingAudio>, SoundError> {
        self.thinking_audio
            .as_ref()
            .map(|t| t.load(rate))
            .transpose()
            .map_err(|source| SoundError {
                key: "thinking_audio.file",
                source,
            })
    }

    /// The session's options: this section's timing, the output format's defaults. The
    /// thinking sound is a file, loaded by [`AgentConfig::thinking_sound`] for the output rate.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            eou: self.eou.to_eou(),
            interrupt: self.interrupt.to_interrupt(),
            wake_up: self.wake_up.as_ref().map(|w| WakeUp {
                after: Duration::from_secs_f64(w.after),
                prompt: w.prompt.clone(),
                max_prompts: w.max_prompts,
                goodbye: w.goodbye.clone(),
            }),
            max_tool_depth: self.max_tool_depth,
            tool_timeout: Duration::from_secs_f64(self.tool_timeout),
            max_context_items: self.max_context_items,
            preemptive_generation: self.preemptive_generation,
            voicemail: self.voicemail.as_ref().map(VoicemailConfig::to_options),
            ..SessionOptions::default()
        }
    }

    /// The names of the tools known before connecting to MCP servers (built-ins, then
    /// webhooks), in the order the LLM gets them.
    pub fn tool_names(&self) -> Vec<&str> {
        self.builtin_tools
            .iter()
            .map(|t| t.name())
            .chain(self.webhooks.iter().map(|w| w.name.as_str()))
            .collect()
    }

    /// Checks the rules serde cannot: non-empty texts, ranges, min < max, unique tool names,
    /// and each webhook's and MCP server's own checks (URL, timeouts, headers). EOU and
    /// interrupt values get the session's own messages ([`EouConfig::validate`],
    /// [`InterruptConfig::validate`]). Messages never quote URLs or header values.
    pub fn validate(&self) -> Result<(), AgentIssue> {
        if self.instructions.trim().is_empty() {
            return Err(issue(
                "instructions",
                "must not be empty: they tell the LLM who the agent is",
            ));
        }
        if matches!(&self.greeting, Some(g) if g.trim().is_empty()) {
            return Err(issue(
                "greeting",
                "must not be empty (leave the key out for no greeting)",
            ));
        }
        if self.max_tool_depth == 0 {
            return Err(issue(
                "max_tool_depth",
                "expected at least 1 (1 = the LLM never sees tool results)",
            ));
        }
        positive_seconds("tool_timeout", self.tool_timeout)?;
        if self.max_context_items == Some(0) {
            return Err(issue(
                "max_context_items",
                "expected at least 1 (leave the key out for no bound)",
            ));
        }
        self.validate_eou()?;
        self.validate_interrupt()?;
        if let Some(w) = &self.wake_up {
            positive_seconds("wake_up.after", w.after)?;
            for (key, text) in [("prompt", &w.prompt), ("goodbye", &w.goodbye)] {
                if matches!(text, Some(t) if t.trim().is_empty()) {
                    return Err(issue(
                        format!("wake_up.{key}"),
                        "must not be empty (leave the key out instead)",
                    ));
                }
            }
            if w.prompt.is_some() && w.max_prompts == 0 {
                return Err(issue(
                    "wake_up.max_prompts",
                    "expected at least 1 (leave out `prompt` to end the session at the first \
                     silence)",
                ));
            }
        }
        if let Some(v) = &self.voicemail {
            positive_seconds("voicemail.listen", v.listen)?;
            if matches!(&v.prompt, Some(p) if p.trim().is_empty()) {
                return Err(issue(
                    "voicemail.prompt",
                    "must not be empty (leave the key out for the built-in question)",
                ));
            }
            let has_message = v.message.as_ref().is_some_and(|m| !m.trim().is_empty());
            let leaves = v.action == VoicemailActionName::LeaveMessage;
            if leaves && !has_message {
                return Err(issue(
                    "voicemail.action",
                    "\"leave_message\" needs a non-empty `message` to leave",
                ));
            }
            if !leaves && v.message.is_some() {
                return Err(issue(
                    "voicemail.message",
                    "only used with action = \"leave_message\"",
                ));
            }
        }
        match &self.warm_transfer {
            Some(w) => {
                let d = w.destination.trim();
                let host = d.strip_prefix("sip:").and_then(|r| r.split('@').nth(1));
                if host.is_none_or(|h| h.is_empty()) {
                    return Err(issue(
                        "warm_transfer.destination",
                        format!(
                            "expected a SIP URI like \"sip:supervisor@pbx.example.com\", got {d:?}"
                        ),
                    ));
                }
                positive_seconds(
                    "warm_transfer.supervisor_join_timeout",
                    w.supervisor_join_timeout,
                )?;
                positive_seconds("warm_transfer.briefing_timeout", w.briefing_timeout)?;
                if matches!(&w.summary_prompt, Some(p) if p.trim().is_empty()) {
                    return Err(issue(
                        "warm_transfer.summary_prompt",
                        "must not be empty (leave the key out for the built-in one)",
                    ));
                }
            }
            None if self.builtin_tools.contains(&BuiltinTool::WarmTransfer) => {
                return Err(issue(
                    "builtin_tools",
                    "\"warm_transfer\" needs an [agent.warm_transfer] section naming the supervisor",
                ));
            }
            None => {}
        }
        if let Some(t) = &self.thinking_audio {
            if !(t.volume.is_finite() && t.volume >= 0.0) {
                return Err(issue(
                    "thinking_audio.volume",
                    "expected a gain of 0 or more",
                ));
            }
        }
        self.dtmf
            .validate()
            .map_err(|(key, message)| issue(format!("dtmf.{key}"), message))?;
        self.validate_tools()
    }

    fn validate_eou(&self) -> Result<(), AgentIssue> {
        let Err(e) = self.eou.to_eou().validate() else {
            return Ok(());
        };
        let (min, max) = (self.eou.min_speech_wait, self.eou.max_speech_wait);
        // The session's messages name its combined field; point at the key to change.
        let key = if !min.is_finite() || min <= 0.0 {
            "min_speech_wait"
        } else if !max.is_finite() || max <= 0.0 {
            "max_speech_wait"
        } else {
            "min_speech_wait"
        };
        Err(issue(format!("eou.{key}"), e.0))
    }

    fn validate_interrupt(&self) -> Result<(), AgentIssue> {
        let Err(e) = self.interrupt.to_interrupt().validate() else {
            return Ok(());
        };
        let key = if e.0.starts_with("interrupt_min_duration") {
            "min_duration"
        } else if e.0.starts_with("interrupt_min_words") {
            "min_words"
        } else {
            "false_interrupt_pause"
        };
        Err(issue(format!("interrupt.{key}"), e.0))
    }

    fn validate_tools(&self) -> Result<(), AgentIssue> {
        // Where each tool name was first given: the engine calls the first tool of a name, so
        // a second one would be silently unreachable.
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (i, t) in self.builtin_tools.iter().enumerate() {
            claim(&mut seen, t.name(), format!("builtin_tools[{i}]"))?;
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = |field: &str| format!("webhooks[{i}].{field}");
            check_tool_name(&w.name).map_err(|m| issue(at("name"), m))?;
            claim(&mut seen, &w.name, at("name"))?;
            w.validate().map_err(|e| match e {
                WebhookError::InvalidUrl { reason, .. } => {
                    issue(at("url"), format!("invalid URL: {reason}"))
                }
                WebhookError::InvalidParameters { .. } => issue(at("parameters"), e.to_string()),
                WebhookError::InvalidTimeout { .. } => issue(at("timeout_s"), e.to_string()),
                WebhookError::InvalidHeader { ref header, .. } => {
                    issue(at(&format!("headers.{header}")), e.to_string())
                }
                WebhookError::HttpClient(_) => issue(format!("webhooks[{i}]"), e.to_string()),
            })?;
        }
        for (i, server) in self.mcp_servers.iter().enumerate() {
            let at = |field: &str| format!("mcp_servers[{i}].{field}");
            if let McpServerConfig::Stdio(c) = server {
                if c.command.trim().is_empty() {
                    return Err(issue(at("command"), "must not be empty"));
                }
            }
            server.validate().map_err(|e| match e {
                McpError::InvalidTimeout { field, .. } => issue(at(field), e.to_string()),
                // The URL itself is left out: it may carry a token.
                McpError::InvalidUrl { reason, .. } => {
                    issue(at("url"), format!("invalid URL: {reason}"))
                }
                McpError::LegacySse { .. } => issue(
                    at("url"),
                    "the path ends in /sse: that is the legacy HTTP+SSE transport; only \
                     streamable HTTP is supported",
                ),
                McpError::InvalidHeader { ref name } => {
                    issue(at(&format!("headers.{name}")), e.to_string())
                }
                other => issue(format!("mcp_servers[{i}]"), other.to_string()),
            })?;
        }
        Ok(())
    }
}

/// Records that `key` defines the tool `name`, or says where it was defined first.
fn claim<'a>(
    seen: &mut HashMap<&'a str, String>,
    name: &'a str,
    key: String,
) -> Result<(), AgentIssue> {
    match seen.entry(name) {
        Entry::Occupied(first) => Err(issue(
            key,
            format!(
                "the tool name {name:?} is already used by agent.{}; tool names must be unique",
                first.get()
            ),
        )),
        Entry::Vacant(slot) => {
            slot.insert(key);
            Ok(())
        }
    }
}

/// The tool names every LLM API accepts: 1 to 64 of `a-z A-Z 0-9 _ -`.
pub fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tool name {name:?}: expected 1 to 64 letters, digits, `_` or `-`"
        ))
    }
}

fn positive_seconds(key: &str, v: f64) -> Result<(), AgentIssue> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(())
    } else {
        Err(issue(
            key,
            format!("expected a positive number of seconds (at most a day), got {v}"),
        ))
    }
}

/// The config's names of the EOU modes.
const EOU_MODES: [(&str, EouMode); 2] = [
    ("default", EouMode::Default),
    ("adaptive", EouMode::Adaptive),
];

/// The config's names of the interrupt modes.
const INTERRUPT_MODES: [(&str, InterruptMode); 3] = [
    ("hybrid", InterruptMode::Hybrid),
    ("vad_only", InterruptMode::VadOnly),
    ("stt_only", InterruptMode::SttOnly),
];

/// The config's name of an EOU mode (`"default"`, `"adaptive"`).
pub fn eou_mode_name(mode: EouMode) -> &'static str {
    EOU_MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("?", |(n, _)| n)
}

/// The config's name of an interrupt mode (`"hybrid"`, `"vad_only"`, `"stt_only"`).
pub fn interrupt_mode_name(mode: InterruptMode) -> &'static str {
    INTERRUPT_MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("?", |(n, _)| n)
}

/// One of `choices` by name, in any case (the session types take the spec's uppercase; a
/// config reads better in lowercase like every other key, and both are accepted). Checked
/// inside the visitor so the parser attaches the value's line to the error.
fn by_name<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    what: &'static str,
    choices: &'static [(&'static str, T)],
) -> Result<T, D::Error> {
    struct ByName<T: 'static> {
        what: &'static str,
        choices: &'static [(&'static str, T)],
    }
    impl<T: Copy> serde::de::Visitor<'_> for ByName<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a {} name", self.what)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
            let lower = s.to_ascii_lowercase();
            self.choices
                .iter()
                .find(|(name, _)| *name == lower)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<String> =
                        self.choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                    E::custom(format!(
                        "unknown {} {s:?}; expected one of {}",
                        self.what,
                        names.join(", ")
                    ))
                })
        }
    }
    d.deserialize_str(ByName { what, choices })
}

fn eou_mode<'de, D: Deserializer<'de>>(d: D) -> Result<EouMode, D::Error> {
    by_name(d, "EOU mode", &EOU_MODES)
}

fn interrupt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<InterruptMode, D::Error> {
    by_name(d, "interrupt mode", &INTERRUPT_MODES)
}
