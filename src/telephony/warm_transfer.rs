//! Warm (attended) transfer: the agent puts the caller on hold, briefs a supervisor on a
//! second call, and joins the two once the supervisor agrees (spec 20 §10).
//!
//! The reference runs this across VideoSDK rooms; here the same thirteen phases run over a
//! phone line ([`TransferLine`], implemented by the phone endpoint): hold is a re-INVITE, the
//! "consultation room" is an outbound call to the supervisor with its own briefing session, and
//! the switch joins the two calls. Every phase is published on the primary session's events as
//! [`SessionEvent::WarmTransfer`].
//!
//! Deliberate differences from the reference, each a bug there:
//! - a briefing that times out (180 s) is an abort with the apology, not a go-ahead: nobody
//!   agreed to take the caller;
//! - a supervisor leg that fails before its audio is live is reported with its real cause
//!   (busy, refused, voicemail, hung up), not always as `supervisor_join_timeout`;
//! - an aborted transfer hangs up the supervisor's call instead of leaving it open;
//! - the caller is taken off hold before the apology, so they hear it;
//! - the briefing session closing on its own (the supervisor hung up) is a failure, not the
//!   "ready" its `on_exit` made it in the reference.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::agent::context::{ChatContext, ChatRole};
use crate::agent::{Agent, Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use crate::audio::mixer::{BackgroundOptions, Clip};
use crate::providers::{Llm, LlmEvent, LlmRequest};
use crate::session::{SessionEvent, SessionHandle, UtteranceHandle};
use crate::transport::CallError;

/// The caller's hold line.
pub const HOLD_LINE: &str = "Please hold while I connect you with a supervisor.";
/// The apology when no supervisor could be reached.
pub const JOIN_APOLOGY: &str = "Sorry, I couldn't reach a supervisor; let me continue helping you.";
/// The apology when the calls could not be joined.
pub const SWITCH_APOLOGY: &str = "I couldn't complete the transfer; please try again in a moment.";
/// The apology for anything else that went wrong.
pub const FAIL_APOLOGY: &str = "I ran into a problem transferring you. Let me keep helping you.";
/// The apology when the briefing ended without a reason of its own.
pub const DEFAULT_BRIEFING_APOLOGY: &str =
    "I couldn't complete the transfer; let me keep helping you.";
/// What the briefing agent says first to the supervisor.
pub const BRIEFING_OPENER: &str =
    "Hi, I'm the AI assistant. Let me bring you up to speed on this call.";
/// The instructions of the briefing agent's first reply.
pub const BRIEFING_REPLY: &str = "Narrate the call summary to the supervisor clearly and \
concisely (no preamble), then ask whether they're ready to take the call. Do NOT call any tool \
in this message — wait for the supervisor to reply first, then apply the decision rules from \
your system prompt.";
/// The summary used when there is no transcript or the LLM fails twice.
pub const FALLBACK_SUMMARY: &str = "Caller escalated; no conversation summary is available.";
/// The summariser's instructions when none are configured.
pub const DEFAULT_SUMMARY_PROMPT: &str = "You summarize phone calls for a human supervisor who \
is about to take over. Produce a concise briefing under 150 words covering: (1) caller identity \
if known, (2) their core issue, (3) what the primary agent has already done or tried, (4) what \
the supervisor needs to resolve or decide. Do not greet the supervisor and do not add preamble \
— output only the briefing.";
/// The briefing agent's system prompt (the reference's, with its odd spacing tidied).
pub const BRIEFING_INSTRUCTIONS: &str = "You are an AI assistant joining a private consultation \
room to brief a human supervisor about a caller that the primary agent is handing off. When the \
supervisor arrives you will narrate the call summary clearly and concisely, then ask whether \
they are ready to take the call.\n\nCRITICAL: while you are delivering the briefing and asking \
your question, do NOT call any tool. Call a tool ONLY in response to what the supervisor \
actually says back to you — never in the same turn as the narration.\n\nOnce the supervisor \
responds, call exactly ONE tool:\n  • Supervisor gives ANY affirmative ('yes', 'ready', 'go \
ahead', 'ok', 'I'm here', etc.) → call `done_briefing`.\n  • Supervisor explicitly declines \
('no', 'I can't take this', 'not now', etc.) → call `decline_transfer` with their reason.\n  • \
You hear an automated voicemail / answering-machine greeting → call `voicemail_detected` \
immediately, do not narrate the summary.\nDo not chit-chat, ask out-of-scope questions, or act \
as a generic assistant.";

/// The apology for a briefing that ended with `reason`.
pub fn briefing_apology(reason: &str) -> &'static str {
    match reason {
        "declined" => {
            "The supervisor isn't able to take this call right now; let me keep helping you."
        }
        "voicemail" => "I couldn't reach a live supervisor; let me keep helping you.",
        "supervisor_disconnected" => {
            "I lost the supervisor before we could connect you; let me keep helping you."
        }
        _ => DEFAULT_BRIEFING_APOLOGY,
    }
}

