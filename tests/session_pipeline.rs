//! The cascade's optional stages on a paused clock: preemptive generation, voicemail
//! detection, text hooks and turn callbacks, thinking and background sounds in the output.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use hark::audio::mixer::{BackgroundOptions, Clip};
use hark::providers::{Llm, LlmRequest, LlmStream, ProviderError, SttEvent};
use hark::session::{
    AgentSession, AgentState, AudioSink, Hooks, Providers, SessionEvent, SessionOptions,
    ThinkingAudio, UserInput,
};
use hark::telephony::voicemail::{VoicemailAction, VoicemailOptions, DEFAULT_PROMPT};
use hark::transport::{CallControl, CallError};
use serde_json::{json, Value};
use tokio::time::Instant;

mod support;
use support::scripted::*;

fn preemptive() -> SessionOptions {
    SessionOptions {
        preemptive_generation: true,
        ..SessionOptions::default()
    }
}

fn user_texts(r: &LlmRequest) -> Vec<String> {
    r.context
        .items()
        .iter()
        .filter_map(|i| i.as_message())
        .filter(|m| m.role == hark::agent::ChatRole::User)
        .map(|m| m.text())
        .collect()
}

async fn preflight(h: &Harness, text: &str) {
    h.stt.send(SttEvent::Preflight(text.into())).await.unwrap();
}

async fn final_(h: &Harness, text: &str) {
    h.stt
        .send(SttEvent::Final {
            text: text.into(),
            confidence: None,
        })
        .await
        .unwrap();
}

// ---- preemptive generation ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_confirmed_preflight_speaks_the_reply_generated_before_the_final() {
    let llm = ScriptedLlm::new(vec![vec![text("Table for two, done.")]]);
    let mut h = harness(agent("Book tables."), llm.clone(), preemptive(), None).await;
    preflight(&h, "a table for two").await;
    h.agent_state(AgentState::Thinking).await;
    // The LLM has answered, but nothing is spoken before the final transcript.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.tts_texts.lock().unwrap().is_empty());
    assert_eq!(h.sink.voiced_seconds(), 0.0);
    final_(&h, "a table for two").await;
    let turn = h.until(turn_text).await;
    assert_eq!(turn, "a table for two");
    h.agent_state(AgentState::Idle).await;
    assert_eq!(
        h.tts_texts.lock().unwrap().join(" "),
        "Table for two, done."
    );
    // One LLM request: the preflight's, confirmed, not regenerated.
    assert_eq!(llm.requests().len(), 1);
    assert_eq!(user_texts(&llm.requests()[0]), vec!["a table for two"]);
}

#[tokio::test(start_paused = true)]
async fn a_contradicted_preflight_is_dropped_and_the_final_is_answered() {
    let llm = ScriptedLlm::new(vec![
        vec![text("Table for two, done.")],
        vec![text("Table for four, done.")],
    ]);
    let mut h = harness(agent("Book tables."), llm.clone(), preemptive(), None).await;
    preflight(&h, "a table for two").await;
    h.agent_state(AgentState::Thinking).await;
    final_(&h, "a table for four").await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(
        h.tts_texts.lock().unwrap().join(" "),
        "Table for four, done."
    );
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    // The guess's user message left the context: the model sees only what was said.
    assert_eq!(user_texts(&requests[1]), vec!["a table for four"]);
    let history = h.session.history(false, false).await.unwrap();
    let said: Vec<&str> = history
        .iter()
        .filter_map(|i| i["content"][0].as_str())
        .collect();
    assert_eq!(said, vec!["a table for four", "Table for four, done."]);
}

