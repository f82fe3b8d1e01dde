//! The session's engine: one tokio task that owns the conversation and reacts to everything
//! (user audio events, transcripts, LLM and TTS streams, tool results, timers, API calls).
//!
//! A single owner keeps the spec's rules simple to follow and to test on a paused clock: no
//! locks, no shared state, every timing rule is a deadline in this task. Slow work (opening
//! provider streams, running tools, agent hooks) runs in spawned tasks that report back.

pub(super) mod realtime;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Duration, Instant};

use super::metrics::{MetricsRing, TurnMetrics};
use super::options::word_count;
use super::segment::{SegmentOptions, Segmenter};
use super::state::{AgentState, SessionEvent, UserState};
use super::utterance::{NotInterruptible, UtteranceHandle};
use super::{AudioSink, HookSet, SessionHandle, SessionOptions, WakeUp};
use crate::agent::context::{ChatContext, ChatMessage, ChatRole, CopyOptions};
use crate::agent::{Agent, Tool, ToolContext, ToolError, ToolOutput};
use crate::audio::mixer::{BackgroundOptions, Clip, MixError, Mixer};
use crate::audio::resample::Resampler;
use crate::providers::{
    AudioStream, Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, SttEvent, SttInput,
    ToolCallRequest, Tts,
};
use crate::telephony::voicemail::{self, VoicemailAction};

/// How long `close` waits for the agent's `on_exit`.
const ON_EXIT_LIMIT: Duration = Duration::from_secs(5);
/// How long a preemptive reply waits for the final transcript to confirm it (spec 40 §5.3).
const PREEMPTIVE_AUTHORIZATION: Duration = Duration::from_secs(10);

/// Calls from the API side.
pub(super) enum Command {
    Say {
        text: String,
        interruptible: bool,
        add_to_context: bool,
        done: oneshot::Sender<Result<UtteranceHandle, NotInterruptible>>,
    },
    Reply {
        instructions: String,
        interruptible: bool,
        done: oneshot::Sender<(UtteranceHandle, bool)>,
    },
    Interrupt {
        force: bool,
        done: oneshot::Sender<Result<(), NotInterruptible>>,
    },
    History {
        include_function_calls: bool,
        include_system_messages: bool,
        done: oneshot::Sender<Vec<Value>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
    Hangup {
        reason: String,
        done: oneshot::Sender<()>,
    },
    /// The call's controls, if the transport has a call.
    CallControl {
        done: oneshot::Sender<Option<Arc<dyn crate::transport::CallControl>>>,
    },
    /// Start (`Some`) or stop the background sound.
    Background {
        play: Option<(Clip, BackgroundOptions)>,
        done: oneshot::Sender<Result<(), MixError>>,
    },
}

/// What the listening front end reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UserInput {
    /// VAD: the user started speaking.
    SpeechStarted,
    /// VAD: the user stopped speaking.
    SpeechEnded,
    /// The turn detector's end-of-turn probability for the pause that just began.
    TurnProbability(f32),
}

/// The on-device front end's events are what a session hears about the user: this is the
/// whole bridge between [`crate::listen::FrontEnd`] and [`super::SessionInput::user`].
impl From<crate::listen::ListenEvent> for UserInput {
    fn from(event: crate::listen::ListenEvent) -> Self {
        use crate::listen::vad::VadEventType;
        use crate::listen::ListenEvent;
        match event {
            ListenEvent::Vad(v) if v.event_type == VadEventType::StartOfSpeech => {
                UserInput::SpeechStarted
            }
            ListenEvent::Vad(_) => UserInput::SpeechEnded,
            ListenEvent::Turn(t) => UserInput::TurnProbability(t.probability),
        }
    }
}

/// Results of spawned work.
enum Internal {
    Entered,
    /// The request went out at the instant given.
    LlmOpened(u64, Instant, Result<LlmStream, ProviderError>),
    TtsOpened(u64, Result<AudioStream, ProviderError>),
    ToolsDone(u64, Vec<(ToolCallRequest, Result<ToolOutput, ToolError>)>),
    /// The voicemail classifier's verdict.
    Voicemail(Result<bool, ProviderError>),
}

/// The reply being generated or spoken.
struct Reply {
    id: u64,
    handle: UtteranceHandle,
    /// LLM text so far (what goes into the context, also when interrupted).
    text: String,
    /// From an LLM (its text is added to the context at the end); `say` adds its own.
    from_llm: bool,
    segmenter: Segmenter,
    /// Where its sentences go.
    speech: SpeechOut,
    llm_done: bool,
    tts_done: bool,
    tools_running: bool,
    calls: Vec<ToolCallRequest>,
    depth: usize,
    speaking: bool,
    /// Started by `reply()`: clears `reply_in_progress` when it ends.
    explicit: bool,
    /// Tool calls that arrived while held; they run once the turn is confirmed (a tool
    /// has effects, which a contradicted guess must not cause).
    tools_deferred: bool,
    /// Handles of `say`s made by its tools: spoken within this reply, done when it ends.
    riders: Vec<UtteranceHandle>,
}

/// The text-to-speech side of a reply.
struct SpeechOut {
    /// Segments on their way to TTS; `None` once the text is complete.
    tts_text: Option<mpsc::Sender<String>>,
    /// Preemptive and not yet confirmed: segments wait here instead of going to TTS.
    held: Option<Vec<String>>,
    /// The agent-turn-start hook has run (its end hook is owed).
    agent_turn: bool,
}

pub(super) struct Engine {
    opts: SessionOptions,
    agent: Arc<dyn Agent>,
    tools: Vec<Arc<dyn Tool>>,
    ctx: ChatContext,
    hooks: HookSet,
    llm: Option<Arc<dyn Llm>>,
    tts: Option<Arc<dyn Tts>>,
    has_turn_detector: bool,
    tool_cx: ToolContext,
    handle: SessionHandle,

    events: broadcast::Sender<SessionEvent>,
    cmd_rx: mpsc::Receiver<Command>,
    input_rx: mpsc::UnboundedReceiver<UserInput>,
    stt_rx: Option<mpsc::Receiver<SttEvent>>,
    stt_input: Arc<Mutex<Option<Box<dyn SttInput>>>>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    llm_rx: Option<LlmStream>,
    tts_rx: Option<AudioStream>,

    started_at: Instant,
    user_state: UserState,
    agent_state: AgentState,
    accept_input: bool,
    closed: bool,
    user_speaking: bool,

