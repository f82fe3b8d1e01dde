//! A kiosk: the board's microphone and speaker, the on-device front end, and one conversation
//! at a time with whoever stands in front of it (the Python framework's console mode, as a
//! device).
//!
//! The sound card and the front end run for the life of the process; sessions come and go. The
//! first session starts at once (the agent greets); when one ends (the wake-up timer said
//! goodbye, or a tool ended it) the next starts when someone speaks again.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use crate::agent::configured::{ConfiguredAgent, ConfiguredAgentError};
use crate::agent::{Agent, ToolContext};
use crate::config::{AudioDefaults, Config, ProvidersError};
use crate::listen::live::{Listener, Live, LiveInput};
use crate::listen::vad::VadEventType;
use crate::listen::{ListenError, ListenEvent, Models};
use crate::session::{
    AgentSession, AudioSink, SessionError, SessionEvent, SessionInput, UserInput,
};
use crate::transport::local::{AudioStats, LocalAudio, Speaker, PIPELINE_RATE};

/// What a kiosk reports (for `hark console`, LEDs, logs).
#[derive(Debug, Clone)]
pub enum KioskEvent {
    /// The front end heard something.
    Listen(ListenEvent),
    /// A conversation began.
    SessionStarted,
    /// The conversation published this.
    Session(SessionEvent),
    /// The conversation ended; the next starts when someone speaks.
    SessionEnded,
}

/// Why a kiosk cannot run.
#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    /// No `[agent]` section: there is nobody to talk to.
    #[error("the kiosk needs an [agent] section in the config (instructions, greeting, tools)")]
    NoAgent,
    /// Neither `[llm]` nor `[realtime]`: the agent cannot think.
    #[error("the kiosk needs an [llm] or a [realtime] section in the config")]
    NoModel,
    /// A provider section could not be built.
    #[error(transparent)]
    Providers(#[from] ProvidersError),
    /// The agent's tools could not be gathered.
    #[error(transparent)]
    Agent(#[from] ConfiguredAgentError),
    /// The audio threads could not be started.
    #[error("cannot start the audio threads: {0}")]
    Threads(#[from] std::io::Error),
    /// The front end stopped (a model failed).
    #[error("the listening front end stopped: {0}")]
    Listen(#[from] ListenError),
    /// A session could not start.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The front end's output: to the current session (if any) and to the kiosk's events.
struct ToSession {
    session: Arc<Mutex<Option<SessionInput>>>,
    events: mpsc::UnboundedSender<ListenEvent>,
}

impl Listener for ToSession {
    fn audio(&mut self, frame: &[f32]) {
        if let Some(s) = self.session.lock().expect("session slot").as_ref() {
            s.push_audio(frame);
        }
    }

    fn event(&mut self, event: &ListenEvent) {
        if let Some(s) = self.session.lock().expect("session slot").as_ref() {
            s.user(UserInput::from(*event));
        }
        let _ = self.events.send(*event);
    }
}

/// The speaker, kept across sessions (each session's engine holds it only while it runs).
struct SharedSpeaker(Arc<Mutex<Speaker>>);

impl AudioSink for SharedSpeaker {
    fn write(&mut self, frame: &[f32]) {
        self.0.lock().expect("speaker").write(frame);
    }
}

/// Runs the kiosk until `shutdown` resolves, reporting on `events`. `board` fills the `[audio]`
/// keys the config leaves out. Returns the devices' counters for a last report.
pub async fn run(
    config: &Config,
    board: &AudioDefaults,
    models: Models,
    events: broadcast::Sender<KioskEvent>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Arc<AudioStats>, KioskError> {
    let agent_config = config.agent.as_ref().ok_or(KioskError::NoAgent)?;
    let providers = config.providers()?;
    if providers.llm.is_none() && providers.realtime.is_none() {
        return Err(KioskError::NoModel);
    }
    let agent: Arc<dyn Agent> = Arc::new(ConfiguredAgent::connect(agent_config).await?);
    let mut options = agent_config.session_options();
    options.input_rate = PIPELINE_RATE;
    let providers = crate::session::Providers {
        vad: true,
        turn_detector: config.listen.turn.enabled,
        ..providers
    };

    let (audio, streams) = LocalAudio::start(&config.audio.resolve(board))?;
    let speaker = Arc::new(Mutex::new(streams.speaker.at_rate(options.output_rate)));
    let slot = Arc::new(Mutex::new(None));
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let live = Live::spawn(
        config.listen.clone(),
        models,
        LiveInput {
            mic: streams.mic,
            wake: streams.mic_wake,
        },
        Box::new(ToSession {
            session: slot.clone(),
            events: heard_tx,
        }),
    )?;

    tokio::pin!(shutdown);
    let result = loop {
        let session = match AgentSession::start(
            agent.clone(),
            providers.clone(),
            options.clone(),
            Box::new(SharedSpeaker(speaker.clone())),
            ToolContext::default(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => break Err(e.into()),
        };
        let mut session_events = session.subscribe();
        *slot.lock().expect("session slot") = Some(session.input());
        let _ = events.send(KioskEvent::SessionStarted);
        let handle = session.handle();
        let closed = session.closed();
        tokio::pin!(closed);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = &mut closed => break,
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    handle.close().await;
                }
                e = session_events.recv() => {
                    if let Ok(e) = e {
                        let _ = events.send(KioskEvent::Session(e));
                    }
                }
                e = heard.recv() => match e {
                    Some(e) => { let _ = events.send(KioskEvent::Listen(e)); }
                    None => break,
                },
            }
        }
        *slot.lock().expect("session slot") = None;
        let _ = events.send(KioskEvent::SessionEnded);
        if stopping {
            break Ok(());
        }
        if live.is_finished() {
            break Ok(());
        }
        // The next conversation starts when someone speaks.
        let woke = loop {
            tokio::select! {
                _ = &mut shutdown => break false,
                e = heard.recv() => match e {
                    Some(e) => {
                        let _ = events.send(KioskEvent::Listen(e));
                        if matches!(e, ListenEvent::Vad(v) if v.event_type == VadEventType::StartOfSpeech) {
                            break true;
                        }
                    }
                    None => break false,
                },
            }
        };
        if !woke {
            break Ok(());
        }
    };
    let stats = audio.stats().clone();
    drop(audio);
    live.stop()?;
    result.map(|()| stats)
}