#[tokio::test(start_paused = true)]
async fn a_preflight_not_confirmed_within_ten_seconds_is_dropped() {
    let llm = ScriptedLlm::new(vec![vec![text("Done.")]]);
    let mut h = harness(agent("Book tables."), llm.clone(), preemptive(), None).await;
    preflight(&h, "a table for two").await;
    h.agent_state(AgentState::Thinking).await;
    tokio::time::sleep(Duration::from_millis(9_990)).await;
    assert_eq!(h.session.history(false, false).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(h.session.history(false, false).await.unwrap().is_empty());
    assert!(h.tts_texts.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_user_speaking_again_cancels_a_held_reply() {
    let llm = ScriptedLlm::new(vec![vec![text("Two.")], vec![text("Two at eight.")]]);
    let mut h = harness(agent("Book tables."), llm.clone(), preemptive(), None).await;
    preflight(&h, "a table for two").await;
    h.agent_state(AgentState::Thinking).await;
    h.session.input().user(UserInput::SpeechStarted);
    final_(&h, "a table for two at eight").await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(*h.tts_texts.lock().unwrap(), vec!["Two at eight."]);
}

struct Counter {
    spec: ToolSpec,
    calls: Arc<Mutex<usize>>,
}

#[async_trait]
impl Tool for Counter {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, _args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        *self.calls.lock().unwrap() += 1;
        Ok(ToolOutput::Json(json!({"booked": true})))
    }
}

#[tokio::test(start_paused = true)]
async fn tools_wait_for_the_final_transcript_so_a_wrong_guess_has_no_effect() {
    let calls = Arc::new(Mutex::new(0));
    let booker: Arc<dyn Tool> = Arc::new(Counter {
        spec: ToolSpec {
            name: "book".into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        },
        calls: calls.clone(),
    });
    let agent = Arc::new(Greeter {
        instructions: "Book tables.".into(),
        greeting: None,
        tools: vec![booker],
    });
    let llm = ScriptedLlm::new(vec![
        vec![call("c1", "book", json!({}))],
        vec![call("c2", "book", json!({}))],
        vec![text("Booked.")],
        vec![call("c3", "book", json!({}))],
        vec![text("Booked again.")],
    ]);
    let mut h = harness(agent.clone(), llm.clone(), preemptive(), None).await;
    // A guess that is contradicted: its tool call never runs.
    preflight(&h, "book it").await;
    h.agent_state(AgentState::Thinking).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*calls.lock().unwrap(), 0);
    final_(&h, "do not book it").await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(*calls.lock().unwrap(), 1, "only the final's call ran");
    // A confirmed guess: its tool call runs once confirmed.
    preflight(&h, "book it").await;
    h.agent_state(AgentState::Thinking).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*calls.lock().unwrap(), 1);
    final_(&h, "book it").await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        *h.tts_texts.lock().unwrap(),
        vec!["Booked.", "Booked again."]
    );
}

// ---- voicemail ---------------------------------------------------------------------------

#[derive(Default)]
struct Phone {
    hangups: Mutex<Vec<String>>,
}

#[async_trait]
impl CallControl for Phone {
    async fn hangup(&self, reason: &str) -> Result<(), CallError> {
        self.hangups.lock().unwrap().push(reason.into());
        Ok(())
    }
    async fn transfer(&self, _target: &str) -> Result<(), CallError> {
        Err(CallError::Unsupported)
    }
    async fn send_dtmf(&self, _digits: &str) -> Result<(), CallError> {
        Err(CallError::Unsupported)
    }
}

fn voicemail(action: VoicemailAction) -> SessionOptions {
    SessionOptions {
        voicemail: Some(VoicemailOptions {
            action,
            ..VoicemailOptions::default()
        }),
        ..SessionOptions::default()
    }
}

fn verdict(e: &SessionEvent) -> Option<bool> {
    match e {
        SessionEvent::Voicemail { detected } => Some(*detected),
        _ => None,
    }
}

const GREETING: &str = "Hi, you have reached Sam, please leave a message after the tone";

