//! The conversation engine on a paused clock, with scripted providers: every timing rule of
//! the spec (end-of-utterance waits, barge-in, false-interruption resume, wake-up timer) is
//! checked to the millisecond, and whole conversations are checked event by event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::{Agent, Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use hark::providers::{
    AudioStream, Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, Stt, SttEvent, SttInput,
    SttSession, ToolCallRequest, Tts,
};
use hark::session::{
    AgentSession, AgentState, AudioSink, EouConfig, EouMode, InterruptConfig, InterruptMode,
    Providers, SessionEvent, SessionHandle, SessionOptions, UserInput, WakeUp,
};
use hark::transport::{CallControl, CallError};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

// ---- scripted parts --------------------------------------------------------------------

struct ScriptedStt {
    events: Mutex<Option<mpsc::Receiver<SttEvent>>>,
    flushes: Arc<Mutex<usize>>,
}

struct CountingInput(Arc<Mutex<usize>>);
impl SttInput for CountingInput {
    fn push_audio(&mut self, _samples: &[f32]) {}
    fn flush(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

#[async_trait]
impl Stt for ScriptedStt {
    fn label(&self) -> &str {
        "scripted"
    }
    async fn connect(&self) -> Result<SttSession, ProviderError> {
        Ok(SttSession {
            input: Box::new(CountingInput(self.flushes.clone())),
            events: self.events.lock().unwrap().take().expect("one connection"),
        })
    }
}

/// Answers each request with the next scripted list of events, at once.
#[derive(Default)]
struct ScriptedLlm {
    answers: Mutex<VecDeque<Vec<LlmEvent>>>,
    requests: Mutex<Vec<LlmRequest>>,
}

impl ScriptedLlm {
    fn new(answers: Vec<Vec<LlmEvent>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            requests: Mutex::default(),
        })
    }
    fn requests(&self) -> Vec<LlmRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl Llm for ScriptedLlm {
    fn label(&self) -> &str {
        "scripted"
    }
    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        self.requests.lock().unwrap().push(request);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| vec![text("Okay.")]);
        let (tx, rx) = mpsc::channel(64);
        for ev in answer {
            tx.try_send(Ok(ev)).unwrap();
        }
        Ok(rx)
    }
}

fn text(t: &str) -> LlmEvent {
    LlmEvent::Text(t.into())
}

fn call(id: &str, name: &str, args: Value) -> LlmEvent {
    LlmEvent::ToolCall(ToolCallRequest {
        call_id: id.into(),
        name: name.into(),
        arguments: args.to_string(),
    })
}

/// 10 ms of audio (value 0.5) per character of each text segment, sent at once.
#[derive(Default)]
struct ScriptedTts {
    texts: Arc<Mutex<Vec<String>>>,
}

const RATE: u32 = 16_000;

