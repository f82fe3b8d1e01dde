//! Sessions: one conversation between a user and the active agent, from start to close.
//!
//! [`AgentSession::start`] wires an [`Agent`] to providers (STT, LLM, TTS, or a speech-to-speech
//! model, through the traits in [`crate::providers`]), to what the listening front end reports
//! ([`SessionInput`]), and to an [`AudioSink`] for the reply audio. Which providers are present
//! decides the pipeline mode ([`PipelineConfig::detect`]). The conversation then runs in one task (see `engine`):
//! end-of-utterance waits, barge-in, tool calls and the wake-up timer follow the spec's
//! `AgentSession` and cascading pipeline. Everything observable is published as
//! [`SessionEvent`]s.

mod engine;
pub mod hooks;
pub mod metrics;
pub mod options;
pub mod pipeline;
pub mod segment;
pub mod state;
pub mod utterance;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::agent::{Agent, ToolContext};
use crate::audio::mixer::{BackgroundOptions, Clip, MixError};
use crate::providers::{Llm, ProviderError, Realtime, Stt, SttInput, Tts};
use crate::telephony::voicemail::VoicemailOptions;
use crate::transport::CallError;
pub use engine::UserInput;
pub use hooks::{HookSet, Hooks};
pub use metrics::TurnMetrics;
pub use options::{EouConfig, EouMode, InterruptConfig, InterruptMode};
pub use pipeline::{Components, PipelineConfig, PipelineMode, RealtimeMode};
pub use state::{AgentState, SessionEvent, UserState};
pub use utterance::{NotInterruptible, UtteranceHandle};

/// Where the agent's voice goes (the transport's playback side). Called once per output frame
/// from the session task: it must not block.
pub trait AudioSink: Send {
    /// One frame of mono samples at [`SessionOptions::output_rate`].
    fn write(&mut self, frame: &[f32]);
}

/// What to do after `after` of silence (the spec's wake-up timer with `on_wake_up`).
#[derive(Debug, Clone, PartialEq)]
pub struct WakeUp {
    /// Silence (no user speech, no agent speech) before it fires.
    pub after: Duration,
    /// What the agent says when it fires; `None` ends the session at the first firing.
    pub prompt: Option<String>,
    /// How many times the prompt is said before giving up.
    pub max_prompts: u32,
    /// Said once before ending the session.
    pub goodbye: Option<String>,
}

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// End-of-utterance timing.
    pub eou: EouConfig,
    /// Barge-in handling.
    pub interrupt: InterruptConfig,
    /// The wake-up (inactivity) timer, if any.
    pub wake_up: Option<WakeUp>,
    /// LLM rounds per reply, tool calls included (1 = no tool round trip).
    pub max_tool_depth: usize,
    /// How long one tool may run.
    pub tool_timeout: Duration,
    /// Keep the chat context to this many items (the system message is always kept).
    pub max_context_items: Option<usize>,
    /// Sample rate of the audio sink.
    pub output_rate: u32,
    /// Output frame length in milliseconds.
    pub frame_ms: u32,
    /// Start the LLM on the STT's preflight transcript and hold its speech until the final
    /// transcript confirms it (the spec's preemptive generation); finals then end the turn
    /// at once, as the STT has done the end-of-turn detection.
    pub preemptive_generation: bool,
    /// Classify the start of the call as voicemail or a person (outbound calls).
    pub voicemail: Option<VoicemailOptions>,
    /// The sound played, looping, while the agent thinks (at [`SessionOptions::output_rate`]).
    pub thinking_audio: Option<ThinkingAudio>,
    /// Text rewriting and turn callbacks.
    pub hooks: HookSet,
    /// Forces the realtime sub-mode when a speech-to-speech model is given (the spec's
    /// `RealtimeConfig.mode`, trusted as is); `None` detects it from the other providers.
    pub realtime_mode: Option<RealtimeMode>,
    /// Sample rate of the audio given to [`SessionInput::push_audio`] when a speech-to-speech
    /// model hears the user (it is resampled to the model's rate); the front end's 16 kHz.
    pub input_rate: u32,
}