#[tokio::test(start_paused = true)]
async fn a_voicemail_greeting_is_classified_after_two_seconds_and_the_call_hung_up() {
    let llm = ScriptedLlm::new(vec![long_answer(), vec![text("Yes.")]]);
    let phone = Arc::new(Phone::default());
    let mut h = harness(
        agent("Sell things."),
        llm.clone(),
        voicemail(VoicemailAction::HangUp),
        Some(phone.clone()),
    )
    .await;
    h.user_says(GREETING, 0.9).await;
    assert!(h.until(verdict).await);
    assert_eq!(h.elapsed_ms(), 2_000);
    h.agent_state(AgentState::Closing).await;
    assert_eq!(*phone.hangups.lock().unwrap(), vec!["voicemail"]);
    let classifier = &llm.requests()[1];
    let items = classifier.context.items();
    assert_eq!(items[0].as_message().unwrap().text(), DEFAULT_PROMPT);
    assert_eq!(
        items[1].as_message().unwrap().text(),
        format!("Text to classify: {GREETING}")
    );
    assert!(classifier.tools.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_person_answering_goes_on_with_the_conversation() {
    let llm = ScriptedLlm::new(vec![vec![text("Hello Sam!")], vec![text("no")]]);
    let phone = Arc::new(Phone::default());
    let mut h = harness(
        agent("Sell things."),
        llm.clone(),
        voicemail(VoicemailAction::HangUp),
        Some(phone.clone()),
    )
    .await;
    h.user_says("hello this is Sam", 0.9).await;
    assert!(!h.until(verdict).await);
    h.user_says("who is this", 0.9).await;
    let turn = h.until(turn_text).await;
    assert_eq!(turn, "who is this");
    assert!(phone.hangups.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_message_is_left_after_the_greeting_stops_then_the_call_ends() {
    let llm = ScriptedLlm::new(vec![long_answer(), vec![text("yes")]]);
    let phone = Arc::new(Phone::default());
    let mut h = harness(
        agent("Sell things."),
        llm.clone(),
        voicemail(VoicemailAction::LeaveMessage("Please call us back.".into())),
        Some(phone.clone()),
    )
    .await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    final_(&h, GREETING).await;
    assert!(h.until(verdict).await);
    // The greeting goes on: nothing is said over it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!h
        .tts_texts
        .lock()
        .unwrap()
        .contains(&"Please call us back.".to_string()));
    input.user(UserInput::SpeechEnded);
    h.agent_state(AgentState::Closing).await;
    assert_eq!(
        h.tts_texts.lock().unwrap().last().unwrap(),
        "Please call us back."
    );
    assert_eq!(*phone.hangups.lock().unwrap(), vec!["voicemail"]);
}

// ---- hooks -------------------------------------------------------------------------------

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Hooks for Recorder {
    fn stt_text(&self, text: String) -> Option<String> {
        (text != "um").then(|| text.replace("hark", "Hark"))
    }
    fn llm_text(&self, text: String) -> String {
        text.replace("1234", "****")
    }
    fn tts_text(&self, text: String) -> String {
        text.replace("PIN", "pin")
    }
    fn user_turn_start(&self, transcript: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("user start: {transcript}"));
    }
    fn user_turn_end(&self) {
        self.0.lock().unwrap().push("user end".into());
    }
    fn agent_turn_start(&self) {
        self.0.lock().unwrap().push("agent start".into());
    }
    fn agent_turn_end(&self) {
        self.0.lock().unwrap().push("agent end".into());
    }
}

#[tokio::test(start_paused = true)]
async fn hooks_rewrite_transcripts_reported_text_and_spoken_text_and_see_each_turn() {
    let hooks = Arc::new(Recorder::default());
    let llm = ScriptedLlm::new(vec![vec![text("Your PIN is 1234.")]]);
    let options = SessionOptions {
        hooks: hooks.clone().into(),
        ..SessionOptions::default()
    };
    let mut h = harness(agent("Help."), llm.clone(), options, None).await;
    h.user_says("um", 0.9).await;
    h.user_says("hello hark", 0.9).await;
    assert_eq!(h.until(turn_text).await, "hello Hark");
    let shown = h
        .until(|e| match e {
            SessionEvent::AgentText { text } => Some(text.clone()),
            _ => None,
        })
        .await;
    assert_eq!(shown, "Your PIN is ****.");
    h.agent_state(AgentState::Idle).await;
    assert_eq!(*h.tts_texts.lock().unwrap(), vec!["Your pin is 1234."]);
    // The model keeps its own words.
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(history[1]["content"][0], "Your PIN is 1234.");
    assert_eq!(
        *hooks.0.lock().unwrap(),
        vec![
            "user start: hello Hark",
            "agent start",
            "agent end",
            "user end"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_turn_still_ends_its_hooks() {
    let hooks = Arc::new(Recorder::default());
    let llm = ScriptedLlm::new(vec![long_answer()]);
    let options = SessionOptions {
        hooks: hooks.clone().into(),
        ..SessionOptions::default()
    };
    let mut h = harness(agent("Talk."), llm, options, None).await;
    h.user_says("tell me a story", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    h.session.interrupt(false).await.unwrap().unwrap();
    h.agent_state(AgentState::Listening).await;
    assert_eq!(
        *hooks.0.lock().unwrap(),
        vec![
            "user start: tell me a story",
            "agent start",
            "agent end",
            "user end"
        ]
    );
}

// ---- thinking and background sounds ------------------------------------------------------

/// Answers after `delay`, so the agent visibly thinks.
struct SlowLlm {
    delay: Duration,
    inner: Arc<ScriptedLlm>,
}

#[async_trait]
impl Llm for SlowLlm {
    fn label(&self) -> &str {
        "slow"
    }
    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        tokio::time::sleep(self.delay).await;
        self.inner.chat(request).await
    }
}

/// Every frame's peak level and when it was written (room reserved up front).
#[derive(Clone)]
struct Levels(Arc<Mutex<Vec<(Instant, f32)>>>);

impl AudioSink for Levels {
    fn write(&mut self, frame: &[f32]) {
        let peak = frame.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        self.0.lock().unwrap().push((Instant::now(), peak));
    }
}

impl Levels {
    fn between(&self, from: Instant, to: Instant) -> Vec<f32> {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, p)| *p)
            .collect()
    }
}

/// A thinking sound at 0.5 × 0.2 = 0.1 peak.
fn thinking() -> SessionOptions {
    SessionOptions {
        thinking_audio: Some(ThinkingAudio {
            clip: tone(0.5, 0.3),
            volume: 0.2,
        }),
        ..SessionOptions::default()
    }
}

fn tone(level: f32, seconds: f32) -> Clip {
    Clip::new(RATE, vec![level; (seconds * RATE as f32) as usize]).unwrap()
}

async fn mixing_session(
    answer_after: Duration,
    options: SessionOptions,
) -> (AgentSession, Levels, tokio::sync::mpsc::Sender<SttEvent>) {
    let (stt_tx, stt_rx) = tokio::sync::mpsc::channel(8);
    let levels = Levels(Arc::new(Mutex::new(Vec::with_capacity(10_000))));
    let llm = SlowLlm {
        delay: answer_after,
        inner: ScriptedLlm::new(vec![vec![text("Here you go.")]]),
    };
    let session = AgentSession::start(
        agent("Help."),
        Providers {
            stt: Some(Arc::new(ScriptedStt {
                events: Mutex::new(Some(stt_rx)),
                flushes: Arc::default(),
            })),
            llm: Some(Arc::new(llm)),
            tts: Some(Arc::new(ScriptedTts::default())),
            turn_detector: false,
            vad: true,
            ..Providers::default()
        },
        options,
        Box::new(levels.clone()),
        ToolContext::default(),
    )
    .await
    .unwrap();
    (session, levels, stt_tx)
}

#[tokio::test(start_paused = true)]
async fn the_thinking_sound_plays_while_the_llm_works_and_stops_at_the_first_word() {
    let (session, levels, stt) = mixing_session(Duration::from_secs(2), thinking()).await;
    let mut events = session.subscribe();
    stt.send(SttEvent::Final {
        text: "what is on tonight".into(),
        confidence: None,
    })
    .await
    .unwrap();
    let thinking_at = loop {
        if let SessionEvent::AgentStateChanged {
            state: AgentState::Thinking,
        } = events.recv().await.unwrap()
        {
            break Instant::now();
        }
    };
    let speaking_at = loop {
        if let SessionEvent::AgentStateChanged {
            state: AgentState::Speaking,
        } = events.recv().await.unwrap()
        {
            break Instant::now();
        }
    };
    loop {
        if let SessionEvent::AgentStateChanged {
            state: AgentState::Idle,
        } = events.recv().await.unwrap()
        {
            break;
        }
    }
    // Two seconds of thinking: 100 frames of the looping sound at 0.5 × 0.2.
    let thinking = levels.between(thinking_at, speaking_at);
    assert!(thinking.len() >= 99, "{} frames", thinking.len());
    assert!(thinking.iter().all(|p| (p - 0.1).abs() < 1e-6));
    // Then speech alone (0.5), with no thinking mixed in.
    let speech = levels.between(speaking_at, Instant::now());
    assert!(!speech.is_empty());
    assert!(speech.iter().all(|p| *p <= 0.5 + 1e-6), "{speech:?}");
    assert!((speech[0] - 0.5).abs() < 1e-6);
}

#[tokio::test(start_paused = true)]
async fn background_audio_plays_to_its_end_and_says_so() {
    let (session, levels, _stt) = mixing_session(Duration::ZERO, SessionOptions::default()).await;
    let mut events = session.subscribe();
    let t0 = Instant::now();
    session
        .play_background(
            tone(0.25, 0.5),
            BackgroundOptions {
                volume: 1.0,
                looping: false,
                override_thinking: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        SessionEvent::BackgroundAudio { playing: true }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        SessionEvent::BackgroundAudio { playing: false }
    );
    // The last frame is written at the instant the end is reported.
    let ended = Instant::now() + Duration::from_millis(1);
    let frames = levels.between(t0, ended);
    assert_eq!(frames.len(), 25, "0.5 s in 20 ms frames");
    assert!(frames.iter().all(|p| (p - 0.25).abs() < 1e-6));
    // The clock stops with the sound: nothing more is written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(levels.between(t0, Instant::now()).len(), 25);
    assert_eq!(levels.between(ended, Instant::now()).len(), 0);
}

#[tokio::test(start_paused = true)]
async fn exclusive_background_music_silences_the_thinking_sound() {
    let (session, levels, stt) = mixing_session(Duration::from_secs(2), thinking()).await;
    session
        .play_background(
            tone(0.25, 1.0),
            BackgroundOptions {
                volume: 1.0,
                looping: true,
                override_thinking: false,
            },
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    stt.send(SttEvent::Final {
        text: "anything on".into(),
        confidence: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_900)).await;
    let frames = levels.between(t0 + Duration::from_millis(600), Instant::now());
    assert!(!frames.is_empty());
    // Music only: the thinking sound (0.1) would lift the peak to 0.35.
    assert!(frames.iter().all(|p| (p - 0.25).abs() < 1e-6), "{frames:?}");
    session.stop_background().await.unwrap();
}

// ---- speech while tools run, and turns that must wait --------------------------------------

/// A slow lookup that tells the user to hold on first.
struct Lookup {
    spec: ToolSpec,
    said: Arc<Mutex<Option<hark::session::UtteranceHandle>>>,
}

#[async_trait]
impl Tool for Lookup {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, _args: Value, cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let session = cx
            .session
            .as_ref()
            .expect("the session runs its tools with itself");
        let h = session.say("One moment please.", true).await.unwrap();
        *self.said.lock().unwrap() = Some(h);
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(ToolOutput::Text("Order 17 ships Monday.".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_saying_hold_on_joins_the_reply_which_then_gives_the_result() {
    let said = Arc::new(Mutex::new(None));
    let lookup: Arc<dyn Tool> = Arc::new(Lookup {
        spec: ToolSpec {
            name: "lookup".into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        },
        said: said.clone(),
    });
    let agent = Arc::new(Greeter {
        instructions: "Track orders.".into(),
        greeting: None,
        tools: vec![lookup],
    });
    let llm = ScriptedLlm::new(vec![
        vec![call("c1", "lookup", json!({}))],
        vec![text("It ships Monday.")],
    ]);
    let mut h = harness(agent, llm.clone(), SessionOptions::default(), None).await;
    h.user_says("where is my order", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    let spoke_at = h.elapsed_ms();
    h.agent_state(AgentState::Idle).await;
    // "One moment please." plays while the tool works; the answer follows in the same reply.
    assert_eq!(
        *h.tts_texts.lock().unwrap(),
        vec!["One moment please.", "It ships Monday."]
    );
    assert!(
        h.elapsed_ms() - spoke_at >= 3_000,
        "the answer waited for the tool"
    );
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "the tool's result went back to the LLM");
    let said = said.lock().unwrap().clone().unwrap();
    assert!(said.is_done() && !said.interrupted());
}

#[tokio::test(start_paused = true)]
async fn a_turn_decided_during_a_non_interruptible_notice_is_answered_after_it() {
    let llm = ScriptedLlm::new(vec![vec![text("Hello there.")]]);
    let mut h = harness(
        agent("Greet."),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("hello", 0.2).await;
    // The end-of-utterance wait (0.8 s) is running when a notice that may not be cut starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let notice = h
        .session
        .say(
            "This call may be recorded for quality and training purposes, thank you for waiting.",
            false,
        )
        .await
        .unwrap();
    assert_eq!(h.until(turn_text).await, "hello");
    assert!(llm.requests().is_empty(), "nothing answers over the notice");
    notice.wait().await;
    assert!(!notice.interrupted());
    h.agent_state(AgentState::Thinking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(
        *h.tts_texts.lock().unwrap(),
        vec![
            "This call may be recorded for quality and training purposes, thank you for waiting.",
            "Hello there."
        ]
    );
}