#[async_trait]
impl Tts for ScriptedTts {
    fn label(&self) -> &str {
        "scripted"
    }
    fn sample_rate(&self) -> u32 {
        RATE
    }
    async fn synthesize(
        &self,
        mut text: mpsc::Receiver<String>,
    ) -> Result<AudioStream, ProviderError> {
        let (tx, rx) = mpsc::channel(64);
        let texts = self.texts.clone();
        tokio::spawn(async move {
            while let Some(t) = text.recv().await {
                texts.lock().unwrap().push(t.clone());
                let n = t.chars().count() * RATE as usize / 100;
                if tx.send(Ok(vec![0.5; n])).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// Counts the voiced samples the transport received, and when voiced frames came.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<(usize, Vec<Instant>)>>);
impl AudioSink for Sink {
    fn write(&mut self, frame: &[f32]) {
        let mut s = self.0.lock().unwrap();
        let voiced = frame.iter().filter(|x| **x != 0.0).count();
        s.0 += voiced;
        if voiced > 0 {
            s.1.push(Instant::now());
        }
    }
}
impl Sink {
    fn voiced_seconds(&self) -> f64 {
        self.0.lock().unwrap().0 as f64 / f64::from(RATE)
    }
    fn voiced_frames_between(&self, from: Instant, to: Instant) -> usize {
        self.0
            .lock()
            .unwrap()
            .1
            .iter()
            .filter(|t| **t > from && **t < to)
            .count()
    }
}

struct Greeter {
    instructions: String,
    greeting: Option<String>,
    tools: Vec<Arc<dyn Tool>>,
}

#[async_trait]
impl Agent for Greeter {
    fn instructions(&self) -> String {
        self.instructions.clone()
    }
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools.clone()
    }
    async fn on_enter(&self, session: &SessionHandle) {
        if let Some(g) = &self.greeting {
            session.say(g.clone(), true).await.unwrap();
        }
    }
}

fn agent(instructions: &str) -> Arc<dyn Agent> {
    Arc::new(Greeter {
        instructions: instructions.into(),
        greeting: None,
        tools: Vec::new(),
    })
}

struct Harness {
    session: AgentSession,
    stt: mpsc::Sender<SttEvent>,
    events: broadcast::Receiver<SessionEvent>,
    sink: Sink,
    tts_texts: Arc<Mutex<Vec<String>>>,
    t0: Instant,
}

async fn harness(
    agent: Arc<dyn Agent>,
    llm: Arc<ScriptedLlm>,
    options: SessionOptions,
    call: Option<Arc<dyn CallControl>>,
) -> Harness {
    let (stt_tx, stt_rx) = mpsc::channel(64);
    let stt = Arc::new(ScriptedStt {
        events: Mutex::new(Some(stt_rx)),
        flushes: Arc::default(),
    });
    let tts = ScriptedTts::default();
    let tts_texts = tts.texts.clone();
    let sink = Sink::default();
    let providers = Providers {
        stt: Some(stt),
        llm: Some(llm),
        tts: Some(Arc::new(tts)),
        turn_detector: true,
        vad: true,
    };
    let session = AgentSession::start(
        agent,
        providers,
        options,
        Box::new(sink.clone()),
        ToolContext { call },
    )
    .await
    .unwrap();
    let events = session.subscribe();
    Harness {
        session,
        stt: stt_tx,
        events,
        sink,
        tts_texts,
        t0: Instant::now(),
    }
}

impl Harness {
    /// Seconds of audio the scripted TTS produced so far (10 ms per character).
    fn tts_seconds(&self) -> f64 {
        let chars: usize = self
            .tts_texts
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.chars().count())
            .sum();
        chars as f64 * 0.01
    }

    /// The next event matching `f`, skipping others.
    async fn until<T>(&mut self, mut f: impl FnMut(&SessionEvent) -> Option<T>) -> T {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(600), self.events.recv())
                .await
                .expect("event within 10 minutes of session time")
                .expect("event stream open");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    }

    async fn agent_state(&mut self, want: AgentState) {
        self.until(|e| match e {
            SessionEvent::AgentStateChanged { state } if *state == want => Some(()),
            _ => None,
        })
        .await
    }

    fn elapsed_ms(&self) -> u128 {
        (Instant::now() - self.t0).as_millis()
    }

    /// The user says `text`: speech start, final transcript, speech end, turn verdict `p`.
    async fn user_says(&mut self, text: &str, p: f32) {
        let input = self.session.input();
        input.user(UserInput::SpeechStarted);
        self.stt
            .send(SttEvent::Final {
                text: text.into(),
                confidence: None,
            })
            .await
            .unwrap();
        input.user(UserInput::SpeechEnded);
        input.user(UserInput::TurnProbability(p));
    }

    /// Collects every event until the agent is idle again after speaking.
    async fn events_until_idle(&mut self) -> Vec<SessionEvent> {
        let mut seen = Vec::new();
        let mut spoke = false;
        loop {
            let e = self.events.recv().await.unwrap();
            if matches!(
                e,
                SessionEvent::AgentStateChanged {
                    state: AgentState::Speaking
                }
            ) {
                spoke = true;
            }
            let idle = spoke
                && matches!(
                    e,
                    SessionEvent::AgentStateChanged {
                        state: AgentState::Idle
                    }
                );
            seen.push(e);
            if idle {
                return seen;
            }
        }
    }
}

fn turn_text(e: &SessionEvent) -> Option<String> {
    match e {
        SessionEvent::UserTurn { text } => Some(text.clone()),
        _ => None,
    }
}

// ---- end of utterance ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn default_eou_waits_max_when_the_turn_detector_is_unsure() {
    let mut h = harness(
        agent("Be brief."),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("what time is it", 0.3).await;
    let t = h.until(turn_text).await;
    assert_eq!(t, "what time is it");
    assert_eq!(h.elapsed_ms(), 800);
}

#[tokio::test(start_paused = true)]
async fn default_eou_waits_min_when_the_turn_detector_is_sure() {
    let mut h = harness(
        agent("Be brief."),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("what time is it", 0.85).await;
    h.until(turn_text).await;
    assert_eq!(h.elapsed_ms(), 500);
}

#[tokio::test(start_paused = true)]
async fn adaptive_eou_slides_with_the_probability() {
    let options = SessionOptions {
        eou: EouConfig {
            mode: EouMode::Adaptive,
            min_max_speech_wait_timeout: [0.5, 1.5],
        },
        ..SessionOptions::default()
    };
    let mut h = harness(agent("Be brief."), ScriptedLlm::new(vec![]), options, None).await;
    h.user_says("what time is it", 0.25).await;
    h.until(turn_text).await;
    assert_eq!(h.elapsed_ms(), 1250);
}

#[tokio::test(start_paused = true)]
async fn continued_speech_cancels_the_wait_and_the_transcripts_accumulate() {
    let mut h = harness(
        agent("Be brief."),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("book a table", 0.2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Before the 0.8 s wait ends the user goes on.
    h.user_says("for two people", 0.9).await;
    let t = h.until(turn_text).await;
    assert_eq!(t, "book a table for two people");
    assert_eq!(h.elapsed_ms(), 600 + 500);
}

// ---- a whole exchange ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_turn_goes_from_transcript_to_llm_to_speech_with_change_only_states() {
    let llm = ScriptedLlm::new(vec![vec![text("It is noon. "), text("Anything else?")]]);
    let mut h = harness(
        agent("You tell the time."),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("what time is it", 0.9).await;
    let events = h.events_until_idle().await;
    let states: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::AgentStateChanged { state } => Some(format!("agent:{state:?}")),
            SessionEvent::UserStateChanged { state } => Some(format!("user:{state:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            "user:Speaking",
            "agent:Listening",
            "user:Idle",
            "agent:Idle",
            "agent:Thinking",
            "agent:Speaking",
            "user:Listening",
            "user:Idle",
            "agent:Idle"
        ]
    );
    // The LLM saw the instructions and the user's words; TTS got the reply text.
    let req = &llm.requests()[0];
    let items = req.context.to_json()["items"].clone();
    assert_eq!(items[0]["role"], "system");
    assert_eq!(items[0]["content"][0], "You tell the time.");
    assert_eq!(items[1]["role"], "user");
    assert_eq!(
        h.tts_texts.lock().unwrap().join(" "),
        "It is noon. Anything else?"
    );
    // All of it was played.
    assert!((h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001);
    // The reply joined the history, and the turn's metrics are complete.
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(
        history.last().unwrap()["content"][0],
        "It is noon. Anything else?"
    );
    let m = events
        .iter()
        .find_map(|e| match e {
            SessionEvent::TurnMetrics(m) => Some(m.clone()),
            _ => None,
        })
        .expect("turn metrics");
    for (name, v) in [
        ("user_speech_end", m.user_speech_end),
        ("stt_final", m.stt_final),
        ("eou_decision", m.eou_decision),
        ("llm_request", m.llm_request),
        ("llm_first_token", m.llm_first_token),
        ("tts_first_byte", m.tts_first_byte),
        ("first_sample_played", m.first_sample_played),
    ] {
        assert!(v.is_some(), "{name} missing: {m:?}");
    }
    assert_eq!(m.eou_probability, Some(0.9));
    assert!(m.eou_decision.unwrap() - m.stt_final.unwrap() >= 0.5);
    assert!(m.interrupted.is_none());
}

// ---- interruptions ---------------------------------------------------------------------

/// A reply of about 3 s of audio.
fn long_answer() -> Vec<LlmEvent> {
    vec![text(
        &"This is a long answer that goes on and on. ".repeat(7),
    )]
}

async fn speaking(options: SessionOptions) -> Harness {
    let llm = ScriptedLlm::new(vec![long_answer()]);
    let mut h = harness(agent("Talk a lot."), llm, options, None).await;
    h.user_says("tell me a story", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    h
}

#[tokio::test(start_paused = true)]
async fn half_a_second_of_user_speech_interrupts_and_keeps_the_partial_reply() {
    let mut h = speaking(SessionOptions::default()).await;
    let start = Instant::now();
    h.session.input().user(UserInput::SpeechStarted);
    h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
        .await;
    assert_eq!((Instant::now() - start).as_millis(), 500);
    assert!(h.sink.voiced_seconds() < 1.0, "playback stopped early");
    let history = h.session.history(false, false).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["interrupted"], true);
}

#[tokio::test(start_paused = true)]
async fn speech_shorter_than_the_minimum_does_not_interrupt() {
    let mut h = speaking(SessionOptions::default()).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    input.user(UserInput::SpeechEnded);
    let events = h.until_idle().await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::Interrupted)));
    assert!(h.sink.voiced_seconds() > 2.5);
}

#[tokio::test(start_paused = true)]
async fn two_words_of_transcript_interrupt_in_hybrid_and_stt_only_modes_but_one_does_not() {
    for mode in [InterruptMode::Hybrid, InterruptMode::SttOnly] {
        let options = SessionOptions {
            interrupt: InterruptConfig {
                mode,
                ..InterruptConfig::default()
            },
            ..SessionOptions::default()
        };
        let mut h = speaking(options).await;
        h.stt.send(SttEvent::Interim("wait".into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.stt
            .send(SttEvent::Interim("wait stop".into()))
            .await
            .unwrap();
        let start = Instant::now();
        h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
            .await;
        assert_eq!(Instant::now(), start, "{mode:?}: at the second word");
    }
}

#[tokio::test(start_paused = true)]
async fn vad_only_mode_ignores_words() {
    let options = SessionOptions {
        interrupt: InterruptConfig {
            mode: InterruptMode::VadOnly,
            ..InterruptConfig::default()
        },
        ..SessionOptions::default()
    };
    let mut h = speaking(options).await;
    h.stt
        .send(SttEvent::Interim("wait stop now".into()))
        .await
        .unwrap();
    let events = h.until_idle().await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::Interrupted)));
}

#[tokio::test(start_paused = true)]
async fn a_non_interruptible_say_plays_to_the_end_and_refuses_unforced_interrupts() {
    let mut h = harness(
        agent("x"),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        None,
    )
    .await;
    let line = "Please listen to this important notice in full.";
    let handle = h.session.say(line, false).await.unwrap();
    h.agent_state(AgentState::Speaking).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    h.stt
        .send(SttEvent::Interim("stop talking now".into()))
        .await
        .unwrap();
    assert_eq!(
        h.session.interrupt(false).await.unwrap(),
        Err(hark::session::NotInterruptible)
    );
    handle.wait().await;
    assert!(!handle.interrupted());
    assert!((h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001);
    // Forcing works on the next one.
    let handle = h.session.say(line, false).await.unwrap();
    h.agent_state(AgentState::Speaking).await;
    assert_eq!(h.session.interrupt(true).await.unwrap(), Ok(()));
    assert!(handle.interrupted());
}

#[tokio::test(start_paused = true)]
async fn a_false_interruption_pauses_then_resumes_and_the_reply_completes() {
    let options = SessionOptions {
        interrupt: InterruptConfig {
            resume_on_false_interrupt: true,
            ..InterruptConfig::default()
        },
        ..SessionOptions::default()
    };
    let mut h = speaking(options).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    h.until(|e| matches!(e, SessionEvent::SpeechPaused).then_some(()))
        .await;
    let paused_at = Instant::now();
    input.user(UserInput::SpeechEnded); // a cough, no words
    h.until(|e| matches!(e, SessionEvent::SpeechResumed).then_some(()))
        .await;
    assert_eq!((Instant::now() - paused_at).as_millis(), 2000);
    assert_eq!(
        h.sink.voiced_frames_between(paused_at, Instant::now()),
        0,
        "silent while paused"
    );
    let events = h.until_idle().await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::Interrupted)));
    assert!(h.sink.voiced_seconds() > 2.9, "{}", h.sink.voiced_seconds());
}

