//! The warm transfer's state machine (spec 20 §10) on a paused clock: a scripted primary
//! session, and a caller's line and supervisor's call that record what the transfer asked of
//! them. Every way it can end is driven here; `tests/providers/phone.rs` runs the same
//! transfer over SIP with real phones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::providers::LlmEvent;
use hark::session::{SessionEvent, SessionOptions};
use hark::telephony::warm_transfer::{
    self, BriefingAgent, Consultation, ConsultationEvent, ConsultationLine, TransferLine,
    WarmTransferOptions, WarmTransferPhase as Phase, WarmTransferResult,
};
use hark::transport::CallError;
use serde_json::{json, Value};
use tokio::sync::mpsc;

mod support;
use support::scripted::*;

/// How the supervisor's call goes.
#[derive(Clone, Copy, PartialEq)]
enum Supervisor {
    /// Answers; its audio arrives.
    Answers,
    /// Answers, but no audio ever arrives.
    Silent,
    /// The call is refused (busy).
    Busy,
    /// Never answers.
    Rings,
}

/// What the transfer did to the lines, in order.
#[derive(Default)]
struct Record {
    steps: Vec<String>,
    briefing: Option<Arc<BriefingAgent>>,
    consultation: Option<mpsc::Sender<ConsultationEvent>>,
}

struct Line {
    supervisor: Supervisor,
    hold_fails: bool,
    connect_fails: bool,
    record: Arc<Mutex<Record>>,
    /// Told once the supervisor's call is answered.
    answered: Arc<tokio::sync::Notify>,
}

impl Line {
    fn new(supervisor: Supervisor) -> Line {
        Line {
            supervisor,
            hold_fails: false,
            connect_fails: false,
            record: Arc::default(),
            answered: Arc::default(),
        }
    }

    fn step(&self, s: impl Into<String>) {
        self.record.lock().unwrap().steps.push(s.into());
    }

    fn steps(&self) -> Vec<String> {
        self.record.lock().unwrap().steps.clone()
    }
}

#[async_trait]
impl TransferLine for Line {
    fn call_id(&self) -> String {
        "caller-1".into()
    }

    fn set_caller_heard(&self, heard: bool) {
        self.step(if heard { "heard" } else { "muted" });
    }

    async fn hold_caller(&self) -> Result<(), CallError> {
        self.step("hold");
        if self.hold_fails {
            return Err(CallError::Failed("481 Call Does Not Exist".into()));
        }
        Ok(())
    }

    async fn resume_caller(&self) -> Result<(), CallError> {
        self.step("resume");
        Ok(())
    }

    async fn dial(
        &self,
        destination: &str,
        ring: Duration,
        briefing: Arc<BriefingAgent>,
    ) -> Result<Consultation, CallError> {
        self.step(format!("dial {destination}"));
        match self.supervisor {
            Supervisor::Busy => {
                return Err(CallError::Failed("call refused: 486 Busy Here".into()))
            }
            Supervisor::Rings => {
                // As the endpoint does: ring for `ring`, then cancel.
                tokio::time::sleep(ring).await;
                return Err(CallError::NoAnswer("no response within 120s".into()));
            }
            Supervisor::Answers | Supervisor::Silent => {}
        }
        let (tx, events) = mpsc::channel(8);
        if self.supervisor == Supervisor::Answers {
            tx.try_send(ConsultationEvent::AudioLive).unwrap();
        }
        let mut r = self.record.lock().unwrap();
        r.briefing = Some(briefing);
        r.consultation = Some(tx);
        self.answered.notify_one();
        Ok(Consultation {
            call_id: "supervisor-1".into(),
            events,
            line: Box::new(SupervisorCall {
                fails: self.connect_fails,
                record: self.record.clone(),
            }),
        })
    }
}

struct SupervisorCall {
    fails: bool,
    record: Arc<Mutex<Record>>,
}

#[async_trait]
impl ConsultationLine for SupervisorCall {
    async fn connect(self: Box<Self>) -> Result<(), CallError> {
        self.record.lock().unwrap().steps.push("connect".into());
        if self.fails {
            return Err(CallError::Failed("the caller's media has ended".into()));
        }
        Ok(())
    }

    async fn abandon(self: Box<Self>) {
        self.record.lock().unwrap().steps.push("abandon".into());
    }
}

fn options() -> WarmTransferOptions {
    WarmTransferOptions::new("sip:supervisor@pbx.test")
}