/// A thinking sound and its gain (the reference's `set_thinking_audio`, volume 0.3).
#[derive(Debug, Clone, PartialEq)]
pub struct ThinkingAudio {
    /// The sound, looped.
    pub clip: Clip,
    /// Its gain.
    pub volume: f32,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            eou: EouConfig::default(),
            interrupt: InterruptConfig::default(),
            wake_up: None,
            max_tool_depth: 5,
            tool_timeout: Duration::from_secs(30),
            max_context_items: None,
            output_rate: 16_000,
            frame_ms: 20,
            preemptive_generation: false,
            voicemail: None,
            thinking_audio: None,
            hooks: HookSet::default(),
            realtime_mode: None,
            input_rate: 16_000,
        }
    }
}

/// The providers a session uses; any may be missing (the pipeline mode follows).
#[derive(Clone, Default)]
pub struct Providers {
    /// Streaming speech-to-text.
    pub stt: Option<Arc<dyn Stt>>,
    /// The chat model.
    pub llm: Option<Arc<dyn Llm>>,
    /// Text-to-speech.
    pub tts: Option<Arc<dyn Tts>>,
    /// Whether the front end runs a turn detector (its probabilities arrive through
    /// [`SessionInput::user`]).
    pub turn_detector: bool,
    /// Whether the front end runs VAD.
    pub vad: bool,
    /// A speech-to-speech model (OpenAI Realtime, Gemini Live). It replaces the LLM (which, if
    /// also given, only serves the voicemail classifier) and, unless STT or TTS are given too,
    /// hears and speaks itself (see [`RealtimeMode`]).
    pub realtime: Option<Arc<dyn Realtime>>,
}

/// Why a session could not start or answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// An option is invalid.
    #[error("invalid option: {0}")]
    Option(#[from] options::InvalidOption),
    /// Speech-to-text could not be opened.
    #[error("speech-to-text: {0}")]
    Stt(ProviderError),
    /// The speech-to-speech model could not be connected.
    #[error("realtime model: {0}")]
    Realtime(ProviderError),
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
    /// The current utterance does not allow interruptions.
    #[error("the current utterance does not allow interruptions")]
    NotInterruptible,
    /// The call refused or failed a control (hangup, transfer).
    #[error("call: {0}")]
    Call(CallError),
    /// A sound cannot be mixed into the output.
    #[error("audio: {0}")]
    Mix(#[from] MixError),
}

/// A cheap, cloneable handle on a running session, for agents, tools and applications.
#[derive(Clone)]
pub struct SessionHandle {
    cmd: mpsc::Sender<engine::Command>,
    events: broadcast::Sender<SessionEvent>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").finish_non_exhaustive()
    }
}

