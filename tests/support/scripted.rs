//! Scripted providers, agent and transport for driving sessions in tests and benchmarks:
//! zero-latency, deterministic, and recording what they were given.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::{Agent, Tool, ToolContext};
use hark::providers::{
    AudioStream, Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, Realtime, RealtimeCommand,
    RealtimeEvent, RealtimeInput, RealtimeSession, RealtimeSetup, Stt, SttEvent, SttInput,
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
        realtime: None,
    };
    let session = AgentSession::start(
        agent,
        providers,
        options,
        Box::new(sink.clone()),
        ToolContext {
            call,
            ..ToolContext::default()
        },
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

// ---- realtime ------------------------------------------------------------------------------

/// The audio a scripted model heard, in a buffer reserved up front (30 s at 48 kHz) so
/// recording never allocates on the session's input path; beyond it only the count grows.
#[derive(Clone)]
pub struct Heard(pub Arc<Mutex<(usize, Vec<f32>)>>);

impl Default for Heard {
    fn default() -> Self {
        Heard(Arc::new(Mutex::new((0, Vec::with_capacity(48_000 * 30)))))
    }
}

impl Heard {
    /// Samples received.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().0
    }
    /// The samples kept (the first 30 s at most).
    pub fn samples(&self) -> Vec<f32> {
        self.0.lock().unwrap().1.clone()
    }
}

struct HeardInput(Heard);
impl RealtimeInput for HeardInput {
    fn push_audio(&mut self, samples: &[f32]) {
        let mut h = (self.0).0.lock().unwrap();
        h.0 += samples.len();
        let room = h.1.capacity() - h.1.len();
        h.1.extend_from_slice(&samples[..samples.len().min(room)]);
    }
}

/// A speech-to-speech model the test speaks for: whatever the test sends on
/// [`ModelScript::events`] the session receives from the model, and every command the session
/// sends arrives on [`ModelScript::commands`]. One connection.
pub struct ScriptedRealtime {
    pub input_rate: u32,
    pub output_rate: u32,
    setups: Arc<Mutex<Vec<RealtimeSetup>>>,
    heard: Heard,
    link: Mutex<
        Option<(
            mpsc::UnboundedSender<RealtimeCommand>,
            mpsc::Receiver<RealtimeEvent>,
        )>,
    >,
}

/// The test's side of a [`ScriptedRealtime`].
pub struct ModelScript {
    pub commands: mpsc::UnboundedReceiver<RealtimeCommand>,
    pub events: mpsc::Sender<RealtimeEvent>,
    pub heard: Heard,
    pub setups: Arc<Mutex<Vec<RealtimeSetup>>>,
    pub output_rate: u32,
}

impl ScriptedRealtime {
    pub fn new(input_rate: u32, output_rate: u32) -> (Arc<Self>, ModelScript) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(256);
        let setups = Arc::default();
        let heard = Heard::default();
        let model = Arc::new(Self {
            input_rate,
            output_rate,
            setups: Arc::clone(&setups),
            heard: heard.clone(),
            link: Mutex::new(Some((cmd_tx, ev_rx))),
        });
        let script = ModelScript {
            commands: cmd_rx,
            events: ev_tx,
            heard,
            setups,
            output_rate,
        };
        (model, script)
    }
}

#[async_trait]
impl Realtime for ScriptedRealtime {
    fn label(&self) -> &str {
        "scripted-realtime"
    }
    fn input_rate(&self) -> u32 {
        self.input_rate
    }
    fn output_rate(&self) -> u32 {
        self.output_rate
    }
    async fn connect(&self, setup: RealtimeSetup) -> Result<RealtimeSession, ProviderError> {
        self.setups.lock().unwrap().push(setup);
        let (commands, events) = self.link.lock().unwrap().take().expect("one connection");
        Ok(RealtimeSession {
            input: Box::new(HeardInput(self.heard.clone())),
            commands,
            events,
        })
    }
}

impl ModelScript {
    /// The model reports `ev`.
    pub async fn send(&self, ev: RealtimeEvent) {
        self.events.send(ev).await.expect("session listening");
    }

    /// `secs` of model speech (value 0.5) for `item`, in one chunk at the model's rate.
    pub async fn speak(&self, item: &str, secs: f64) {
        let n = (secs * f64::from(self.output_rate)).round() as usize;
        self.send(RealtimeEvent::Audio {
            item_id: item.into(),
            samples: vec![0.5; n],
        })
        .await;
    }

    /// The model's final transcript of its own words.
    pub async fn says(&self, text: &str) {
        self.send(RealtimeEvent::Transcript {
            role: hark::agent::ChatRole::Assistant,
            text: text.into(),
            is_final: true,
        })
        .await;
    }

    /// The next command the session sent (waiting for it).
    pub async fn next_command(&mut self) -> RealtimeCommand {
        tokio::time::timeout(Duration::from_secs(600), self.commands.recv())
            .await
            .expect("a command within 10 minutes of session time")
            .expect("the session holds the connection")
    }

    /// The commands sent so far and not yet taken.
    pub fn sent(&mut self) -> Vec<RealtimeCommand> {
        let mut v = Vec::new();
        while let Ok(c) = self.commands.try_recv() {
            v.push(c);
        }
        v
    }

    /// The setup of the (only) connection.
    pub fn setup(&self) -> RealtimeSetup {
        self.setups.lock().unwrap()[0].clone()
    }
}

/// Which providers a realtime session has besides the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beside {
    /// A scripted STT (HYBRID_STT; with `tts` too, LLM_ONLY).
    pub stt: bool,
    /// The scripted TTS (HYBRID_TTS).
    pub tts: bool,
    /// The front end runs a VAD (and a turn detector, with `stt`).
    pub vad: bool,
}

/// A session around a scripted realtime model (24 kHz in and out, like OpenAI's) and the
/// providers in `beside`; without an STT, `Harness::stt` leads nowhere.
pub async fn realtime_harness(
    agent: Arc<dyn Agent>,
    beside: Beside,
    options: SessionOptions,
    call: Option<Arc<dyn CallControl>>,
) -> (Harness, ModelScript) {
    let (model, script) = ScriptedRealtime::new(24_000, 24_000);
    let (stt_tx, stt_rx) = mpsc::channel(64);
    let stt: Option<Arc<dyn Stt>> = beside.stt.then(|| {
        Arc::new(ScriptedStt {
            events: Mutex::new(Some(stt_rx)),
            flushes: Arc::default(),
        }) as Arc<dyn Stt>
    });
    let tts = ScriptedTts::default();
    let tts_texts = tts.texts.clone();
    let sink = Sink::default();
    let providers = Providers {
        stt,
        llm: None,
        tts: beside.tts.then(|| Arc::new(tts) as Arc<dyn Tts>),
        turn_detector: beside.stt && beside.vad,
        vad: beside.vad,
        realtime: Some(model),
    };
    let session = AgentSession::start(
        agent,
        providers,
        options,
        Box::new(sink.clone()),
        ToolContext {
            call,
            ..ToolContext::default()
        },
    )
    .await
    .unwrap();
    let events = session.subscribe();
    let h = Harness {
        session,
        stt: stt_tx,
        events,
        sink,
        tts_texts,
        t0: Instant::now(),
    };
    (h, script)
}