/// Where a warm transfer is, in the order of a successful one; the last two end it otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmTransferPhase {
    /// The transfer began; the caller's audio no longer reaches the agent.
    Started,
    /// The LLM is summarising the call.
    SummaryGenerating,
    /// The summary is ready (`data.summary`).
    SummaryReady,
    /// The hold line was said and the caller is on hold.
    CallerOnHold,
    /// The consultation (the briefing agent with the summary) is prepared.
    ConsultationRoomCreated,
    /// The supervisor is being called (`data.destination`).
    SupervisorDialed,
    /// The supervisor answered and their audio arrives.
    SupervisorJoined,
    /// The briefing agent is talking to the supervisor.
    BriefingStarted,
    /// The briefing ended (`data.resolution`: `ready` or why not).
    BriefingComplete,
    /// Caller and supervisor are connected.
    CallSwitched,
    /// The agent has left; the transfer succeeded.
    TransferComplete,
    /// The transfer was given up; the caller is back with the agent (`data.reason`).
    TransferCancelled,
    /// The transfer failed; the caller is back with the agent (`data.reason`).
    TransferFailed,
}

impl WarmTransferPhase {
    /// The phase's name on the wire (`caller_on_hold`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::SummaryGenerating => "summary_generating",
            Self::SummaryReady => "summary_ready",
            Self::CallerOnHold => "caller_on_hold",
            Self::ConsultationRoomCreated => "consultation_room_created",
            Self::SupervisorDialed => "supervisor_dialed",
            Self::SupervisorJoined => "supervisor_joined",
            Self::BriefingStarted => "briefing_started",
            Self::BriefingComplete => "briefing_complete",
            Self::CallSwitched => "call_switched",
            Self::TransferComplete => "transfer_complete",
            Self::TransferCancelled => "transfer_cancelled",
            Self::TransferFailed => "transfer_failed",
        }
    }
}

/// A warm transfer's settings (`[agent.warm_transfer]`).
#[derive(Debug, Clone, PartialEq)]
pub struct WarmTransferOptions {
    /// The supervisor's address (a SIP URI, number or user, as for a cold transfer).
    pub destination: String,
    /// The summariser's instructions; [`DEFAULT_SUMMARY_PROMPT`] if `None`.
    pub summary_prompt: Option<String>,
    /// How long the supervisor has to answer and be heard (the reference's 120 s).
    pub supervisor_join_timeout: Duration,
    /// How long the briefing may take before it is given up (the reference's 180 s).
    pub briefing_timeout: Duration,
    /// Looped to the caller while on hold (at the session's output rate); `None`: silence.
    pub hold_music: Option<Clip>,
}

impl WarmTransferOptions {
    /// The reference's timeouts for `destination`.
    pub fn new(destination: impl Into<String>) -> Self {
        Self {
            destination: destination.into(),
            summary_prompt: None,
            supervisor_join_timeout: Duration::from_secs(120),
            briefing_timeout: Duration::from_secs(180),
            hold_music: None,
        }
    }
}

