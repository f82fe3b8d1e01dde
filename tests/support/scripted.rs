//! Scripted providers, agent and transport for driving sessions in tests and benchmarks:
//! zero-latency, deterministic, and recording what they were given.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::{Agent, Tool, ToolContext};
use hark::providers::{
    AudioStream, Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, Stt, SttEvent, SttInput,
    SttSession, ToolCallRequest, Tts,
};
use hark::session::{
    AgentSession, AgentState, AudioSink, Providers, SessionEvent, SessionHandle, SessionOptions,
    UserInput,
};
use hark::transport::CallControl;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

pub struct ScriptedStt {
    pub events: Mutex<Option<mpsc::Receiver<SttEvent>>>,
    pub flushes: Arc<Mutex<usize>>,
}

pub struct CountingInput(pub Arc<Mutex<usize>>);
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
pub struct ScriptedLlm {
    answers: Mutex<VecDeque<Vec<LlmEvent>>>,
    requests: Mutex<Vec<LlmRequest>>,
}

impl ScriptedLlm {
    pub fn new(answers: Vec<Vec<LlmEvent>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            requests: Mutex::default(),
        })
    }
    pub fn requests(&self) -> Vec<LlmRequest> {
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

pub fn text(t: &str) -> LlmEvent {
    LlmEvent::Text(t.into())
}

pub fn call(id: &str, name: &str, args: Value) -> LlmEvent {
    LlmEvent::ToolCall(ToolCallRequest {
        call_id: id.into(),
        name: name.into(),
        arguments: args.to_string(),
    })
}

/// 10 ms of audio (value 0.5) per character of each text segment, sent at once.
#[derive(Default)]
pub struct ScriptedTts {
    texts: Arc<Mutex<Vec<String>>>,
}

pub const RATE: u32 = 16_000;

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

/// Counts the voiced samples the transport received, and when voiced frames came (room for an
/// hour of frames is reserved, so recording never allocates on the session's path).
#[derive(Clone)]
pub struct Sink(pub Arc<Mutex<(usize, Vec<Instant>)>>);

impl Default for Sink {
    fn default() -> Self {
        Sink(Arc::new(Mutex::new((0, Vec::with_capacity(180_000)))))
    }
}
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
    pub fn voiced_seconds(&self) -> f64 {
        self.0.lock().unwrap().0 as f64 / f64::from(RATE)
    }
    pub fn voiced_frames_between(&self, from: Instant, to: Instant) -> usize {
        self.0
            .lock()
            .unwrap()
            .1
            .iter()
            .filter(|t| **t > from && **t < to)
            .count()
    }
}

pub struct Greeter {
    pub instructions: String,
    pub greeting: Option<String>,
    pub tools: Vec<Arc<dyn Tool>>,
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

pub fn agent(instructions: &str) -> Arc<dyn Agent> {
    Arc::new(Greeter {
        instructions: instructions.into(),
        greeting: None,
        tools: Vec::new(),
    })
}

pub struct Harness {
    pub session: AgentSession,
    pub stt: mpsc::Sender<SttEvent>,
    pub events: broadcast::Receiver<SessionEvent>,
    pub sink: Sink,
    pub tts_texts: Arc<Mutex<Vec<String>>>,
    pub t0: Instant,
}

pub async fn harness(
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
    pub fn tts_seconds(&self) -> f64 {
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
    pub async fn until<T>(&mut self, mut f: impl FnMut(&SessionEvent) -> Option<T>) -> T {
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

    pub async fn agent_state(&mut self, want: AgentState) {
        self.until(|e| match e {
            SessionEvent::AgentStateChanged { state } if *state == want => Some(()),
            _ => None,
        })
        .await
    }

    pub fn elapsed_ms(&self) -> u128 {
        (Instant::now() - self.t0).as_millis()
    }

    /// The user says `text`: speech start, final transcript, speech end, turn verdict `p`.
    pub async fn user_says(&mut self, text: &str, p: f32) {
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
    pub async fn events_until_idle(&mut self) -> Vec<SessionEvent> {
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

/// A session whose LLM answers "Okay." to everything.
pub async fn quiet(options: SessionOptions) -> Harness {
    harness(agent("Be brief."), ScriptedLlm::new(vec![]), options, None).await
}

pub fn turn_text(e: &SessionEvent) -> Option<String> {
    match e {
        SessionEvent::UserTurn { text } => Some(text.clone()),
        _ => None,
    }
}

/// A reply of about 3 s of audio.
pub fn long_answer() -> Vec<LlmEvent> {
    vec![text(
        &"This is a long answer that goes on and on. ".repeat(7),
    )]
}

pub async fn speaking(options: SessionOptions) -> Harness {
    let llm = ScriptedLlm::new(vec![long_answer()]);
    let mut h = harness(agent("Talk a lot."), llm, options, None).await;
    h.user_says("tell me a story", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    h
}

impl Harness {
    /// Collects every event until the agent is idle.
    pub async fn until_idle(&mut self) -> Vec<SessionEvent> {
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