impl SessionHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> engine::Command,
    ) -> Result<T, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| SessionError::Closed)?;
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// Says `text` (through TTS), interrupting the current utterance unless called from a
    /// tool, and adds it to the chat context. Refused if the current utterance is not
    /// interruptible. Returns once queued; await the handle for playback.
    pub async fn say(
        &self,
        text: impl Into<String>,
        interruptible: bool,
    ) -> Result<UtteranceHandle, SessionError> {
        let text = text.into();
        self.ask(|done| engine::Command::Say {
            text,
            interruptible,
            add_to_context: true,
            done,
        })
        .await?
        .map_err(|_| SessionError::NotInterruptible)
    }

    /// Asks the LLM to answer `instructions` (added as a user message). While another reply
    /// runs, nothing new starts and the current handle comes back (the spec's rule). With
    /// `wait_for_playback`, returns once the reply was played out or interrupted.
    pub async fn reply(
        &self,
        instructions: impl Into<String>,
        wait_for_playback: bool,
        interruptible: bool,
    ) -> Result<UtteranceHandle, SessionError> {
        let instructions = instructions.into();
        let (handle, started) = self
            .ask(|done| engine::Command::Reply {
                instructions,
                interruptible,
                done,
            })
            .await?;
        if started && wait_for_playback {
            handle.wait().await;
        }
        Ok(handle)
    }

    /// Interrupts what the agent is saying. Without `force`, a non-interruptible utterance is
    /// left alone and the refusal returned.
    pub async fn interrupt(
        &self,
        force: bool,
    ) -> Result<Result<(), NotInterruptible>, SessionError> {
        self.ask(|done| engine::Command::Interrupt { force, done })
            .await
    }

    /// The conversation as JSON items (the spec's `get_context_history`).
    pub async fn history(
        &self,
        include_function_calls: bool,
        include_system_messages: bool,
    ) -> Result<Vec<Value>, SessionError> {
        self.ask(|done| engine::Command::History {
            include_function_calls,
            include_system_messages,
            done,
        })
        .await
    }

    /// Plays `clip` (at the output rate) mixed under the agent's voice, replacing any current
    /// background; with `override_thinking = false` it silences the thinking sound while it
    /// plays (the spec's `play_background_audio`).
    pub async fn play_background(
        &self,
        clip: Clip,
        options: BackgroundOptions,
    ) -> Result<(), SessionError> {
        self.ask(|done| engine::Command::Background {
            play: Some((clip, options)),
            done,
        })
        .await?
        .map_err(SessionError::Mix)
    }

    /// Stops the background sound; thinking it silenced resumes if the agent still thinks.
    pub async fn stop_background(&self) -> Result<(), SessionError> {
        self.ask(|done| engine::Command::Background { play: None, done })
            .await?
            .map_err(SessionError::Mix)
    }

    /// Ends the session: stops speech, runs the agent's `on_exit`, closes the streams.
    /// Idempotent. The call itself stays up (the spec's `leave`: others in a room, or a
    /// transfer target, carry on); [`SessionHandle::hangup`] ends it.
    pub async fn close(&self) {
        let _ = self.ask(|done| engine::Command::Close { done }).await;
    }

    /// Hangs up the call (if the transport has one) with `reason`, then closes the session.
    /// A failed hangup is logged; the session closes anyway.
    pub async fn hangup(&self, reason: &str) {
        let reason = reason.to_string();
        let _ = self
            .ask(|done| engine::Command::Hangup { reason, done })
            .await;
    }

    /// Transfers the call to `target` without consultation (the spec's cold
    /// `call_transfer`); the session goes on until the transport ends it.
    pub async fn transfer(&self, target: &str) -> Result<(), SessionError> {
        let call = self
            .ask(|done| engine::Command::CallControl { done })
            .await?
            .ok_or(SessionError::Call(CallError::Unsupported))?;
        call.transfer(target).await.map_err(SessionError::Call)
    }

    /// Subscribes to the session's events (from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Publishes `event` on the session's stream: for what runs beside the session on its
    /// behalf (a warm transfer's phases).
    pub fn publish(&self, event: SessionEvent) {
        let _ = self.events.send(event);
    }
}

/// The listening side's way into a session: audio for STT, VAD and turn events.
#[derive(Clone)]
pub struct SessionInput {
    stt: Arc<Mutex<Option<Box<dyn SttInput>>>>,
    /// Set when a speech-to-speech model hears the user: the audio goes there instead.
    model: Option<engine::realtime::SharedFeed>,
    user: mpsc::UnboundedSender<UserInput>,
}

impl SessionInput {
    /// The user's audio (mono): for a speech-to-speech model that hears the user, at
    /// [`SessionOptions::input_rate`] (resampled here to the model's rate); otherwise for
    /// speech-to-text, at the STT's rate. Never blocks on the network: the stream queues or
    /// drops. The lock is held only for the copy.
    pub fn push_audio(&self, samples: &[f32]) {
        if let Some(model) = &self.model {
            if let Some(feed) = model.lock().expect("realtime input").as_mut() {
                feed.push(samples);
            }
            return;
        }
        if let Some(stt) = self.stt.lock().expect("stt input").as_mut() {
            stt.push_audio(samples);
        }
    }