/// How a warm transfer ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmTransferResult {
    /// Caller and supervisor were connected.
    pub success: bool,
    /// The last phase: `transfer_complete`, `transfer_cancelled` or `transfer_failed`.
    pub phase: WarmTransferPhase,
    /// The supervisor's call, if one was answered.
    pub supervisor_call_id: Option<String>,
    /// The caller's call.
    pub switched_call_id: Option<String>,
    /// The summary given to the supervisor.
    pub summary: String,
    /// Why it did not succeed.
    pub error: Option<String>,
}

/// Something the supervisor's call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsultationEvent {
    /// The supervisor's audio arrives (the reference's "audio stream enabled").
    AudioLive,
    /// The voicemail classifier heard an answering machine on the supervisor's line.
    Voicemail,
    /// The supervisor hung up.
    HungUp,
}

/// The supervisor's answered call, with its briefing session running.
pub struct Consultation {
    /// Its call id.
    pub call_id: String,
    /// What happens on it.
    pub events: mpsc::Receiver<ConsultationEvent>,
    /// Joins it with the caller, or drops it.
    pub line: Box<dyn ConsultationLine>,
}

/// What the transfer does with the supervisor's call at the end.
#[async_trait]
pub trait ConsultationLine: Send {
    /// Ends the briefing, joins the caller and the supervisor, and lets the primary agent
    /// go. On error nothing was joined and both calls are as they were.
    async fn connect(self: Box<Self>) -> Result<(), CallError>;
    /// Ends the briefing and hangs up the supervisor's call.
    async fn abandon(self: Box<Self>);
}

/// What the transfer needs of the caller's line.
#[async_trait]
pub trait TransferLine: Send + Sync {
    /// The caller's call id.
    fn call_id(&self) -> String;
    /// Stops (`false`) or restores (`true`) the caller's audio into the primary session.
    fn set_caller_heard(&self, heard: bool);
    /// Puts the caller on hold (after the hold line has played).
    async fn hold_caller(&self) -> Result<(), CallError>;
    /// Takes the caller off hold.
    async fn resume_caller(&self) -> Result<(), CallError>;
    /// Calls `destination` within `ring` and, once answered, starts a briefing session with
    /// `briefing` on it.
    async fn dial(
        &self,
        destination: &str,
        ring: Duration,
        briefing: Arc<BriefingAgent>,
    ) -> Result<Consultation, CallError>;
}