#[tokio::test(start_paused = true)]
async fn words_during_a_false_interruption_pause_confirm_it() {
    let options = SessionOptions {
        interrupt: InterruptConfig {
            resume_on_false_interrupt: true,
            ..InterruptConfig::default()
        },
        ..SessionOptions::default()
    };
    let mut h = speaking(options).await;
    h.session.input().user(UserInput::SpeechStarted);
    h.until(|e| matches!(e, SessionEvent::SpeechPaused).then_some(()))
        .await;
    h.stt
        .send(SttEvent::Interim("no wait".into()))
        .await
        .unwrap();
    h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
        .await;
}

impl Harness {
    /// Collects every event until the agent is idle.
    async fn until_idle(&mut self) -> Vec<SessionEvent> {
        let mut seen = Vec::new();
        loop {
            let e = self.events.recv().await.unwrap();
            let idle = matches!(
                e,
                SessionEvent::AgentStateChanged {
                    state: AgentState::Idle
                }
            );
            seen.push(e);
            if idle {
                return seen;
            }
        }
    }
}

// ---- replies ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_reply_while_replying_is_dropped_and_returns_the_current_handle() {
    let llm = ScriptedLlm::new(vec![long_answer(), vec![text("second")]]);
    let h = harness(agent("x"), llm.clone(), SessionOptions::default(), None).await;
    let first = h.session.reply("Tell a story.", false, true).await.unwrap();
    let second = h
        .session
        .reply("Say something else.", false, true)
        .await
        .unwrap();
    assert!(first.same(&second));
    first.wait().await;
    assert_eq!(llm.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reply_waits_for_playback_when_asked() {
    let llm = ScriptedLlm::new(vec![vec![text("Hello there, welcome.")]]);
    let h = harness(agent("x"), llm, SessionOptions::default(), None).await;
    let handle = h
        .session
        .reply("Greet the user.", true, true)
        .await
        .unwrap();
    assert!(handle.is_done() && !handle.interrupted());
    assert!(h.tts_seconds() > 0.15);
    assert!((h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001);
}

// ---- tools -----------------------------------------------------------------------------

struct Weather {
    spec: ToolSpec,
    calls: Arc<Mutex<Vec<Value>>>,
}

#[async_trait]
impl Tool for Weather {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        self.calls.lock().unwrap().push(args.clone());
        // Both calls of a parallel batch wait here; run serially they would take 2 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match args["city"].as_str() {
            Some("Atlantis") => Err(ToolError::Failed("unknown city".into())),
            Some(city) => Ok(ToolOutput::Json(json!({"city": city, "temp_c": 21}))),
            None => Err(ToolError::InvalidArguments("city missing".into())),
        }
    }
}