    // End of utterance.
    accumulated: String,
    turn_probability: Option<f32>,
    last_final_at: Option<Instant>,
    eou_deadline: Option<Instant>,

    // Preemptive generation: the preflight text and its user message's id.
    preflight: Option<(String, String)>,
    preempt_deadline: Option<Instant>,

    // Voicemail detection.
    vm_buffer: String,
    vm_deadline: Option<Instant>,
    vm_asked: bool,
    vm_detected: bool,
    /// A message to leave once the greeting has stopped.
    vm_message: Option<String>,

    // Interruptions.
    vad_monitor: Option<Instant>,
    interrupting: bool,
    paused_until: Option<Instant>,

    // Replies.
    next_id: u64,
    reply: Option<Reply>,
    current: Option<UtteranceHandle>,
    reply_in_progress: bool,
    executing_tool: bool,
    /// A user turn decided while a non-interruptible utterance played, to answer after it.
    turn_waiting: bool,

    // Wake-up timer.
    wake_deadline: Option<Instant>,
    wake_prompts: u32,
    /// Set when the session is to end once the current reply has played out: the reason given
    /// to the call's hangup.
    ending: Option<String>,

    // Playout.
    sink: Box<dyn AudioSink>,
    mixer: Mixer,
    playout: VecDeque<f32>,
    /// Speech for the next frame.
    frame: Vec<f32>,
    /// The mixed frame that goes to the sink.
    out: Vec<f32>,
    clock_running: bool,
    resampled: Vec<f32>,
    resampler: Option<Resampler>,
    frame_period: Duration,
    next_tick: Instant,

    turn: TurnMetrics,
    turns: u64,
    ring: MetricsRing,

    /// A speech-to-speech model in place of the LLM (see `realtime`).
    rt: Option<realtime::ModelLink>,
}

/// Waits on an optional receiver; a missing one never yields.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits until an optional deadline; a missing one never fires.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) struct EngineParts {
    pub opts: SessionOptions,
    pub agent: Arc<dyn Agent>,
    pub llm: Option<Arc<dyn Llm>>,
    pub tts: Option<Arc<dyn Tts>>,
    pub has_turn_detector: bool,
    pub tool_cx: ToolContext,
    pub handle: SessionHandle,
    pub events: broadcast::Sender<SessionEvent>,
    pub cmd_rx: mpsc::Receiver<Command>,
    pub input_rx: mpsc::UnboundedReceiver<UserInput>,
    pub stt_rx: Option<mpsc::Receiver<SttEvent>>,
    pub stt_input: Arc<Mutex<Option<Box<dyn SttInput>>>>,
    pub sink: Box<dyn AudioSink>,
    pub mixer: Mixer,
    pub started: oneshot::Sender<()>,
    pub realtime: Option<realtime::ModelLink>,
}

impl Engine {
    pub(super) fn spawn(p: EngineParts) -> tokio::task::JoinHandle<()> {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let frame_len = (p.opts.output_rate as usize * p.opts.frame_ms as usize) / 1000;
        let mut ctx = ChatContext::new();
        if let Some(max) = p.opts.max_context_items {
            ctx.set_max_items(Some(max));
        }
        let instructions = p.agent.instructions();
        ctx.add_message(ChatRole::System, instructions);
        let resampler = p.tts.as_ref().and_then(|t| {
            (t.sample_rate() != p.opts.output_rate)
                .then(|| Resampler::new(t.sample_rate(), p.opts.output_rate))
        });
        let now = Instant::now();
        let engine = Engine {
            tools: p.agent.tools(),
            agent: p.agent,
            ctx,
            hooks: p.opts.hooks.clone(),
            llm: p.llm,
            tts: p.tts,
            has_turn_detector: p.has_turn_detector,
            tool_cx: p.tool_cx,
            handle: p.handle,
            events: p.events,
            cmd_rx: p.cmd_rx,
            input_rx: p.input_rx,
            stt_rx: p.stt_rx,
            stt_input: p.stt_input,
            internal_tx,
            internal_rx,
            llm_rx: None,
            tts_rx: None,
            started_at: now,
            user_state: UserState::Idle,
            agent_state: AgentState::Idle,
            accept_input: false,
            closed: false,
            user_speaking: false,
            accumulated: String::new(),
            turn_probability: None,
            last_final_at: None,
            eou_deadline: None,
            preflight: None,
            preempt_deadline: None,
            vm_buffer: String::new(),
            vm_deadline: None,
            vm_asked: false,
            vm_detected: false,
            vm_message: None,
            vad_monitor: None,
            interrupting: false,
            paused_until: None,
            next_id: 0,
            reply: None,
            current: None,
            reply_in_progress: false,
            executing_tool: false,
            turn_waiting: false,
            wake_deadline: None,
            wake_prompts: 0,
            ending: None,
            sink: p.sink,
            mixer: p.mixer,
            playout: VecDeque::with_capacity(p.opts.output_rate as usize * 30),
            frame: vec![0.0; frame_len],
            out: vec![0.0; frame_len],
            clock_running: false,
            resampled: Vec::with_capacity(p.opts.output_rate as usize),
            resampler,
            frame_period: Duration::from_millis(u64::from(p.opts.frame_ms)),
            next_tick: now,
            turn: TurnMetrics::default(),
            turns: 0,
            ring: MetricsRing::new(64),
            rt: p.realtime,
            opts: p.opts,
        };
        tokio::spawn(engine.run(p.started))
    }