/// The conversation as the summariser reads it: `Caller: …`, `Agent: …` lines.
pub fn serialize_history(items: &[Value]) -> String {
    items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str).unwrap_or("message") == "message")
        .filter_map(|i| {
            let role = i.get("role")?.as_str()?;
            let text = match i.get("content")? {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p.as_str().or_else(|| p.get("text")?.as_str()))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => return None,
            };
            let speaker = match role {
                "user" => "Caller",
                "assistant" => "Agent",
                "system" | "developer" => "System",
                other => other,
            };
            Some(format!("{speaker}: {text}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A briefing for the supervisor from `history`: two attempts, then [`FALLBACK_SUMMARY`].
pub async fn summarize(llm: Option<&dyn Llm>, history: &[Value], prompt: Option<&str>) -> String {
    let conversation = serialize_history(history);
    let Some(llm) = llm.filter(|_| !conversation.trim().is_empty()) else {
        return FALLBACK_SUMMARY.to_string();
    };
    for attempt in 1..=2 {
        match summary_once(llm, &conversation, prompt).await {
            Ok(s) => return s,
            Err(e) => tracing::warn!(
                attempt,
                error = %e,
                "warm transfer: summary failed; {}",
                if attempt == 1 { "retrying" } else { "using the fallback" }
            ),
        }
    }
    FALLBACK_SUMMARY.to_string()
}

async fn summary_once(
    llm: &dyn Llm,
    conversation: &str,
    prompt: Option<&str>,
) -> Result<String, String> {
    let mut context = ChatContext::new();
    context.add_message(
        ChatRole::System,
        prompt.unwrap_or(DEFAULT_SUMMARY_PROMPT).to_string(),
    );
    context.add_message(
        ChatRole::User,
        format!("Here is the call transcript. Summarize it.\n\n{conversation}"),
    );
    let mut stream = llm
        .chat(LlmRequest {
            context,
            tools: Vec::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    while let Some(ev) = stream.recv().await {
        if let LlmEvent::Text(t) = ev.map_err(|e| e.to_string())? {
            text.push_str(&t);
        }
    }
    let text = text.trim();
    if text.is_empty() {
        return Err("the LLM returned an empty summary".into());
    }
    Ok(text.to_string())
}

/// How the briefing ended, as its tools (or its session) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BriefingOutcome {
    /// `done_briefing`: the supervisor takes the call.
    Ready,
    /// `decline_transfer`, with the supervisor's reason.
    Declined(String),
    /// `voicemail_detected`.
    Voicemail,
    /// The briefing session closed without a decision.
    Closed,
}

/// The agent on the supervisor's call: narrates the summary once the supervisor is heard,
/// then records their decision with one of its three tools.
pub struct BriefingAgent {
    summary: String,
    ready: watch::Sender<bool>,
    outcome: watch::Sender<Option<BriefingOutcome>>,
}

impl BriefingAgent {
    /// A briefing on `summary`.
    pub fn new(summary: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            summary: summary.into(),
            ready: watch::channel(false).0,
            outcome: watch::channel(None).0,
        })
    }

    /// The supervisor is heard: the narration starts.
    pub fn supervisor_ready(&self) {
        self.ready.send_replace(true);
    }

    /// The decision, once there is one (the first one counts).
    pub fn outcome(&self) -> watch::Receiver<Option<BriefingOutcome>> {
        self.outcome.subscribe()
    }

    fn decide(&self, outcome: BriefingOutcome) {
        self.outcome.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(outcome);
                true
            } else {
                false
            }
        });
    }
}

#[async_trait]
impl Agent for BriefingAgent {
    fn instructions(&self) -> String {
        format!(
            "{BRIEFING_INSTRUCTIONS}\n\nCALL SUMMARY TO BRIEF SUPERVISOR:\n{}",
            self.summary
        )
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let me = Arc::new(BriefingTools {
            outcome: self.outcome.clone(),
        });
        BriefingTool::ALL
            .into_iter()
            .map(|kind| {
                Arc::new(BriefingToolCall {
                    kind,
                    spec: kind.spec(),
                    tools: me.clone(),
                }) as Arc<dyn Tool>
            })
            .collect()
    }

    /// Narrates once the supervisor is heard, on its own task: the session must start (and
    /// hear the supervisor) meanwhile.
    async fn on_enter(&self, session: &SessionHandle) {
        let mut ready = self.ready.subscribe();
        let session = session.clone();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_err() {
                return;
            }
            if let Err(e) = session.say(BRIEFING_OPENER, false).await {
                tracing::warn!(error = %e, "warm transfer: the briefing opener was not said");
                return;
            }
            if let Err(e) = session.reply(BRIEFING_REPLY, false, true).await {
                tracing::warn!(error = %e, "warm transfer: the briefing was not narrated");
            }
        });
    }

    async fn on_exit(&self, _session: &SessionHandle) {
        self.decide(BriefingOutcome::Closed);
    }
}

struct BriefingTools {
    outcome: watch::Sender<Option<BriefingOutcome>>,
}

#[derive(Debug, Clone, Copy)]
enum BriefingTool {
    Decline,
    Done,
    Voicemail,
}

impl BriefingTool {
    const ALL: [BriefingTool; 3] = [Self::Decline, Self::Done, Self::Voicemail];