    /// A VAD or turn-detector event.
    pub fn user(&self, input: UserInput) {
        let _ = self.user.send(input);
    }
}

/// A running conversation.
pub struct AgentSession {
    handle: SessionHandle,
    input: SessionInput,
    task: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for AgentSession {
    type Target = SessionHandle;
    fn deref(&self) -> &SessionHandle {
        &self.handle
    }
}

impl AgentSession {
    /// Starts a session: opens speech-to-text, connects the speech-to-speech model (with the
    /// agent's instructions and tools), runs the agent's `on_enter`, and returns once it has
    /// (the agent state then goes from `starting` to `idle`).
    pub async fn start(
        agent: Arc<dyn Agent>,
        providers: Providers,
        options: SessionOptions,
        sink: Box<dyn AudioSink>,
        tool_cx: ToolContext,
    ) -> Result<AgentSession, SessionError> {
        options.eou.validate()?;
        options.interrupt.validate()?;
        let frame_len = (options.output_rate as usize * options.frame_ms as usize) / 1000;
        let mut mixer = crate::audio::mixer::Mixer::new(options.output_rate, frame_len)?;
        if let Some(t) = &options.thinking_audio {
            mixer.set_thinking(Some(t.clip.clone()), t.volume)?;
        }
        let (events, _) = broadcast::channel(256);
        let (cmd_tx, cmd_rx) = mpsc::channel(32);
        let (user_tx, user_rx) = mpsc::unbounded_channel();
        let stt_input = Arc::new(Mutex::new(None));
        let mut stt_rx = None;
        if let Some(stt) = &providers.stt {
            let s = stt.connect().await.map_err(SessionError::Stt)?;
            *stt_input.lock().expect("stt input") = Some(s.input);
            stt_rx = Some(s.events);
        }
        let pipeline = PipelineConfig::detect(
            Components {
                stt: providers.stt.is_some(),
                llm: providers.llm.is_some(),
                tts: providers.tts.is_some(),
                vad: providers.vad,
                turn_detector: providers.turn_detector,
                realtime: providers.realtime.is_some(),
            },
            options.realtime_mode,
        );
        tracing::info!(
            mode = ?pipeline.pipeline_mode,
            realtime = ?pipeline.realtime_mode,
            "session pipeline"
        );
        let mut options = options;
        let (mut realtime, mut model_feed) = (None, None);
        if let (Some(model), Some(mode)) = (&providers.realtime, pipeline.realtime_mode) {
            let (link, feed) = engine::realtime::connect(
                model.as_ref(),
                mode,
                agent.as_ref(),
                options.input_rate,
                options.output_rate,
                providers.vad,
            )
            .await
            .map_err(SessionError::Realtime)?;
            (realtime, model_feed) = (Some(link), feed);
            // Held preemptive speech is a cascade (LLM + TTS) technique.
            options.preemptive_generation = false;
        }
        let handle = SessionHandle {
            cmd: cmd_tx,
            events: events.clone(),
        };
        let (started_tx, started_rx) = oneshot::channel();
        let task = engine::Engine::spawn(engine::EngineParts {
            opts: options,
            agent,
            llm: providers.llm,
            tts: providers.tts,
            has_turn_detector: providers.turn_detector,
            tool_cx,
            handle: handle.clone(),
            events,
            cmd_rx,
            input_rx: user_rx,
            stt_rx,
            stt_input: stt_input.clone(),
            sink,
            mixer,
            started: started_tx,
            realtime,
        });
        let _ = started_rx.await;
        Ok(AgentSession {
            handle,
            input: SessionInput {
                stt: stt_input,
                model: model_feed,
                user: user_tx,
            },
            task,
        })
    }

    /// A cloneable handle (for tools, agents, other tasks).
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// The input side, for the front end.
    pub fn input(&self) -> SessionInput {
        self.input.clone()
    }

    /// Waits until the session has ended (closed, or ended by the wake-up timer).
    pub async fn closed(self) {
        let _ = self.task.await;
    }
}