    async fn run(mut self, started: oneshot::Sender<()>) {
        self.set_agent_state(AgentState::Starting);
        self.enter_agent(Some(started));
        loop {
            let deadline = self.next_deadline();
            let playing = self.playing();
            if playing && !self.clock_running {
                // The clock starts now, not at a tick scheduled while it was stopped.
                self.next_tick = Instant::now();
            }
            self.clock_running = playing;
            tokio::select! {
                biased;
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Close { done }) => {
                        self.close().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::Hangup { reason, done }) => {
                        self.hang_up(&reason).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: nobody can use the session any more.
                    None => {
                        self.close().await;
                        return;
                    }
                },
                Some(msg) = self.internal_rx.recv() => self.on_internal(msg),
                Some(input) = self.input_rx.recv() => self.on_input(input),
                ev = recv(&mut self.stt_rx) => match ev {
                    Some(ev) => self.on_stt(ev),
                    None => {
                        self.stt_rx = None;
                        self.error("stt", "transcription stream ended".into());
                    }
                },
                ev = realtime::next_event(&mut self.rt) => self.on_realtime(ev),
                ev = recv(&mut self.llm_rx) => self.on_llm(ev),
                chunk = recv(&mut self.tts_rx) => self.on_tts(chunk),
                _ = until(deadline) => self.on_deadlines(),
                _ = tokio::time::sleep_until(self.next_tick), if playing => self.on_tick(),
            }
            if self.reply.is_none() && self.playout.is_empty() {
                if let Some(reason) = self.ending.clone() {
                    self.hang_up(&reason).await;
                    return;
                }
            }
        }
    }

    fn now_s(&self) -> f64 {
        (Instant::now() - self.started_at).as_secs_f64()
    }

    fn emit(&self, e: SessionEvent) {
        // No subscriber is fine.
        let _ = self.events.send(e);
    }

    fn error(&self, component: &'static str, message: String) {
        tracing::warn!(component, %message, "provider error");
        self.emit(SessionEvent::Error { component, message });
    }

    fn set_agent_state(&mut self, s: AgentState) {
        if self.agent_state != s {
            self.agent_state = s;
            self.emit(SessionEvent::AgentStateChanged { state: s });
        }
    }

    fn set_user_state(&mut self, s: UserState) {
        if self.user_state != s {
            self.user_state = s;
            self.emit(SessionEvent::UserStateChanged { state: s });
        }
    }

    /// Runs the active agent's `on_enter` in its own task (it may call `say`, which this task
    /// must be free to serve).
    fn enter_agent(&mut self, started: Option<oneshot::Sender<()>>) {
        let agent = self.agent.clone();
        let handle = self.handle.clone();
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            agent.on_enter(&handle).await;
            let _ = tx.send(Internal::Entered);
            if let Some(s) = started {
                let _ = s.send(());
            }
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.eou_deadline,
            self.vad_monitor,
            self.paused_until,
            self.wake_deadline,
            self.preempt_deadline,
            self.vm_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the output clock runs: audio is queued, a reply that has spoken may be
    /// waiting for its last frame to play out or for more audio, or a sound is mixed in.
    fn playing(&self) -> bool {
        let speech = self.paused_until.is_none()
            && (!self.playout.is_empty() || self.reply.as_ref().is_some_and(|r| r.speaking));
        speech || self.mixer.is_thinking_playing() || self.mixer.is_background_playing()
    }

    // ---- API commands ----------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Say {
                text,
                interruptible,
                add_to_context,
                done,
            } => {
                let _ = done.send(self.say(text, interruptible, add_to_context));
            }
            Command::Reply {
                instructions,
                interruptible,
                done,
            } => {
                self.accept_input = true;
                if self.reply_in_progress {
                    // The spec drops a second reply and hands back the current utterance.
                    let h = self.current.clone().unwrap_or_else(|| {
                        let h = UtteranceHandle::with_id("placeholder", interruptible);
                        h.mark_done();
                        h
                    });
                    let _ = done.send((h, false));
                    return;
                }
                let handle = UtteranceHandle::new(interruptible);
                self.current = Some(handle.clone());
                if instructions.trim().is_empty() {
                    handle.mark_done();
                    let _ = done.send((handle, false));
                    return;
                }
                self.reply_in_progress = true;
                self.wake_deadline = None;
                self.ctx.add_message(ChatRole::User, instructions);
                self.start_generation(handle.clone());
                let _ = done.send((handle, true));
            }
            Command::Interrupt { force, done } => {
                let r = match self.current.clone() {
                    Some(h) if !h.interrupted() => h.interrupt(force),
                    _ => Ok(()),
                };
                if r.is_ok() {
                    self.full_interrupt();
                }
                let _ = done.send(r);
            }
            Command::History {
                include_function_calls,
                include_system_messages,
                done,
            } => {
                let copy = self.ctx.copy(&CopyOptions {
                    exclude_function_calls: !include_function_calls,
                    exclude_instructions: !include_system_messages,
                    tool_names: None,
                });
                let items = match copy.to_json() {
                    Value::Object(mut o) => match o.remove("items") {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                let _ = done.send(items);
            }
            Command::Background { play, done } => {
                let r = match play {
                    Some((clip, opts)) => self.mixer.play_background(clip, opts),
                    None => {
                        self.mixer.stop_background();
                        Ok(())
                    }
                };
                if r.is_ok() {
                    self.emit(SessionEvent::BackgroundAudio {
                        playing: self.mixer.is_background_playing(),
                    });
                }
                let _ = done.send(r);
            }
            Command::CallControl { done } => {
                let _ = done.send(self.tool_cx.call.clone());
            }
            Command::Close { .. } | Command::Hangup { .. } => unreachable!("handled in run"),
        }
    }

    fn say(
        &mut self,
        text: String,
        interruptible: bool,
        add_to_context: bool,
    ) -> Result<UtteranceHandle, NotInterruptible> {
        self.accept_input = true;
        let handle = UtteranceHandle::new(interruptible);
        if !self.executing_tool {
            if let Some(cur) = self.current.clone().filter(|c| !c.is_done()) {
                cur.interrupt(false)?;
                self.stop_reply();
            }
            self.current = Some(handle.clone());
        }
        if add_to_context {
            self.ctx.add_message(ChatRole::Assistant, text.clone());
        }
        self.emit(SessionEvent::AgentText { text: text.clone() });
        if self.rt_speaks() {
            return Ok(self.rt_say(handle, text));
        }
        if self.executing_tool {
            // A tool telling the user to hold on: the words join the reply whose tools run,
            // which goes on afterwards (replacing it would lose the tools' results).
            if let Some(reply) = self.reply.as_mut().filter(|r| r.speech.tts_text.is_some()) {
                Self::speak_segment(&self.hooks, &mut reply.speech, text);
                reply.riders.push(handle.clone());
                return Ok(handle);
            }
        }
        if self.tts.is_none() {
            handle.mark_done();
            return Ok(handle);
        }
        self.new_reply(handle.clone(), false, 0);
        let reply = self.reply.as_mut().expect("just created");
        reply.llm_done = true;
        reply.text = text.clone();
        Self::speak_segment(&self.hooks, &mut reply.speech, text);
        reply.speech.tts_text = None;
        Ok(handle)
    }

    // ---- user input ------------------------------------------------------------------

    fn on_input(&mut self, input: UserInput) {
        if !self.accept_input {
            return;
        }
        let now = Instant::now();
        match input {
            UserInput::SpeechStarted => {
                self.user_speaking = true;
                self.turn_probability = None;
                self.set_user_state(UserState::Speaking);
                if !matches!(
                    self.agent_state,
                    AgentState::Speaking | AgentState::Thinking
                ) {
                    self.set_agent_state(AgentState::Listening);
                }
                // Continued speech cancels the end-of-utterance wait, and a held preemptive
                // reply (the user resumed: the reference's `turn_resumed`).
                self.eou_deadline = None;
                self.cancel_preemptive();
                self.wake_prompts = 0;
                if !self.reply_in_progress && self.reply.is_none() {
                    self.arm_wake_up();
                }
                if self.opts.interrupt.mode.uses_vad()
                    && self.reply.as_ref().is_some_and(|r| r.speaking)
                    && self.vad_monitor.is_none()
                {
                    self.vad_monitor = Some(
                        now + Duration::from_secs_f64(self.opts.interrupt.interrupt_min_duration),
                    );
                }
            }
            UserInput::SpeechEnded => {
                self.user_speaking = false;
                self.vad_monitor = None;
                self.turn.user_speech_end = Some(self.now_s());
                if let Some(stt) = self.stt_input.lock().expect("stt input").as_mut() {
                    stt.flush();
                }
                self.set_user_state(UserState::Idle);
                if self.agent_state == AgentState::Listening {
                    self.set_agent_state(AgentState::Idle);
                }
                if let Some(m) = self.vm_message.take() {
                    // The voicemail greeting is over: leave the message, then hang up.
                    let _ = self.say(m, false, true);
                    self.ending = Some("voicemail".into());
                }
            }
            UserInput::TurnProbability(p) => {
                self.turn_probability = Some(p);
                // A verdict arriving while we wait re-times the wait from the final transcript.
                if let (Some(_), Some(at)) = (self.eou_deadline, self.last_final_at) {
                    self.eou_deadline = Some(at + self.opts.eou.wait(Some(p)));
                }
            }
        }
    }

    fn on_stt(&mut self, ev: SttEvent) {
        if !self.accept_input || self.vm_detected {
            return;
        }
        let (text, preflight, is_final) = match ev {
            SttEvent::Interim(t) => (t, false, false),
            SttEvent::Preflight(t) => (t, true, false),
            SttEvent::Final { text, .. } => (text, false, true),
            SttEvent::Error(e) => return self.error("stt", e.to_string()),
        };
        let Some(text) = self.hooks.0.stt_text(text) else {
            return;
        };
        self.emit(SessionEvent::UserTranscript {
            text: text.clone(),
            is_final,
        });
        if !is_final {
            if self.eou_deadline.is_some() {
                self.eou_deadline = None;
            }
            self.stt_interrupt_check(&text);
            if preflight && self.opts.preemptive_generation {
                self.start_preemptive(&text);
            }
            return;
        }
        if self.reply.as_ref().is_some_and(|r| r.speech.held.is_none())
            && matches!(
                self.agent_state,
                AgentState::Speaking | AgentState::Thinking
            )
        {
            // Barge-in gate: short or non-interruptible → the transcript is dropped.
            let interruptible = self
                .reply
                .as_ref()
                .is_some_and(|r| r.handle.is_interruptible());
            if word_count(&text) < self.opts.interrupt.interrupt_min_words || !interruptible {
                return;
            }
            self.full_interrupt();
        }
        if text.trim().is_empty() {
            // Speech that resumed and ended without words (a cough, a breath) is finalised
            // empty. It cancelled the wait on the words before it, so the wait starts again
            // here, or that turn would hang until the user spoke once more.
            if !self.accumulated.is_empty() && !self.user_speaking && self.eou_deadline.is_none() {
                self.arm_eou(Instant::now());
            }
            return;
        }
        self.listen_for_voicemail(&text);
        self.turn.stt_final = Some(self.now_s());
        if self.opts.preemptive_generation {
            // The STT decided the turn is over: no end-of-utterance wait.
            self.confirm_preemptive(text.trim());
            return;
        }
        if !self.accumulated.is_empty() {
            self.accumulated.push(' ');
        }
        self.accumulated.push_str(text.trim());
        self.arm_eou(Instant::now());
    }

    /// Starts the end-of-utterance wait from a final transcript received at `now`.
    fn arm_eou(&mut self, now: Instant) {
        self.last_final_at = Some(now);
        let p = if self.has_turn_detector {
            // Until the detector's verdict is in, assume the user may go on.
            Some(self.turn_probability.unwrap_or(0.0))
        } else {
            None
        };
        self.turn.eou_probability = p;
        self.eou_deadline = Some(now + self.opts.eou.wait(p));
    }

    // ---- preemptive generation -------------------------------------------------------

    /// A preflight transcript: start the LLM now, hold its speech until the final transcript.
    fn start_preemptive(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() || self.llm.is_none() {
            return;
        }
        if self.preflight.as_ref().is_some_and(|(p, _)| p == text) {
            return;
        }
        // The reference interrupts the current utterance without asking whether it may (a
        // bug: it raises on a non-interruptible one); here such an utterance is respected and
        // the turn waits for its final transcript.
        if let Some(cur) = self.current.clone().filter(|c| !c.is_done()) {
            if cur.interrupt(false).is_err() {
                return;
            }
        }
        self.cancel_preemptive();
        self.stop_reply();
        let id = self.ctx.add_message(ChatRole::User, text.to_string()).id;
        self.preflight = Some((text.to_string(), id));
        let handle = UtteranceHandle::new(true);
        self.current = Some(handle.clone());
        self.start_generation(handle);
        if let Some(r) = self.reply.as_mut() {
            r.speech.held = Some(Vec::new());
        }
        self.preempt_deadline = Some(Instant::now() + PREEMPTIVE_AUTHORIZATION);
    }

    /// A final transcript with preemptive generation on: the held reply speaks if the
    /// preflight said the same, else it is thrown away and the final is answered.
    fn confirm_preemptive(&mut self, text: &str) {
        let held = self.reply.as_ref().is_some_and(|r| r.speech.held.is_some());
        match &self.preflight {
            Some((p, _)) if held && p == text => {
                self.preflight = None;
                self.preempt_deadline = None;
                self.turn.eou_decision = Some(self.now_s());
                self.emit(SessionEvent::UserTurn { text: text.into() });
                self.hooks.0.user_turn_start(text);
                let reply = self.reply.as_mut().expect("held");
                let segments = reply.speech.held.take().unwrap_or_default();
                for seg in segments {
                    if Self::speak_segment(&self.hooks, &mut reply.speech, seg) {
                        let now = (Instant::now() - self.started_at).as_secs_f64();
                        self.turn.tts_request.get_or_insert(now);
                    }
                }
                if std::mem::take(&mut reply.tools_deferred) {
                    self.llm_finished();
                } else if reply.llm_done {
                    reply.speech.tts_text = None;
                    self.maybe_finish(false);
                }
            }
            _ => {
                self.cancel_preemptive();
                self.user_turn(text);
            }
        }
    }

    /// Drops an unconfirmed preemptive reply and its user message.
    fn cancel_preemptive(&mut self) {
        self.preempt_deadline = None;
        let Some((_, msg_id)) = self.preflight.take() else {
            return;
        };
        self.ctx.remove(&msg_id);
        if self.reply.as_ref().is_some_and(|r| r.speech.held.is_some()) {
            self.stop_reply();
        }
    }

    // ---- voicemail -------------------------------------------------------------------

    /// Collects the callee's first words; the classifier runs `listen` after the first ones.
    fn listen_for_voicemail(&mut self, text: &str) {
        let Some(vm) = &self.opts.voicemail else {
            return;
        };
        if self.vm_asked {
            return;
        }
        if !self.vm_buffer.is_empty() {
            self.vm_buffer.push(' ');
        }
        self.vm_buffer.push_str(text.trim());
        if self.vm_deadline.is_none() {
            self.vm_deadline = Some(Instant::now() + vm.listen);
        }
    }

    fn ask_voicemail(&mut self) {
        self.vm_asked = true;
        let (Some(vm), Some(llm)) = (self.opts.voicemail.clone(), self.llm.clone()) else {
            tracing::warn!("voicemail detection needs an LLM; treating the call as answered");
            self.emit(SessionEvent::Voicemail { detected: false });
            return;
        };
        let transcript = std::mem::take(&mut self.vm_buffer);
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let r = voicemail::classify(llm.as_ref(), &vm.prompt, &transcript).await;
            let _ = internal.send(Internal::Voicemail(r));
        });
    }

    fn on_voicemail(&mut self, verdict: Result<bool, ProviderError>) {
        let detected = verdict.unwrap_or_else(|e| {
            self.error("voicemail", e.to_string());
            false
        });
        tracing::info!(detected, "voicemail detection");
        self.emit(SessionEvent::Voicemail { detected });
        if !detected {
            return;
        }
        let action = self
            .opts
            .voicemail
            .as_ref()
            .map(|v| v.action.clone())
            .unwrap_or_default();
        if action == VoicemailAction::Report {
            return;
        }
        // Nobody to talk to: stop answering the greeting.
        self.vm_detected = true;
        self.cancel_preemptive();
        self.accumulated.clear();
        self.full_interrupt();
        if let Some(cur) = self.current.clone().filter(|c| !c.is_done()) {
            let _ = cur.interrupt(true);
            self.stop_reply();
        }
        if let VoicemailAction::LeaveMessage(m) = action {
            if self.user_speaking {
                // Speak after the greeting (and its beep), not over it.
                self.vm_message = Some(m);
                return;
            }
            let _ = self.say(m, false, true);
        }
        self.ending = Some("voicemail".into());
    }

    fn stt_interrupt_check(&mut self, text: &str) {
        let words = word_count(text);
        if words < self.opts.interrupt.interrupt_min_words {
            return;
        }
        if self.paused_until.is_some() {
            // Words during a false-interruption pause confirm the interruption.
            self.full_interrupt();
            return;
        }
        let active = self.reply.as_ref().is_some_and(|r| r.speaking)
            || (self.reply.is_some() && self.agent_state == AgentState::Thinking);
        if active && self.opts.interrupt.mode.uses_stt() {
            self.trigger_interruption();
        }
    }

    fn trigger_interruption(&mut self) {
        if self.interrupting {
            return;
        }
        let Some(reply) = &self.reply else { return };
        if !reply.handle.is_interruptible() {
            return;
        }
        self.interrupting = true;
        if self.opts.interrupt.resume_on_false_interrupt && reply.speaking {
            self.paused_until = Some(
                Instant::now()
                    + Duration::from_secs_f64(self.opts.interrupt.false_interrupt_pause_duration),
            );
            self.emit(SessionEvent::SpeechPaused);
        } else {
            self.full_interrupt();
        }
    }

    /// Stops the reply: LLM, TTS, queued audio, the EOU wait; keeps the partial text.
    fn full_interrupt(&mut self) {
        // The user spoke again: a turn waiting for its answer is superseded.
        self.turn_waiting = false;
        self.interrupting = false;
        self.paused_until = None;
        self.vad_monitor = None;
        self.eou_deadline = None;
        let Some(reply) = self.reply.take() else {
            return;
        };
        if reply.handle.is_interruptible() {
            let _ = reply.handle.interrupt(false);
        }
        self.set_agent_state(AgentState::Listening);
        self.turn.interrupted = Some(self.now_s());
        self.emit(SessionEvent::Interrupted);
        if reply.from_llm && !reply.text.trim().is_empty() {
            let mut msg = ChatMessage::new(ChatRole::Assistant, reply.text.clone());
            msg.interrupted = true;
            self.ctx.push(msg);
        }
        self.drop_streams();
        if reply.explicit {
            self.reply_in_progress = false;
        }
        self.reply_over(&reply);
        self.finish_turn();
    }

    /// Drops a reply without the interruption bookkeeping (a `say` replacing it).
    fn stop_reply(&mut self) {
        if let Some(reply) = self.reply.take() {
            if reply.explicit {
                self.reply_in_progress = false;
            }
            reply.handle.mark_done();
            self.reply_over(&reply);
        }
        self.drop_streams();
    }

    /// Hooks and sounds owed at the end of any reply (played, interrupted or dropped).
    fn reply_over(&mut self, reply: &Reply) {
        for h in &reply.riders {
            h.mark_done();
        }
        if reply.speech.agent_turn {
            self.hooks.0.agent_turn_end();
        }
        if reply.from_llm {
            self.hooks.0.user_turn_end();
        }
        self.mixer.stop_thinking();
    }

    /// One sentence of the reply towards TTS: held while the reply is an unconfirmed guess.
    /// Returns whether the sentence went to TTS now.
    fn speak_segment(hooks: &HookSet, out: &mut SpeechOut, segment: String) -> bool {
        if let Some(held) = out.held.as_mut() {
            held.push(segment);
            return false;
        }
        let Some(tx) = &out.tts_text else {
            return false;
        };
        if !out.agent_turn {
            out.agent_turn = true;
            hooks.0.agent_turn_start();
        }
        if tx.try_send(hooks.0.tts_text(segment)).is_err() {
            // 64 sentences ahead of the voice: TTS has stalled or ended.
            tracing::warn!("TTS is not taking text; a sentence was dropped");
            return false;
        }
        true
    }

    fn drop_streams(&mut self) {
        self.rt_drop_response();
        self.llm_rx = None;
        self.tts_rx = None;
        self.playout.clear();
        if let Some(r) = self.resampler.as_mut() {
            *r = Resampler::new(r.from_rate(), r.to_rate());
        }
    }

    // ---- timers ----------------------------------------------------------------------

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        if self.eou_deadline.is_some_and(|d| d <= now) {
            self.eou_deadline = None;
            self.end_of_utterance();
        }
        if self.vad_monitor.is_some_and(|d| d <= now) {
            self.vad_monitor = None;
            if self.user_speaking {
                self.trigger_interruption();
            }
        }
        if self.paused_until.is_some_and(|d| d <= now) {
            self.paused_until = None;
            if self.user_speaking {
                self.full_interrupt();
            } else {
                self.interrupting = false;
                self.emit(SessionEvent::SpeechResumed);
            }
        }
        if self.wake_deadline.is_some_and(|d| d <= now) {
            self.wake_deadline = None;
            self.wake_up();
        }
        if self.preempt_deadline.is_some_and(|d| d <= now) {
            tracing::debug!("preemptive reply not confirmed in time");
            self.cancel_preemptive();
        }
        if self.vm_deadline.is_some_and(|d| d <= now) {
            self.vm_deadline = None;
            self.ask_voicemail();
        }
    }

    fn end_of_utterance(&mut self) {
        let text = std::mem::take(&mut self.accumulated);
        if !text.trim().is_empty() {
            self.user_turn(text.trim());
        }
    }

    /// The user's turn is decided: answer it.
    fn user_turn(&mut self, text: &str) {
        self.turn.eou_decision = Some(self.now_s());
        self.emit(SessionEvent::UserTurn { text: text.into() });
        self.hooks.0.user_turn_start(text);
        self.ctx.add_message(ChatRole::User, text.to_string());
        if let Some(cur) = self.current.clone().filter(|c| !c.is_done()) {
            if !cur.is_interruptible() {
                // Answered once the utterance that may not be cut has played.
                self.turn_waiting = true;
                return;
            }
            let _ = cur.interrupt(false);
            self.stop_reply();
        }
        self.answer_user();
    }

    fn answer_user(&mut self) {
        let handle = UtteranceHandle::new(true);
        self.current = Some(handle.clone());
        self.start_generation(handle);
    }

    fn arm_wake_up(&mut self) {
        if let Some(w) = &self.opts.wake_up {
            self.wake_deadline = Some(Instant::now() + w.after);
        }
    }

    fn wake_up(&mut self) {
        let Some(WakeUp {
            prompt,
            max_prompts,
            goodbye,
            ..
        }) = self.opts.wake_up.clone()
        else {
            return;
        };
        if self.reply_in_progress || self.reply.is_some() || self.user_state == UserState::Speaking
        {
            return;
        }
        self.emit(SessionEvent::WakeUp);
        match prompt {
            Some(p) if self.wake_prompts < max_prompts => {
                self.wake_prompts += 1;
                let _ = self.say(p, true, true);
            }
            _ => {
                if let Some(g) = goodbye {
                    let _ = self.say(g, false, true);
                }
                self.ending = Some("wake_up_timeout".into());
            }
        }
    }

    // ---- generation ------------------------------------------------------------------

    fn new_reply(&mut self, handle: UtteranceHandle, from_llm: bool, depth: usize) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        // A reply still out is over: its handle completes (and its hooks run).
        self.stop_reply();
        self.interrupting = false;
        self.wake_deadline = None;
        let tts_text = self.tts.clone().map(|tts| {
            let (tx, rx) = mpsc::channel(64);
            let internal = self.internal_tx.clone();
            tokio::spawn(async move {
                let _ = internal.send(Internal::TtsOpened(id, tts.synthesize(rx).await));
            });
            tx
        });
        let explicit = self.reply_in_progress && from_llm;
        self.reply = Some(Reply {
            id,
            handle,
            text: String::new(),
            from_llm,
            segmenter: Segmenter::new(SegmentOptions::default()).expect("default options"),
            tts_done: tts_text.is_none(),
            speech: SpeechOut {
                tts_text,
                held: None,
                agent_turn: false,
            },
            llm_done: false,
            tools_running: false,
            calls: Vec::new(),
            depth,
            speaking: false,
            explicit,
            tools_deferred: false,
            riders: Vec::new(),
        });
        id
    }

    fn start_generation(&mut self, handle: UtteranceHandle) {
        if self.rt.is_some() {
            return self.rt_generate(handle);
        }
        let Some(llm) = self.llm.clone() else {
            handle.mark_done();
            return;
        };
        let id = self.new_reply(handle, true, 0);
        self.mixer.start_thinking();
        self.request_llm(llm, id);
    }

    fn request_llm(&mut self, llm: Arc<dyn Llm>, id: u64) {
        self.set_agent_state(AgentState::Thinking);
        let request = LlmRequest {
            context: self.ctx.clone(),
            tools: self.tools.iter().map(|t| t.spec().clone()).collect(),
        };
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = llm.chat(request).await;
            let _ = internal.send(Internal::LlmOpened(id, sent, r));
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        let current = self.reply.as_ref().map(|r| r.id);
        match msg {
            Internal::Entered => {
                self.accept_input = true;
                self.arm_wake_up();
                if self.agent_state == AgentState::Starting {
                    self.set_agent_state(AgentState::Idle);
                }
            }
            Internal::LlmOpened(id, sent, r) if Some(id) == current => {
                let at = (sent - self.started_at).as_secs_f64();
                self.turn.llm_request.get_or_insert(at);
                match r {
                    Ok(rx) => self.llm_rx = Some(rx),
                    Err(e) => {
                        self.error("llm", e.to_string());
                        self.llm_finished();
                    }
                }
            }
            Internal::TtsOpened(id, r) if Some(id) == current => match r {
                Ok(rx) => self.tts_rx = Some(rx),
                Err(e) => {
                    self.error("tts", e.to_string());
                    if let Some(reply) = self.reply.as_mut() {
                        reply.tts_done = true;
                        reply.speech.tts_text = None;
                    }
                    self.maybe_finish(false);
                }
            },
            Internal::ToolsDone(id, results) if Some(id) == current => {
                self.executing_tool = false;
                self.on_tools_done(results);
            }
            Internal::ToolsDone(..) => self.executing_tool = false,
            Internal::Voicemail(verdict) => self.on_voicemail(verdict),
            // Stale: for a reply that was interrupted or replaced.
            Internal::LlmOpened(..) | Internal::TtsOpened(..) => {}
        }
    }

    fn on_llm(&mut self, ev: Option<Result<LlmEvent, ProviderError>>) {
        match ev {
            Some(Ok(LlmEvent::Text(t))) => {
                self.turn.llm_first_token.get_or_insert(self.now_s());
                let Some(reply) = self.reply.as_mut() else {
                    return;
                };
                reply.text.push_str(&t);
                if reply.speech.tts_text.is_some() {
                    for seg in reply.segmenter.push(&t) {
                        if Self::speak_segment(&self.hooks, &mut reply.speech, seg) {
                            let now = (Instant::now() - self.started_at).as_secs_f64();
                            self.turn.tts_request.get_or_insert(now);
                        }
                    }
                }
            }
            Some(Ok(LlmEvent::ToolCall(call))) => {
                self.turn.first_tool_call.get_or_insert(self.now_s());
                self.emit(SessionEvent::ToolCalled {
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
                if let Some(reply) = self.reply.as_mut() {
                    reply.calls.push(call);
                }
            }
            Some(Ok(LlmEvent::Usage { .. })) => {}
            Some(Err(e)) => {
                self.llm_rx = None;
                self.error("llm", e.to_string());
                self.llm_finished();
            }
            None => {
                self.llm_rx = None;
                self.llm_finished();
            }
        }
    }

    /// The LLM stream ended: run its tool calls, or close the reply's text.
    fn llm_finished(&mut self) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        if !reply.calls.is_empty() && reply.speech.held.is_some() {
            reply.tools_deferred = true;
            return;
        }
        if !reply.calls.is_empty() {
            let calls = std::mem::take(&mut reply.calls);
            for c in &calls {
                self.ctx.add_function_call(
                    c.name.clone(),
                    c.arguments.clone(),
                    Some(c.call_id.clone()),
                );
            }
            reply.tools_running = true;
            self.executing_tool = true;
            let id = reply.id;
            let tools = self.tools.clone();
            let mut cx = self.tool_cx.clone();
            cx.session = Some(self.handle.clone());
            let timeout = self.opts.tool_timeout;
            let internal = self.internal_tx.clone();
            tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for (i, call) in calls.iter().cloned().enumerate() {
                    let tool = tools.iter().find(|t| t.spec().name == call.name).cloned();
                    let cx = cx.clone();
                    set.spawn(async move {
                        let r = match tool {
                            None => Err(ToolError::Unknown(call.name.clone())),
                            Some(tool) => match serde_json::from_str::<Value>(&call.arguments) {
                                Err(e) => Err(ToolError::InvalidArguments(e.to_string())),
                                Ok(args) => {
                                    match tokio::time::timeout(timeout, tool.call(args, &cx)).await
                                    {
                                        Ok(r) => r,
                                        Err(_) => Err(ToolError::Timeout(timeout)),
                                    }
                                }
                            },
                        };
                        (i, call, r)
                    });
                }
                let mut results: Vec<_> =
                    set.join_all()
                        .await
                        .into_iter()
                        .collect::<Vec<(usize, ToolCallRequest, _)>>();
                results.sort_by_key(|r| r.0);
                let _ = internal.send(Internal::ToolsDone(
                    id,
                    results.into_iter().map(|(_, c, r)| (c, r)).collect(),
                ));
            });
            return;
        }
        reply.llm_done = true;
        if reply.speech.tts_text.is_some() {
            for seg in reply.segmenter.finish() {
                if Self::speak_segment(&self.hooks, &mut reply.speech, seg) {
                    let now = (Instant::now() - self.started_at).as_secs_f64();
                    self.turn.tts_request.get_or_insert(now);
                }
            }
        }
        if reply.speech.held.is_none() {
            // The text is complete: closing the channel lets TTS finish.
            reply.speech.tts_text = None;
        }
        self.maybe_finish(false);
    }

    fn on_tools_done(&mut self, results: Vec<(ToolCallRequest, Result<ToolOutput, ToolError>)>) {
        let mut handoff = None;
        let mut end_call = None;
        let mut last_round = false;
        for (call, r) in results {
            let (output, is_error) = match r {
                Ok(ToolOutput::EndCall(reason)) => {
                    tracing::info!(%reason, "the agent ends the call");
                    end_call = Some(reason);
                    (
                        "The call ends once your last words have played.".to_string(),
                        false,
                    )
                }
                Ok(ToolOutput::Json(v)) => (v.to_string(), false),
                Ok(ToolOutput::Text(t)) => (t, false),
                Ok(ToolOutput::Final(t)) => {
                    last_round = true;
                    (t, false)
                }
                Ok(ToolOutput::Handoff(agent, msg)) => {
                    handoff = Some(agent);
                    (msg, false)
                }
                Err(e) => (e.to_string(), true),
            };
            self.rt_tool_output(&call, &output, is_error);
            self.ctx
                .add_function_output(call.name, output, call.call_id, is_error);
        }
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        reply.tools_running = false;
        if let Some(reason) = end_call {
            // Said goodbye (or not): no further LLM round, hang up after the playout.
            self.ending = Some(reason);
            self.llm_finished_without_more();
            return;
        }
        if let Some(next) = handoff {
            self.switch_agent(next);
            self.llm_finished_without_more();
            return;
        }
        if last_round {
            self.llm_finished_without_more();
            return;
        }
        if reply.depth + 1 >= self.opts.max_tool_depth {
            tracing::warn!(depth = reply.depth + 1, "tool-call depth limit reached");
            self.llm_finished_without_more();
            return;
        }
        reply.depth += 1;
        let id = reply.id;
        if self.rt.is_some() {
            self.rt_continue();
        } else if let Some(llm) = self.llm.clone() {
            self.request_llm(llm, id);
        }
    }

    fn llm_finished_without_more(&mut self) {
        if let Some(reply) = self.reply.as_mut() {
            reply.calls.clear();
        }
        self.llm_finished();
    }

    fn switch_agent(&mut self, next: Arc<dyn Agent>) {
        let old = std::mem::replace(&mut self.agent, next);
        self.tools = self.agent.tools();
        self.ctx.set_instructions(self.agent.instructions());
        self.rt_update_session();
        let handle = self.handle.clone();
        tokio::spawn(async move { old.on_exit(&handle).await });
        self.emit(SessionEvent::AgentSwitched);
        self.enter_agent(None);
    }

    // ---- speech out ------------------------------------------------------------------

    fn on_tts(&mut self, chunk: Option<Result<Vec<f32>, ProviderError>>) {
        match chunk {
            Some(Ok(samples)) => {
                if self.reply.is_none() {
                    return;
                }
                self.turn.tts_first_byte.get_or_insert(self.now_s());
                match self.resampler.as_mut() {
                    Some(r) => {
                        self.resampled.clear();
                        r.process(&samples, &mut self.resampled);
                        self.playout.extend(self.resampled.iter());
                    }
                    None => self.playout.extend(samples.iter()),
                }
            }
            Some(Err(e)) => {
                self.tts_rx = None;
                self.error("tts", e.to_string());
                if let Some(r) = self.reply.as_mut() {
                    r.tts_done = true;
                }
                self.maybe_finish(false);
            }
            None => {
                self.tts_rx = None;
                if let Some(r) = self.resampler.as_mut() {
                    self.resampled.clear();
                    r.flush(&mut self.resampled);
                    self.playout.extend(self.resampled.iter());
                }
                if let Some(r) = self.reply.as_mut() {
                    r.tts_done = true;
                }
                self.maybe_finish(false);
            }
        }
    }

    /// One output frame to the transport: speech (if any) mixed with the thinking and
    /// background sounds. With no speech queued, the previous frame has been played out: that
    /// is when a finished reply ends.
    fn on_tick(&mut self) {
        self.next_tick += self.frame_period;
        let speaking = self.paused_until.is_none();
        let n = if speaking {
            self.frame.len().min(self.playout.len())
        } else {
            0
        };
        if n == 0 && speaking {
            self.maybe_finish(true);
        }
        if n == 0 && !self.mixer.is_thinking_playing() && !self.mixer.is_background_playing() {
            return;
        }
        for (dst, src) in self.frame[..n].iter_mut().zip(self.playout.drain(..n)) {
            *dst = src;
        }
        let speech = (n > 0).then(|| &self.frame[..n]);
        let report = self
            .mixer
            .mix(speech, &mut self.out)
            .expect("frame sizes are fixed at start");
        if report.background_ended {
            self.emit(SessionEvent::BackgroundAudio { playing: false });
        }
        if n > 0 {
            self.speech_started();
        }
        self.sink.write(&self.out);
    }

    /// The first frame of a reply is going out: the agent speaks.
    fn speech_started(&mut self) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        if reply.speaking {
            return;
        }
        reply.speaking = true;
        self.turn.first_sample_played.get_or_insert(self.now_s());
        self.set_agent_state(AgentState::Speaking);
        self.set_user_state(UserState::Listening);
        if self.user_speaking && self.opts.interrupt.mode.uses_vad() && self.vad_monitor.is_none() {
            self.vad_monitor = Some(
                Instant::now()
                    + Duration::from_secs_f64(self.opts.interrupt.interrupt_min_duration),
            );
        }
    }

    /// Ends the reply once its text, audio and playback are all done.
    /// A reply that has spoken ends on an output tick (its last frame played out).
    fn maybe_finish(&mut self, at_tick: bool) {
        let Some(reply) = &self.reply else { return };
        let complete = reply.llm_done
            && reply.tts_done
            && !reply.tools_running
            && reply.speech.held.is_none()
            && self.playout.is_empty();
        if !complete || (reply.speaking && !at_tick) {
            return;
        }
        let reply = self.reply.take().expect("checked");
        if reply.from_llm && !reply.text.trim().is_empty() {
            self.ctx
                .add_message(ChatRole::Assistant, reply.text.clone());
            let text = self.hooks.0.llm_text(reply.text.clone());
            self.emit(SessionEvent::AgentText { text });
        }
        reply.handle.mark_done();
        self.reply_over(&reply);
        if reply.explicit {
            self.reply_in_progress = false;
        }
        self.finish_turn();
        self.set_user_state(UserState::Idle);
        self.set_agent_state(AgentState::Idle);
        if std::mem::take(&mut self.turn_waiting) && self.ending.is_none() {
            self.answer_user();
            return;
        }
        if self.ending.is_none() {
            self.arm_wake_up();
        }
    }

    fn finish_turn(&mut self) {
        let mut t = std::mem::take(&mut self.turn);
        if t == TurnMetrics::default() {
            return;
        }
        self.turns += 1;
        t.turn = self.turns;
        t.log();
        self.emit(SessionEvent::TurnMetrics(t.clone()));
        self.ring.push(t);
    }

    // ---- ending ----------------------------------------------------------------------

    async fn hang_up(&mut self, reason: &str) {
        if let Some(call) = self.tool_cx.call.clone() {
            if let Err(e) = call.hangup(reason).await {
                tracing::warn!(error = %e, "hangup failed");
            }
        }
        self.close().await;
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.set_agent_state(AgentState::Closing);
        self.wake_deadline = None;
        self.eou_deadline = None;
        if let Some(reply) = self.reply.take() {
            reply.handle.mark_done();
            self.reply_over(&reply);
        }
        self.mixer.stop_background();
        self.drop_streams();
        // The engine cannot serve session calls while it waits here, so an `on_exit` that makes
        // one would wait forever: bound it.
        if tokio::time::timeout(ON_EXIT_LIMIT, self.agent.on_exit(&self.handle))
            .await
            .is_err()
        {
            tracing::warn!("agent on_exit did not finish within {ON_EXIT_LIMIT:?}");
        }
        self.stt_rx = None;
        self.stt_input.lock().expect("stt input").take();
        self.rt_close();
    }
}