fn weather_agent(calls: Arc<Mutex<Vec<Value>>>) -> Arc<dyn Agent> {
    Arc::new(Greeter {
        instructions: "You know the weather.".into(),
        greeting: None,
        tools: vec![Arc::new(Weather {
            spec: ToolSpec {
                name: "get_weather".into(),
                description: "Weather in a city.".into(),
                parameters: json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}),
            },
            calls,
        })],
    })
}

#[tokio::test(start_paused = true)]
async fn parallel_tool_calls_run_together_and_errors_go_back_to_the_llm() {
    let calls = Arc::default();
    let llm = ScriptedLlm::new(vec![
        vec![
            call("c1", "get_weather", json!({"city": "Paris"})),
            call("c2", "get_weather", json!({"city": "Atlantis"})),
        ],
        vec![text("Paris is 21 degrees; I don't know Atlantis.")],
    ]);
    let mut h = harness(
        weather_agent(Arc::clone(&calls)),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("weather in paris and atlantis", 0.9).await;
    h.until(turn_text).await;
    let asked = Instant::now();
    h.agent_state(AgentState::Speaking).await;
    assert_eq!(
        (Instant::now() - asked).as_millis(),
        1000,
        "both tools ran at once"
    );
    assert_eq!(calls.lock().unwrap().len(), 2);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].tools[0].name, "get_weather");
    let items = reqs[1].context.to_json()["items"]
        .as_array()
        .unwrap()
        .clone();
    let outputs: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["call_id"], "c1");
    assert_eq!(outputs[0]["is_error"], false);
    assert!(outputs[0]["output"].as_str().unwrap().contains("21"));
    assert_eq!(outputs[1]["call_id"], "c2");
    assert_eq!(outputs[1]["is_error"], true);
    assert_eq!(outputs[1]["output"], "unknown city");
}