/// A primary session that has talked with the caller; its LLM then answers the summary
/// request with `summary` (more answers follow for anything else).
async fn primary(summary: Vec<Vec<LlmEvent>>) -> (Harness, Arc<ScriptedLlm>) {
    let mut answers = vec![vec![text("Let me get someone who can refund that.")]];
    answers.extend(summary);
    let llm = ScriptedLlm::new(answers);
    let mut h = harness(
        agent("You are the bank's assistant."),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("My card was charged twice.", 0.9).await;
    h.events_until_idle().await;
    (h, llm)
}

/// The briefing agent's tool `name`, called as the LLM would.
async fn briefing_tool(line: &Line, name: &str, args: Value) {
    let agent = line
        .record
        .lock()
        .unwrap()
        .briefing
        .clone()
        .expect("the supervisor was dialed");
    let tools = hark::agent::Agent::tools(agent.as_ref());
    let tool = tools
        .iter()
        .find(|t| t.spec().name == name)
        .unwrap_or_else(|| panic!("the briefing agent has no {name} tool"));
    tool.call(args, &hark::agent::ToolContext::default())
        .await
        .unwrap();
}

/// Runs a transfer; `during` acts once the supervisor was dialed (or at once if never).
async fn transfer(
    h: &Harness,
    line: &Line,
    llm: Arc<ScriptedLlm>,
    options: WarmTransferOptions,
    during: impl std::future::Future<Output = ()>,
) -> WarmTransferResult {
    let handle = h.session.handle();
    let run = warm_transfer::run(&handle, line, Some(llm), &options, None);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return r,
        _ = during => {}
    }
    run.await
}

/// The phases published on the primary session, with their data.
fn phases(events: &mut tokio::sync::broadcast::Receiver<SessionEvent>) -> Vec<(Phase, Value)> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let SessionEvent::WarmTransfer { phase, data } = e {
            out.push((phase, data));
        }
    }
    out
}

/// What the agent has said so far (every `say` is published when it is queued).
fn said(h: &mut Harness) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = h.events.try_recv() {
        if let SessionEvent::AgentText { text } = e {
            out.push(text);
        }
    }
    out
}

/// Waits until the supervisor's call was answered.
async fn dialed(line: &Line) {
    line.answered.notified().await;
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_who_agrees_gets_the_caller_after_all_eleven_phases_in_order() {
    let (mut h, llm) = primary(vec![vec![text(
        "Caller was charged twice and wants a refund.",
    )]])
    .await;
    let mut events = h.session.handle().subscribe();
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&h, &line, llm.clone(), options(), async {
        dialed(&line).await;
        briefing_tool(&line, "done_briefing", json!({})).await;
        std::future::pending::<()>().await
    })
    .await;

    assert!(result.success, "{result:?}");
    assert_eq!(result.phase, Phase::TransferComplete);
    assert_eq!(result.supervisor_call_id.as_deref(), Some("supervisor-1"));
    assert_eq!(result.switched_call_id.as_deref(), Some("caller-1"));
    assert_eq!(
        result.summary,
        "Caller was charged twice and wants a refund."
    );
    let seen: Vec<Phase> = phases(&mut events).into_iter().map(|p| p.0).collect();
    assert_eq!(
        seen,
        [
            Phase::Started,
            Phase::SummaryGenerating,
            Phase::SummaryReady,
            Phase::CallerOnHold,
            Phase::ConsultationRoomCreated,
            Phase::SupervisorDialed,
            Phase::SupervisorJoined,
            Phase::BriefingStarted,
            Phase::BriefingComplete,
            Phase::CallSwitched,
            Phase::TransferComplete,
        ]
    );
    // The caller stops being heard first, hears the hold line, is held, then taken off hold
    // and joined.
    assert_eq!(
        line.steps(),
        [
            "muted",
            "hold",
            "dial sip:supervisor@pbx.test",
            "resume",
            "connect",
            "heard"
        ]
    );
    let summary_request = &llm.requests()[1];
    let asked = serde_json::to_string(&summary_request.context.items()).unwrap();
    assert!(
        asked.contains("Caller: My card was charged twice.")
            && asked.contains("Agent: Let me get someone who can refund that."),
        "the summariser reads the conversation: {asked}"
    );
    let spoken = said(&mut h);
    assert!(
        spoken.iter().any(|t| t == warm_transfer::HOLD_LINE),
        "the caller heard the hold line: {spoken:?}"
    );
}