    fn spec(self) -> ToolSpec {
        let none = json!({"type": "object", "properties": {}});
        let (name, description, parameters) = match self {
            Self::Decline => (
                "decline_transfer",
                "Record that the supervisor declined to take the call.",
                json!({
                    "type": "object",
                    "properties": {"reason": {
                        "type": "string",
                        "description": "A short explanation of why the supervisor declined."
                    }},
                    "required": ["reason"]
                }),
            ),
            Self::Done => (
                "done_briefing",
                "Signal that the supervisor confirmed they're ready to take the call.",
                none,
            ),
            Self::Voicemail => (
                "voicemail_detected",
                "Call this when the consultation line reached voicemail / an answering machine.",
                none,
            ),
        };
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}

struct BriefingToolCall {
    kind: BriefingTool,
    spec: ToolSpec,
    tools: Arc<BriefingTools>,
}

#[async_trait]
impl Tool for BriefingToolCall {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let (outcome, answer) = match self.kind {
            BriefingTool::Done => (
                BriefingOutcome::Ready,
                "Connecting the caller now. Stand by.",
            ),
            BriefingTool::Decline => {
                let reason = args
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                tracing::info!(%reason, "warm transfer: the supervisor declined");
                (
                    BriefingOutcome::Declined(reason),
                    "Understood. The caller will be kept with the primary agent.",
                )
            }
            BriefingTool::Voicemail => (
                BriefingOutcome::Voicemail,
                "Voicemail detected; aborting transfer.",
            ),
        };
        self.tools.outcome.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(outcome);
                true
            } else {
                false
            }
        });
        // The decision ends the briefing's reply: nothing more to say to the supervisor.
        Ok(ToolOutput::Final(answer.to_string()))
    }
}