#[tokio::test(start_paused = true)]
async fn tool_rounds_stop_at_the_depth_limit() {
    let calls = Arc::default();
    let again = || vec![call("c", "get_weather", json!({"city": "Oslo"}))];
    let llm = ScriptedLlm::new(vec![again(), again(), again(), again()]);
    let options = SessionOptions {
        max_tool_depth: 3,
        ..SessionOptions::default()
    };
    let mut h = harness(
        weather_agent(Arc::clone(&calls)),
        llm.clone(),
        options,
        None,
    )
    .await;
    h.user_says("weather forever", 0.9).await;
    h.until(turn_text).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(llm.requests().len(), 3);
    assert_eq!(calls.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn unknown_tools_and_bad_arguments_are_reported_to_the_llm() {
    let calls = Arc::default();
    let llm = ScriptedLlm::new(vec![
        vec![
            call("a", "launch_rockets", json!({})),
            LlmEvent::ToolCall(ToolCallRequest {
                call_id: "b".into(),
                name: "get_weather".into(),
                arguments: "{not json".into(),
            }),
        ],
        vec![text("Sorry.")],
    ]);
    let mut h = harness(
        weather_agent(calls),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("do things", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    let items = llm.requests()[1].context.to_json()["items"]
        .as_array()
        .unwrap()
        .clone();
    let outputs: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs[0]["output"], "no tool named \"launch_rockets\"");
    assert!(outputs[1]["output"]
        .as_str()
        .unwrap()
        .starts_with("invalid arguments"));
}

struct HandOff {
    spec: ToolSpec,
    to: Arc<dyn Agent>,
}

#[async_trait]
impl Tool for HandOff {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, _args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::Handoff(
            self.to.clone(),
            "Transferred to billing.".into(),
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_returning_an_agent_hands_the_conversation_over() {
    let billing: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You are the billing agent.".into(),
        greeting: Some("Billing here, how can I help?".into()),
        tools: Vec::new(),
    });
    let front: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You are the front desk.".into(),
        greeting: None,
        tools: vec![Arc::new(HandOff {
            spec: ToolSpec {
                name: "to_billing".into(),
                description: "Hand over to billing.".into(),
                parameters: json!({"type":"object","properties":{}}),
            },
            to: billing,
        })],
    });
    let llm = ScriptedLlm::new(vec![
        vec![call("h", "to_billing", json!({}))],
        vec![text("Your bill is paid.")],
    ]);
    let mut h = harness(front, llm.clone(), SessionOptions::default(), None).await;
    h.user_says("a question about my bill", 0.9).await;
    h.until(|e| matches!(e, SessionEvent::AgentSwitched).then_some(()))
        .await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(
        h.tts_texts.lock().unwrap().concat(),
        "Billing here, how can I help?"
    );
    h.user_says("is it paid", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    let reqs = llm.requests();
    let items = reqs[1].context.to_json()["items"].clone();
    assert_eq!(items[0]["content"][0], "You are the billing agent.");
    assert!(reqs[1].tools.is_empty(), "the billing agent has no tools");
}

// ---- wake-up timer ---------------------------------------------------------------------

#[derive(Default)]
struct Phone(Mutex<Vec<String>>);

#[async_trait]
impl CallControl for Phone {
    async fn hangup(&self, reason: &str) -> Result<(), CallError> {
        self.0.lock().unwrap().push(reason.into());
        Ok(())
    }
    async fn transfer(&self, _target: &str) -> Result<(), CallError> {
        Err(CallError::Unsupported)
    }
    async fn send_dtmf(&self, _digits: &str) -> Result<(), CallError> {
        Err(CallError::Unsupported)
    }
}

#[tokio::test(start_paused = true)]
async fn the_wake_up_timer_reprompts_then_says_goodbye_and_hangs_up() {
    let phone = Arc::new(Phone::default());
    let options = SessionOptions {
        wake_up: Some(WakeUp {
            after: Duration::from_secs(10),
            prompt: Some("Are you still there?".into()),
            max_prompts: 2,
            goodbye: Some("Goodbye.".into()),
        }),
        ..SessionOptions::default()
    };
    let mut h = harness(
        agent("x"),
        ScriptedLlm::new(vec![]),
        options,
        Some(phone.clone()),
    )
    .await;
    let mut fired = Vec::new();
    for _ in 0..3 {
        h.until(|e| matches!(e, SessionEvent::WakeUp).then_some(()))
            .await;
        fired.push(h.elapsed_ms());
    }
    // 10 s of silence, then 10 s after each prompt finished playing (0.2 s each).
    assert_eq!(fired, [10_000, 20_200, 30_400]);
    let session = h.session;
    session.closed().await;
    assert_eq!(
        h.tts_texts.lock().unwrap().clone(),
        ["Are you still there?", "Are you still there?", "Goodbye."]
    );
    assert_eq!(phone.0.lock().unwrap().clone(), ["wake_up_timeout"]);
}

#[tokio::test(start_paused = true)]
async fn user_speech_rearms_the_wake_up_timer_and_resets_the_prompts() {
    let options = SessionOptions {
        wake_up: Some(WakeUp {
            after: Duration::from_secs(10),
            prompt: Some("Hello?".into()),
            max_prompts: 1,
            goodbye: None,
        }),
        ..SessionOptions::default()
    };
    let mut h = harness(agent("x"), ScriptedLlm::new(vec![]), options, None).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    input.user(UserInput::SpeechEnded);
    h.until(|e| matches!(e, SessionEvent::WakeUp).then_some(()))
        .await;
    assert_eq!(h.elapsed_ms(), 18_000);
}

#[tokio::test(start_paused = true)]
async fn close_is_idempotent_and_ends_in_closing() {
    let mut h = harness(
        agent("x"),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        None,
    )
    .await;
    h.session.close().await;
    h.session.close().await;
    h.agent_state(AgentState::Closing).await;
    assert!(h.session.say("hello", true).await.is_err());
}