/// A caller on hold hears the configured music, looped, and it stops before they are taken
/// off hold (so the supervisor is not greeted over it).
#[tokio::test(start_paused = true)]
async fn hold_music_loops_while_the_caller_is_on_hold_and_stops_before_they_come_off_it() {
    let (h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let mut events = h.session.handle().subscribe();
    let line = Line::new(Supervisor::Answers);
    // Half a second of tone: the briefing below lasts far longer, so it must loop.
    let tone: Vec<f32> = (0..RATE / 2)
        .map(|i| 0.2 * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / RATE as f32).sin())
        .collect();
    let options = WarmTransferOptions {
        hold_music: Some(hark::audio::mixer::Clip::new(RATE, tone).unwrap()),
        ..options()
    };
    let sink = h.sink.clone();
    let result = transfer(&h, &line, llm, options, async {
        dialed(&line).await;
        let from = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let heard = sink.voiced_frames_between(from, tokio::time::Instant::now());
        assert!(
            heard >= 140,
            "{heard} frames of music in 3 s of hold (150 if it loops without a gap)"
        );
        briefing_tool(&line, "done_briefing", json!({})).await;
        std::future::pending::<()>().await
    })
    .await;
    assert!(result.success, "{result:?}");
    let mut order = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            SessionEvent::WarmTransfer { phase, .. } => order.push(format!("{phase:?}")),
            SessionEvent::BackgroundAudio { playing } => order.push(format!("music {playing}")),
            _ => {}
        }
    }
    let at = |what: &str| {
        order
            .iter()
            .position(|o| o == what)
            .unwrap_or_else(|| panic!("no {what} in {order:?}"))
    };
    assert_eq!(at("music true"), at("CallerOnHold") + 1, "{order:?}");
    assert!(at("music false") < at("CallSwitched"), "{order:?}");
    assert_eq!(
        order.iter().filter(|o| o.starts_with("music")).count(),
        2,
        "it started once and stopped once: {order:?}"
    );
}

/// Every abort takes the caller off hold, and the music with it, before the apology.
#[tokio::test(start_paused = true)]
async fn hold_music_stops_when_a_transfer_is_given_up() {
    let (h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let mut events = h.session.handle().subscribe();
    let line = Line::new(Supervisor::Rings);
    let options = WarmTransferOptions {
        hold_music: Some(hark::audio::mixer::Clip::new(RATE, vec![0.1; 800]).unwrap()),
        ..options()
    };
    let result = transfer(&h, &line, llm, options, std::future::pending()).await;
    assert!(!result.success);
    let music: Vec<bool> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e {
            SessionEvent::BackgroundAudio { playing } => Some(playing),
            _ => None,
        })
        .collect();
    assert_eq!(music, [true, false]);
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_who_declines_leaves_the_caller_with_the_agent_and_the_apology() {
    let (mut h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let mut events = h.session.handle().subscribe();
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&h, &line, llm, options(), async {
        dialed(&line).await;
        briefing_tool(&line, "decline_transfer", json!({"reason": "in a meeting"})).await;
        std::future::pending::<()>().await
    })
    .await;

    assert!(!result.success);
    assert_eq!(result.phase, Phase::TransferCancelled);
    assert_eq!(result.error.as_deref(), Some("declined"));
    let seen = phases(&mut events);
    assert_eq!(
        seen.iter()
            .find(|p| p.0 == Phase::BriefingComplete)
            .map(|p| p.1["resolution"].clone()),
        Some(json!("declined"))
    );
    assert_eq!(seen.last().unwrap().1, json!({"reason": "declined"}));
    // The supervisor's call is dropped (the reference left it open), the caller is taken
    // off hold before the apology, and heard again.
    assert_eq!(
        line.steps(),
        [
            "muted",
            "hold",
            "dial sip:supervisor@pbx.test",
            "abandon",
            "resume",
            "heard"
        ]
    );
    let spoken = said(&mut h);
    assert!(
        spoken
            .iter()
            .any(|t| t == warm_transfer::briefing_apology("declined")),
        "{spoken:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn voicemail_on_the_supervisors_line_cancels_with_the_voicemail_apology() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&_h, &line, llm, options(), async {
        dialed(&line).await;
        let tx = line.record.lock().unwrap().consultation.clone().unwrap();
        tx.send(ConsultationEvent::Voicemail).await.unwrap();
        std::future::pending::<()>().await
    })
    .await;
    assert_eq!(result.error.as_deref(), Some("voicemail"));
    assert_eq!(result.phase, Phase::TransferCancelled);
    assert!(line.steps().contains(&"abandon".to_string()));
}