/// Runs one warm transfer of the caller on `line`, whose agent runs `primary`; `llm`
/// summarises. `hold_line` is the hold line already queued (by the tool that started the
/// transfer, so it follows what the agent was saying); `None` says it here. Returns once the caller is with the supervisor, or back with the agent.
pub async fn run(
    primary: &SessionHandle,
    line: &dyn TransferLine,
    llm: Option<Arc<dyn Llm>>,
    options: &WarmTransferOptions,
    hold_line: Option<UtteranceHandle>,
) -> WarmTransferResult {
    let mut t = Transfer {
        primary,
        line,
        summary: String::new(),
        supervisor_call_id: None,
        on_hold: false,
    };
    t.emit(WarmTransferPhase::Started, json!({}));
    line.set_caller_heard(false);

    t.emit(WarmTransferPhase::SummaryGenerating, json!({}));
    let history = primary.history(false, false).await.unwrap_or_default();
    t.summary = summarize(llm.as_deref(), &history, options.summary_prompt.as_deref()).await;
    t.emit(
        WarmTransferPhase::SummaryReady,
        json!({ "summary": t.summary }),
    );

    // The hold line plays out before the hold: the caller must hear it.
    let hold_line = match hold_line {
        Some(u) => Some(u),
        None => primary
            .say(HOLD_LINE, false)
            .await
            .inspect_err(
                |e| tracing::warn!(error = %e, "warm transfer: the hold line was not said"),
            )
            .ok(),
    };
    if let Some(u) = hold_line {
        u.wait().await;
    }
    if let Err(e) = line.hold_caller().await {
        return t
            .abort(
                &format!("hold failed: {e}"),
                FAIL_APOLOGY,
                WarmTransferPhase::TransferFailed,
                None,
            )
            .await;
    }
    t.on_hold = true;
    t.emit(WarmTransferPhase::CallerOnHold, json!({}));
    if let Some(music) = &options.hold_music {
        let looped = BackgroundOptions {
            looping: true,
            override_thinking: false,
            ..BackgroundOptions::default()
        };
        if let Err(e) = primary.play_background(music.clone(), looped).await {
            tracing::warn!(error = %e, "warm transfer: the hold music did not start");
        }
    }

    let briefing = BriefingAgent::new(t.summary.clone());
    t.emit(WarmTransferPhase::ConsultationRoomCreated, json!({}));
    t.emit(
        WarmTransferPhase::SupervisorDialed,
        json!({ "destination": options.destination }),
    );
    let join_deadline = tokio::time::Instant::now() + options.supervisor_join_timeout;
    // The line rings for at most the join timeout (and cancels the call if nobody answers).
    let dialed = line
        .dial(
            &options.destination,
            options.supervisor_join_timeout,
            briefing.clone(),
        )
        .await;
    let mut consultation = match dialed {
        Ok(c) => c,
        Err(CallError::NoAnswer(_)) => {
            return t
                .abort(
                    "supervisor_join_timeout",
                    JOIN_APOLOGY,
                    WarmTransferPhase::TransferCancelled,
                    None,
                )
                .await
        }
        Err(e) => {
            let reason = format!("supervisor_unreachable: {e}");
            return t
                .abort(
                    &reason,
                    JOIN_APOLOGY,
                    WarmTransferPhase::TransferCancelled,
                    None,
                )
                .await;
        }
    };
    t.supervisor_call_id = Some(consultation.call_id.clone());

    // Answered is not enough: the supervisor's audio must arrive.
    let live = tokio::time::timeout_at(join_deadline, async {
        match consultation.events.recv().await {
            Some(ConsultationEvent::AudioLive) => Ok(()),
            Some(ConsultationEvent::Voicemail) => Err("voicemail"),
            Some(ConsultationEvent::HungUp) | None => Err("supervisor_disconnected"),
        }
    })
    .await;
    match live {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            return t
                .abort(
                    reason,
                    briefing_apology(reason),
                    WarmTransferPhase::TransferCancelled,
                    Some(consultation),
                )
                .await
        }
        Err(_) => {
            return t
                .abort(
                    "supervisor_join_timeout",
                    JOIN_APOLOGY,
                    WarmTransferPhase::TransferCancelled,
                    Some(consultation),
                )
                .await
        }
    }
    briefing.supervisor_ready();
    t.emit(WarmTransferPhase::SupervisorJoined, json!({}));

    t.emit(WarmTransferPhase::BriefingStarted, json!({}));
    let mut outcome = briefing.outcome();
    let decided = tokio::time::timeout(options.briefing_timeout, async {
        loop {
            tokio::select! {
                r = outcome.wait_for(Option::is_some) => {
                    return match r.map(|o| o.clone()) {
                        Ok(Some(BriefingOutcome::Ready)) => "ready",
                        Ok(Some(BriefingOutcome::Declined(_))) => "declined",
                        Ok(Some(BriefingOutcome::Voicemail)) => "voicemail",
                        _ => "briefing_failed",
                    };
                }
                e = consultation.events.recv() => match e {
                    Some(ConsultationEvent::AudioLive) => {}
                    Some(ConsultationEvent::Voicemail) => return "voicemail",
                    Some(ConsultationEvent::HungUp) | None => return "supervisor_disconnected",
                },
            }
        }
    })
    .await
    .unwrap_or("timeout");
    t.emit(
        WarmTransferPhase::BriefingComplete,
        json!({ "resolution": decided }),
    );
    if decided != "ready" {
        return t
            .abort(
                decided,
                briefing_apology(decided),
                WarmTransferPhase::TransferCancelled,
                Some(consultation),
            )
            .await;
    }

    // The caller comes off hold to hear the supervisor, then the calls are joined.
    t.take_off_hold().await;
    let Consultation {
        call_id,
        line: consult,
        ..
    } = consultation;
    if let Err(e) = consult.connect().await {
        tracing::warn!(error = %e, "warm transfer: joining the calls failed");
        return t
            .abort(
                "switch_failed",
                SWITCH_APOLOGY,
                WarmTransferPhase::TransferFailed,
                None,
            )
            .await;
    }
    line.set_caller_heard(true);
    t.emit(
        WarmTransferPhase::CallSwitched,
        json!({ "caller_call_id": line.call_id(), "supervisor_call_id": call_id }),
    );
    t.emit(WarmTransferPhase::TransferComplete, json!({}));
    WarmTransferResult {
        success: true,
        phase: WarmTransferPhase::TransferComplete,
        supervisor_call_id: t.supervisor_call_id.take(),
        switched_call_id: Some(line.call_id()),
        summary: std::mem::take(&mut t.summary),
        error: None,
    }
}

