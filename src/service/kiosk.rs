//! A kiosk: the board's microphone and speaker, the on-device front end, and one conversation
//! at a time with whoever stands in front of it (the Python framework's console mode, as a
//! device).
//!
//! The sound card and the front end run for the life of the process; sessions come and go. The
//! first session starts at once (the agent greets); when one ends (the wake-up timer said
//! goodbye, or a tool ended it) the next starts when someone speaks again, and hears them from
//! the silence before their first word.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use crate::agent::configured::{ConfiguredAgent, ConfiguredAgentError};
use crate::agent::{Agent, ToolContext};
use crate::board::indicator::{Indicator, StatusLight};
use crate::config::{Config, ProvidersError};
use crate::listen::live::{Listener, Live, LiveInput};
use crate::listen::vad::VadEventType;
use crate::listen::{ListenError, ListenEvent, Models};
use crate::session::{
    AgentSession, AgentState, AudioSink, SessionError, SessionEvent, SessionInput, UserInput,
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
    /// A sound the agent section names cannot be played.
    #[error(transparent)]
    Sound(#[from] crate::config::agent::SoundError),
}

/// The front end's output: to the current session (if any) and to the kiosk's events.
struct ToSession {
    session: Arc<Mutex<Option<SessionInput>>>,
    events: mpsc::UnboundedSender<ListenEvent>,
    /// What was heard while no session was attached, so the words that wake the next session
    /// reach its speech-to-text whole, silence before them included.
    preroll: PreRoll,
    /// The front end's events since the speech that will wake the next session began (the
    /// session must see that speech start, and its end if it came before the session).
    woke_by: Vec<ListenEvent>,
}

/// How much audio before a session attaches it is given: the VAD's 0.5 s of padding before a
/// start of speech, plus the time the session takes to start (connecting to speech-to-text),
/// within the 2 s the speech-to-text queue holds.
const PREROLL: usize = PIPELINE_RATE as usize * 3 / 2;
/// Front-end events kept for the waking session (a start, an end, a turn verdict or two).
const WOKE_BY_EVENTS: usize = 8;

/// The last [`PREROLL`] samples, in a ring allocated once.
struct PreRoll {
    ring: Box<[f32]>,
    /// Next write position.
    head: usize,
    /// Samples held (up to the ring's length).
    len: usize,
}

impl PreRoll {
    fn new(capacity: usize) -> Self {
        Self {
            ring: vec![0.0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, frame: &[f32]) {
        for &s in frame {
            self.ring[self.head] = s;
            self.head = (self.head + 1) % self.ring.len();
        }
        self.len = (self.len + frame.len()).min(self.ring.len());
    }

    /// The held samples, oldest first, as two slices.
    fn slices(&self) -> (&[f32], &[f32]) {
        let start = (self.head + self.ring.len() - self.len) % self.ring.len();
        if start + self.len <= self.ring.len() {
            (&self.ring[start..start + self.len], &[])
        } else {
            (&self.ring[start..], &self.ring[..self.head])
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl Listener for ToSession {
    fn audio(&mut self, frame: &[f32]) {
        let slot = self.session.lock().expect("session slot");
        let Some(s) = slot.as_ref() else {
            self.preroll.push(frame);
            return;
        };
        if !self.woke_by.is_empty() {
            // This session was started by speech it has not heard yet: give it that speech.
            for e in self.woke_by.drain(..) {
                s.user(UserInput::from(e));
            }
            let (older, newer) = self.preroll.slices();
            s.push_audio(older);
            s.push_audio(newer);
        }
        self.preroll.clear();
        s.push_audio(frame);
    }

    fn event(&mut self, event: &ListenEvent) {
        if let Some(s) = self.session.lock().expect("session slot").as_ref() {
            s.user(UserInput::from(*event));
        } else if matches!(event, ListenEvent::Vad(v) if v.event_type == VadEventType::StartOfSpeech)
        {
            self.woke_by.clear();
            self.woke_by.push(*event);
        } else if !self.woke_by.is_empty() && self.woke_by.len() < WOKE_BY_EVENTS {
            self.woke_by.push(*event);
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

/// Runs the kiosk until `shutdown` resolves, reporting on `events`. The board profile
/// (`board = ...`) fills the `[audio]` keys the config leaves out and brings the status light
/// and button. Returns the devices' counters for a last report.
pub async fn run(
    config: &Config,
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
    options.thinking_audio = agent_config.thinking_sound(options.output_rate)?;
    let providers = crate::session::Providers {
        vad: true,
        turn_detector: config.listen.turn.enabled,
        ..providers
    };

    let (audio, streams) = LocalAudio::start(&config.audio.resolve(&config.audio_defaults()))?;
    let mic_open = Arc::new(AtomicBool::new(true));
    let shown = Arc::new(AtomicU8::new(Indicator::Listening as u8));
    let _board = BoardLoop::start(config, mic_open.clone(), shown.clone());
    let speaker = Arc::new(Mutex::new(streams.speaker.at_rate(options.output_rate)));
    let slot = Arc::new(Mutex::new(None));
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let live = Live::spawn(
        config.listen.clone(),
        models,
        LiveInput {
            mic: streams.mic,
            wake: streams.mic_wake,
            open: mic_open,
            played: Some(streams.played),
        },
        Box::new(ToSession {
            session: slot.clone(),
            events: heard_tx,
            preroll: PreRoll::new(PREROLL),
            woke_by: Vec::with_capacity(WOKE_BY_EVENTS),
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
                        if let Some(i) = indicator_for(&e) {
                            shown.store(i as u8, Ordering::Relaxed);
                        }
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
        shown.store(Indicator::Idle as u8, Ordering::Relaxed);
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
    // Closing the devices and the front end waits for their threads: not on a runtime worker.
    let stopped = tokio::task::spawn_blocking(move || {
        drop(audio);
        live.stop()
    })
    .await;
    if let Ok(stopped) = stopped {
        stopped?;
    }
    result.map(|()| stats)
}

/// What the status light shows for a session event; `None` leaves it as it is.
fn indicator_for(event: &SessionEvent) -> Option<Indicator> {
    match event {
        SessionEvent::AgentStateChanged { state } => Some(match state {
            AgentState::Starting | AgentState::Idle | AgentState::Listening => Indicator::Listening,
            AgentState::Thinking => Indicator::Thinking,
            AgentState::Speaking => Indicator::Speaking,
            AgentState::Closing => Indicator::Idle,
        }),
        SessionEvent::Error { .. } => Some(Indicator::Error),
        _ => None,
    }
}

fn indicator_from(v: u8) -> Indicator {
    [
        Indicator::Idle,
        Indicator::Listening,
        Indicator::Thinking,
        Indicator::Speaking,
        Indicator::Error,
    ]
    .into_iter()
    .find(|i| *i as u8 == v)
    .unwrap_or_default()
}

/// The board's light and button on their own thread (GPIO calls are blocking system calls):
/// the light follows the session, the button opens and closes the microphone.
struct BoardLoop {
    stop: Arc<AtomicBool>,
}

impl BoardLoop {
    /// Nothing to run on a board without GPIO; a GPIO that cannot be opened is logged and the
    /// kiosk goes on without it (talking matters more than the light).
    fn start(config: &Config, mic_open: Arc<AtomicBool>, shown: Arc<AtomicU8>) -> Option<Self> {
        let profile = config.board_profile()?;
        let io = match crate::board::gpio::BoardIo::from_profile(&profile) {
            Ok(io) => io?,
            Err(e) => {
                tracing::warn!(error = %e, board = %profile.name, "board GPIO unavailable; no light or button");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("hark-board".into())
            .spawn(move || {
                let crate::board::gpio::BoardIo {
                    mut light,
                    mut button,
                    button_action,
                } = io;
                let mut switch = crate::board::button::MicSwitch::new(button_action);
                if button.is_some() {
                    mic_open.store(
                        switch.state() == crate::board::button::MicState::Open,
                        Ordering::Relaxed,
                    );
                }
                let mut reported = false;
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if let Some(l) = light.as_mut() {
                        let shown = indicator_from(shown.load(Ordering::Relaxed));
                        if let Err(e) = l.show(shown, now).and_then(|()| l.tick(now)) {
                            if !reported {
                                tracing::warn!(error = %e, "status light failed");
                                reported = true;
                            }
                        }
                    }
                    if let Some(b) = button.as_mut() {
                        if let Ok(Some(event)) = b.poll(now) {
                            if let Some(state) = switch.apply(event) {
                                mic_open.store(
                                    state == crate::board::button::MicState::Open,
                                    Ordering::Relaxed,
                                );
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        match spawned {
            Ok(_) => Some(BoardLoop { stop }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the board thread");
                None
            }
        }
    }
}

impl Drop for BoardLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_light_follows_the_agent_and_shows_errors() {
        let state = |state| SessionEvent::AgentStateChanged { state };
        assert_eq!(
            indicator_for(&state(AgentState::Idle)),
            Some(Indicator::Listening)
        );
        assert_eq!(
            indicator_for(&state(AgentState::Thinking)),
            Some(Indicator::Thinking)
        );
        assert_eq!(
            indicator_for(&state(AgentState::Speaking)),
            Some(Indicator::Speaking)
        );
        assert_eq!(
            indicator_for(&state(AgentState::Closing)),
            Some(Indicator::Idle)
        );
        let error = SessionEvent::Error {
            component: "tts",
            message: "down".into(),
        };
        assert_eq!(indicator_for(&error), Some(Indicator::Error));
        assert_eq!(indicator_for(&SessionEvent::Interrupted), None);
        for i in [
            Indicator::Idle,
            Indicator::Listening,
            Indicator::Thinking,
            Indicator::Speaking,
            Indicator::Error,
        ] {
            assert_eq!(indicator_from(i as u8), i);
        }
    }

    #[test]
    fn the_preroll_keeps_the_latest_audio_oldest_first_across_the_wrap() {
        let mut p = PreRoll::new(5);
        p.push(&[1.0, 2.0, 3.0]);
        assert_eq!(p.slices(), (&[1.0, 2.0, 3.0][..], &[][..]));
        p.push(&[4.0, 5.0, 6.0, 7.0]);
        let (a, b) = p.slices();
        assert_eq!([a, b].concat(), [3.0, 4.0, 5.0, 6.0, 7.0]);
        p.clear();
        assert_eq!(p.slices(), (&[][..], &[][..]));
        p.push(&[8.0]);
        assert_eq!(p.slices(), (&[8.0][..], &[][..]));
    }
}