#[tokio::test(start_paused = true)]
async fn the_briefing_agents_voicemail_tool_cancels_the_same_way() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&_h, &line, llm, options(), async {
        dialed(&line).await;
        briefing_tool(&line, "voicemail_detected", json!({})).await;
        std::future::pending::<()>().await
    })
    .await;
    assert_eq!(result.error.as_deref(), Some("voicemail"));
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_who_hangs_up_during_the_briefing_cancels_it() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&_h, &line, llm, options(), async {
        dialed(&line).await;
        let tx = line.record.lock().unwrap().consultation.clone().unwrap();
        tx.send(ConsultationEvent::HungUp).await.unwrap();
        std::future::pending::<()>().await
    })
    .await;
    assert_eq!(result.error.as_deref(), Some("supervisor_disconnected"));
    assert_eq!(result.phase, Phase::TransferCancelled);
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_who_never_answers_is_given_up_at_the_join_timeout() {
    let (mut h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Rings);
    let t0 = tokio::time::Instant::now();
    let result = transfer(&h, &line, llm, options(), std::future::pending()).await;
    let waited = tokio::time::Instant::now() - t0;
    assert_eq!(result.error.as_deref(), Some("supervisor_join_timeout"));
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(125),
        "gave up after {waited:?}"
    );
    let spoken = said(&mut h);
    assert!(
        spoken.iter().any(|t| t == warm_transfer::JOIN_APOLOGY),
        "{spoken:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_whose_audio_never_arrives_is_given_up_at_the_join_timeout_and_hung_up() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Silent);
    let result = transfer(&_h, &line, llm, options(), std::future::pending()).await;
    assert_eq!(result.error.as_deref(), Some("supervisor_join_timeout"));
    assert_eq!(result.supervisor_call_id.as_deref(), Some("supervisor-1"));
    assert!(line.steps().contains(&"abandon".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_busy_supervisor_is_reported_with_the_real_cause_not_as_a_timeout() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Busy);
    let result = transfer(&_h, &line, llm, options(), std::future::pending()).await;
    let error = result.error.unwrap();
    assert!(
        error.starts_with("supervisor_unreachable") && error.contains("486"),
        "{error}"
    );
    assert_eq!(result.phase, Phase::TransferCancelled);
}

#[tokio::test(start_paused = true)]
async fn a_briefing_that_runs_out_of_time_is_cancelled_not_taken_as_ready_unlike_the_reference() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&_h, &line, llm, options(), std::future::pending()).await;
    assert_eq!(result.error.as_deref(), Some("timeout"));
    assert_eq!(result.phase, Phase::TransferCancelled);
    assert!(!line.steps().contains(&"connect".to_string()));
}

#[tokio::test(start_paused = true)]
async fn calls_that_cannot_be_joined_fail_with_the_switch_apology() {
    let (mut h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line {
        connect_fails: true,
        ..Line::new(Supervisor::Answers)
    };
    let result = transfer(&h, &line, llm, options(), async {
        dialed(&line).await;
        briefing_tool(&line, "done_briefing", json!({})).await;
        std::future::pending::<()>().await
    })
    .await;
    assert_eq!(result.error.as_deref(), Some("switch_failed"));
    assert_eq!(result.phase, Phase::TransferFailed);
    let spoken = said(&mut h);
    assert!(
        spoken.iter().any(|t| t == warm_transfer::SWITCH_APOLOGY),
        "{spoken:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_who_cannot_be_held_is_not_transferred() {
    let (_h, llm) = primary(vec![vec![text("Refund request.")]]).await;
    let line = Line {
        hold_fails: true,
        ..Line::new(Supervisor::Answers)
    };
    let result = transfer(&_h, &line, llm, options(), std::future::pending()).await;
    assert_eq!(result.phase, Phase::TransferFailed);
    assert!(result.error.unwrap().contains("481"));
    assert_eq!(line.steps(), ["muted", "hold", "heard"]);
}

#[tokio::test(start_paused = true)]
async fn a_summary_that_fails_twice_falls_back_and_the_transfer_goes_on() {
    let failing = vec![LlmEvent::Text(String::new())];
    let (_h, llm) = primary(vec![failing.clone(), failing]).await;
    let line = Line::new(Supervisor::Answers);
    let result = transfer(&_h, &line, llm.clone(), options(), async {
        dialed(&line).await;
        briefing_tool(&line, "done_briefing", json!({})).await;
        std::future::pending::<()>().await
    })
    .await;
    assert!(result.success);
    assert_eq!(result.summary, warm_transfer::FALLBACK_SUMMARY);
    assert_eq!(
        llm.requests().len(),
        3,
        "one turn, then two summary attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn the_briefing_agent_narrates_only_once_the_supervisor_is_heard() {
    let agent = BriefingAgent::new("Refund request.");
    let llm = ScriptedLlm::new(vec![vec![text("The caller wants a refund. Ready?")]]);
    let mut h = harness(agent.clone(), llm.clone(), SessionOptions::default(), None).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        llm.requests().is_empty(),
        "nothing said before the supervisor is heard"
    );
    agent.supervisor_ready();
    let mut spoken = Vec::new();
    while spoken.len() < 2 {
        spoken.extend(said(&mut h));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spoken[0], warm_transfer::BRIEFING_OPENER);
    let request = serde_json::to_string(&llm.requests()[0].context.items()).unwrap();
    assert!(request.contains("CALL SUMMARY TO BRIEF SUPERVISOR:\\nRefund request."));
    assert!(request.contains("Narrate the call summary"));
}