struct Transfer<'a> {
    primary: &'a SessionHandle,
    line: &'a dyn TransferLine,
    summary: String,
    supervisor_call_id: Option<String>,
    on_hold: bool,
}

impl Transfer<'_> {
    fn emit(&self, phase: WarmTransferPhase, data: Value) {
        tracing::info!(phase = phase.as_str(), %data, "warm transfer");
        self.primary
            .publish(SessionEvent::WarmTransfer { phase, data });
    }

    /// Stops the hold music and takes the caller off hold, if they are on it.
    async fn take_off_hold(&mut self) {
        if !self.on_hold {
            return;
        }
        if let Err(e) = self.primary.stop_background().await {
            tracing::warn!(error = %e, "warm transfer: the hold music did not stop");
        }
        if let Err(e) = self.line.resume_caller().await {
            tracing::warn!(error = %e, "warm transfer: taking the caller off hold failed");
        }
        self.on_hold = false;
    }

    /// Gives up: the supervisor's call is dropped, the caller is back (off hold, heard) and
    /// hears `apology`.
    async fn abort(
        &mut self,
        reason: &str,
        apology: &str,
        phase: WarmTransferPhase,
        consultation: Option<Consultation>,
    ) -> WarmTransferResult {
        if let Some(c) = consultation {
            c.line.abandon().await;
        }
        self.take_off_hold().await;
        self.line.set_caller_heard(true);
        if let Err(e) = self.primary.say(apology, true).await {
            tracing::warn!(error = %e, "warm transfer: the apology was not said");
        }
        self.emit(phase, json!({ "reason": reason }));
        WarmTransferResult {
            success: false,
            phase,
            supervisor_call_id: self.supervisor_call_id.take(),
            switched_call_id: Some(self.line.call_id()),
            summary: std::mem::take(&mut self.summary),
            error: Some(reason.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reads_as_caller_and_agent_lines_without_tool_items() {
        let items = vec![
            json!({"type": "message", "role": "system", "content": "Be kind."}),
            json!({"type": "message", "role": "user", "content": "My card was charged twice."}),
            json!({"type": "function_call", "name": "lookup"}),
            json!({"type": "message", "role": "assistant", "content": ["Let me", "check."]}),
        ];
        assert_eq!(
            serialize_history(&items),
            "System: Be kind.\nCaller: My card was charged twice.\nAgent: Let me check."
        );
    }

    #[test]
    fn every_briefing_failure_has_an_apology_and_unknown_ones_get_the_default() {
        assert!(briefing_apology("declined").contains("isn't able"));
        assert!(briefing_apology("voicemail").contains("live supervisor"));
        assert!(briefing_apology("supervisor_disconnected").contains("lost the supervisor"));
        assert_eq!(briefing_apology("timeout"), DEFAULT_BRIEFING_APOLOGY);
    }

    #[test]
    fn phases_serialise_with_their_wire_names() {
        for p in [
            WarmTransferPhase::Started,
            WarmTransferPhase::CallerOnHold,
            WarmTransferPhase::ConsultationRoomCreated,
            WarmTransferPhase::TransferFailed,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
    }

    #[test]
    fn the_first_decision_of_the_briefing_counts() {
        let agent = BriefingAgent::new("s");
        agent.decide(BriefingOutcome::Voicemail);
        agent.decide(BriefingOutcome::Ready);
        assert_eq!(*agent.outcome().borrow(), Some(BriefingOutcome::Voicemail));
    }
}
