//! A phone endpoint: hark as a SIP extension (registered with a PBX, or called directly) that
//! answers each call with an agent. Every call gets its own RTP media, its own front end (VAD and
//! turn detection on the caller's 8 kHz audio, resampled; no echo canceller on a phone line) and
//! its own session; the endpoint refuses calls beyond `[sip] max_sessions` with 486.
//!
//! A call's life: the models are made ready (reused from the last call, or loaded), the call is
//! answered, the media starts, the session starts (and greets), and only then does the front
//! end start reading the caller's audio, so nothing the caller said after the answer is lost
//! (the media ring holds 2 s). The call ends when the caller hangs up (the session is closed),
//! when the session ends (the agent's `end_call`, the wake-up timer's goodbye: hark sends BYE),
//! or when the endpoint shuts down.
//!
//! Keys the caller presses (RFC 4733, SIP INFO or in-band) go through the call's
//! [`DtmfHandler`]: each is reported as [`PhoneEvent::Dtmf`], mapped sequences act (say,
//! transfer, end the call) and other entries reach the LLM as a user turn. The agent's
//! `send_dtmf` tool sends RFC 4733 events in the call's media.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;

use tokio::sync::broadcast;

use crate::agent::configured::{ConfiguredAgent, ConfiguredAgentError};
use crate::agent::{Agent, ToolContext};
use crate::config::dtmf::DtmfConfig;
use crate::config::{Config, ListenConfig, ProvidersError};
use crate::listen::live::{Listener, Live, LiveInput};
use crate::listen::models::ModelStore;
use crate::listen::{ListenError, ListenEvent, Models};
use crate::session::{
    AgentSession, AgentState, Providers, SessionError, SessionEvent, SessionHandle, SessionInput,
    SessionOptions, UserInput,
};
use crate::telephony::dtmf::{DtmfAction, DtmfHandler};
use crate::transport::local::PIPELINE_RATE;
use crate::transport::sip::media::{parse_info, MediaConfig, MediaEvent, RtpSession, G711};
use crate::transport::sip::{
    CallEvent, CallHandle, Endpoint, EndpointError, HangupReason, IncomingCall,
};
use crate::transport::{CallControl, CallError};

/// What the endpoint reports, per call (for logs and tests).
#[derive(Debug, Clone)]
pub enum PhoneEvent {
    /// The endpoint is listening for calls at this address (and registering, if configured).
    Ready {
        /// The SIP socket's address.
        address: std::net::SocketAddr,
    },
    /// A call was answered and its session started.
    CallStarted {
        /// The SIP Call-ID.
        call: String,
        /// The caller, as its `From` header named it.
        from: String,
    },
    /// The call's front end heard something.
    Listen {
        /// The SIP Call-ID.
        call: String,
        /// What it heard.
        event: ListenEvent,
    },
    /// The call's session published this.
    Session {
        /// The SIP Call-ID.
        call: String,
        /// The event.
        event: SessionEvent,
    },
    /// The caller pressed a key (RFC 4733, SIP INFO or an in-band tone).
    Dtmf {
        /// The SIP Call-ID.
        call: String,
        /// The key.
        digit: char,
    },
    /// The call is over.
    CallEnded {
        /// The SIP Call-ID.
        call: String,
        /// Who ended it.
        reason: HangupReason,
    },
}

/// Why the endpoint cannot run, or one call failed.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// No `[sip]` section.
    #[error("the phone endpoint needs a [sip] section in the config")]
    NoSip,
    /// No `[agent]` section: there is nobody to answer.
    #[error("the phone endpoint needs an [agent] section in the config")]
    NoAgent,
    /// Neither `[llm]` nor `[realtime]`.
    #[error("the phone endpoint needs an [llm] or a [realtime] section in the config")]
    NoModel,
    /// A provider section could not be built.
    #[error(transparent)]
    Providers(#[from] ProvidersError),
    /// The agent's tools could not be gathered.
    #[error(transparent)]
    Agent(#[from] ConfiguredAgentError),
    /// The SIP endpoint could not start.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A call's front end could not start or stopped.
    #[error("the listening front end: {0}")]
    Listen(#[from] ListenError),
    /// A call's session could not start.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A call could not be answered or its media started.
    #[error("the call: {0}")]
    Call(String),
}

/// What every call shares.
struct Shared {
    agent: Arc<dyn Agent>,
    providers: Providers,
    options: SessionOptions,
    /// `[agent.dtmf]`: what the caller's keys do.
    dtmf: DtmfConfig,
    listen: ListenConfig,
    store: ModelStore,
    /// Models returned by finished calls, ready for the next (loading costs ~0.1 s).
    idle_models: Mutex<Vec<Models>>,
    events: broadcast::Sender<PhoneEvent>,
}

/// Runs the endpoint until `shutdown` resolves: registers (if a registrar is configured),
/// answers calls, and on shutdown hangs up the calls in progress and unregisters.
pub async fn run(
    config: &Config,
    store: ModelStore,
    events: broadcast::Sender<PhoneEvent>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PhoneError> {
    let sip = config.sip.as_ref().ok_or(PhoneError::NoSip)?;
    let agent_config = config.agent.as_ref().ok_or(PhoneError::NoAgent)?;
    let providers = config.providers()?;
    if providers.llm.is_none() && providers.realtime.is_none() {
        return Err(PhoneError::NoModel);
    }
    let agent: Arc<dyn Agent> = Arc::new(ConfiguredAgent::connect(agent_config).await?);
    let mut options = agent_config.session_options();
    options.input_rate = PIPELINE_RATE;
    options.output_rate = PIPELINE_RATE;
    let shared = Arc::new(Shared {
        agent,
        providers: Providers {
            vad: true,
            turn_detector: config.listen.turn.enabled,
            ..providers
        },
        options,
        dtmf: agent_config.dtmf.clone(),
        listen: config.listen.clone(),
        store,
        idle_models: Mutex::new(Vec::new()),
        events,
    });

    let mut endpoint = Endpoint::start(sip).await?;
    tracing::info!(address = %endpoint.local_addr(), "SIP endpoint listening");
    let _ = shared.events.send(PhoneEvent::Ready {
        address: endpoint.local_addr(),
    });
    let (stop_calls, _) = broadcast::channel::<()>(1);
    let mut calls = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            call = endpoint.accept() => match call {
                Some(call) => {
                    let (shared, stop) = (shared.clone(), stop_calls.subscribe());
                    calls.spawn(async move {
                        let id = call.id.clone();
                        if let Err(e) = serve(call, &shared, stop).await {
                            tracing::warn!(call = %id, error = %e, "call failed");
                        }
                    });
                }
                None => break,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
        }
    }
    let _ = stop_calls.send(());
    while calls.join_next().await.is_some() {}
    endpoint.shutdown().await;
    Ok(())
}

/// The front end's output for one call: straight into its session.
struct ToCall {
    session: SessionInput,
    call: String,
    events: broadcast::Sender<PhoneEvent>,
}

impl Listener for ToCall {
    fn audio(&mut self, frame: &[f32]) {
        self.session.push_audio(frame);
    }

    fn event(&mut self, event: &ListenEvent) {
        self.session.user(UserInput::from(*event));
        let _ = self.events.send(PhoneEvent::Listen {
            call: self.call.clone(),
            event: *event,
        });
    }
}

/// One call, from answer to hangup.
async fn serve(
    call: IncomingCall,
    shared: &Shared,
    mut stop: broadcast::Receiver<()>,
) -> Result<(), PhoneError> {
    let models = take_models(shared).await?;
    let (id, from) = (call.id.clone(), call.from.clone());
    let media = &call.media;
    let codec = G711::from_payload_type(media.payload_type)
        .ok_or_else(|| PhoneError::Call(format!("codec {} is not G.711", media.codec)))?;
    let media_config = MediaConfig {
        telephone_event: media.telephone_event,
        ..MediaConfig::new(media.remote, codec)
    };
    call.answer()
        .await
        .map_err(|e| PhoneError::Call(format!("answer: {e}")))?;
    let handle_sip = call.control();
    // The socket moves to the media; the call's events stay here.
    let (socket, mut call_events) = call.into_parts();
    let (rtp, streams) =
        RtpSession::start(socket, media_config).map_err(|e| PhoneError::Call(e.to_string()))?;
    let rtp = Arc::new(rtp);
    let control: Arc<dyn CallControl> = Arc::new(PhoneCall {
        sip: handle_sip,
        rtp: Arc::downgrade(&rtp),
    });
    let mut media_events = streams.events;

    let session = AgentSession::start(
        shared.agent.clone(),
        shared.providers.clone(),
        shared.options.clone(),
        Box::new(streams.outbound),
        ToolContext {
            call: Some(control.clone()),
            session: None,
        },
    )
    .await?;
    let mut session_events = session.subscribe();
    let live = Live::spawn(
        shared.listen.clone(),
        models,
        LiveInput {
            mic: streams.inbound,
            wake: streams.inbound_wake,
            open: Arc::new(AtomicBool::new(true)),
            played: None,
        },
        Box::new(ToCall {
            session: session.input(),
            call: id.clone(),
            events: shared.events.clone(),
        }),
    )?;
    let _ = shared.events.send(PhoneEvent::CallStarted {
        call: id.clone(),
        from,
    });
    tracing::info!(call = %id, "call answered");

    let handle = session.handle();
    let mut keys = DtmfHandler::new(shared.dtmf.clone());
    let (events, call) = (shared.events.clone(), id.clone());
    keys.set_callback(move |digit| {
        let _ = events.send(PhoneEvent::Dtmf {
            call: call.clone(),
            digit,
        });
    });
    let closed = session.closed();
    tokio::pin!(closed);
    let mut reason = None;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = stop.recv(), if reason.is_none() => {
                reason = Some(HangupReason::Shutdown);
                handle.close().await;
            }
            e = session_events.recv() => if let Ok(event) = e {
                let _ = shared.events.send(PhoneEvent::Session { call: id.clone(), event });
            },
            e = call_events.recv(), if reason.is_none() => match e {
                Some(CallEvent::Hangup { reason: r }) => {
                    reason = Some(r);
                    handle.close().await;
                }
                None => {
                    reason = Some(HangupReason::Remote);
                    handle.close().await;
                }
                Some(CallEvent::Info { content_type, body }) => {
                    match parse_info(&content_type, &String::from_utf8_lossy(&body)) {
                        Ok(d) => dtmf(&mut keys, &handle, &id, d.digit.to_char()),
                        Err(e) => tracing::warn!(call = %id, error = %e, "INFO body ignored"),
                    }
                }
                Some(CallEvent::Hold) => tracing::info!(call = %id, "caller put the call on hold"),
                Some(CallEvent::Resume) => tracing::info!(call = %id, "caller resumed the call"),
                Some(CallEvent::MediaChanged(m)) => {
                    tracing::warn!(call = %id, remote = %m.remote, "re-INVITE moved the media; the first address is kept")
                }
            },
            _ = sleep_until_or_never(keys.deadline()), if reason.is_none() => {
                if let Some(action) = keys.expire(tokio::time::Instant::now()) {
                    act(&handle, &id, action);
                }
            }
            Some(e) = media_events.recv() => match e {
                MediaEvent::Dtmf { digit, .. } => dtmf(&mut keys, &handle, &id, digit.to_char()),
                MediaEvent::Latched(addr) => tracing::debug!(call = %id, %addr, "RTP latched"),
            },
        }
    }
    // The session ended on its own: `end_call` has hung up already (its event is waiting);
    // anything else (the wake-up timer's goodbye) leaves the call to hang up here.
    let reason = match reason.or_else(|| pending_hangup(&mut call_events)) {
        Some(r) => r,
        None => {
            if let Err(e) = control.hangup("the agent ended the call").await {
                tracing::warn!(call = %id, error = %e, "BYE failed");
            }
            HangupReason::Local
        }
    };
    let stats = rtp.stats().clone();
    // The session may outlive the call a moment; its controls hold the media only weakly.
    drop(rtp);
    // Joining the front end's thread waits for its current frame: not on a runtime worker.
    let stopped = tokio::task::spawn_blocking(move || live.stop())
        .await
        .map_err(|e| PhoneError::Call(format!("stopping the front end: {e}")))?;
    if let Some(models) = stopped? {
        shared.idle_models.lock().expect("model pool").push(models);
    }
    tracing::info!(
        call = %id,
        ?reason,
        received = stats.received.load(std::sync::atomic::Ordering::Relaxed),
        lost = stats.lost.load(std::sync::atomic::Ordering::Relaxed),
        jitter_ms = stats.jitter_ms(),
        "call ended"
    );
    let _ = shared
        .events
        .send(PhoneEvent::CallEnded { call: id, reason });
    Ok(())
}

/// A hangup the call already reported, if one is queued.
fn pending_hangup(events: &mut tokio::sync::mpsc::Receiver<CallEvent>) -> Option<HangupReason> {
    while let Ok(e) = events.try_recv() {
        if let CallEvent::Hangup { reason } = e {
            return Some(reason);
        }
    }
    None
}

/// A key from the caller: to the handler (whose callback reports it), and its action, if any.
fn dtmf(keys: &mut DtmfHandler, session: &SessionHandle, call: &str, digit: char) {
    tracing::info!(call, %digit, "DTMF");
    if let Some(action) = keys.digit(digit, tokio::time::Instant::now()) {
        act(session, call, action);
    }
}

/// Sleeps until `deadline`, or forever without one (a `select!` branch that never fires).
async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How long a mapped key's `say` may take to play before its transfer or hangup goes ahead.
const SAY_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Does what a key asked, on its own task: saying waits for playback, and the call loop must
/// go on reading events meanwhile.
fn act(session: &SessionHandle, call: &str, action: DtmfAction) {
    tracing::info!(call, ?action, "DTMF action");
    let (session, call) = (session.clone(), call.to_string());
    tokio::spawn(async move {
        match action {
            DtmfAction::Collected { prompt, .. } => {
                if let Err(e) = session.reply(prompt, false, true).await {
                    tracing::warn!(call, error = %e, "typed keys not handed to the LLM");
                }
            }
            DtmfAction::Mapped {
                digits,
                say,
                transfer,
                end_call,
            } => {
                if let Some(text) = say {
                    // Not interruptible (it announces the action). Played out, not just
                    // synthesised: the agent is back to listening after speaking (the
                    // utterance's handle is done while the RTP ring still holds its end).
                    let mut events = session.subscribe();
                    match session.say(text, false).await {
                        Ok(utterance) => {
                            let spoken = async {
                                utterance.wait().await;
                                let mut spoke = false;
                                loop {
                                    let e = match events.recv().await {
                                        Ok(e) => e,
                                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                                        Err(broadcast::error::RecvError::Closed) => break,
                                    };
                                    if let SessionEvent::AgentStateChanged { state } = e {
                                        spoke |= state == AgentState::Speaking;
                                        if spoke && state != AgentState::Speaking {
                                            break;
                                        }
                                    }
                                }
                            };
                            if tokio::time::timeout(SAY_LIMIT, spoken).await.is_err() {
                                tracing::warn!(call, "DTMF `say` did not finish playing");
                            }
                        }
                        Err(e) => tracing::warn!(call, error = %e, "DTMF `say` refused"),
                    }
                }
                if let Some(target) = transfer {
                    if let Err(e) = session.transfer(&target).await {
                        tracing::warn!(call, %target, error = %e, "DTMF transfer failed");
                    }
                } else if end_call {
                    session
                        .hangup(&format!("the caller pressed {digits}"))
                        .await;
                }
            }
        }
    });
}

/// A call's controls as the session sees them: signalling (hangup, transfer) by the SIP call,
/// DTMF by its media as RFC 4733 events.
struct PhoneCall {
    sip: Arc<CallHandle>,
    /// Weak: the call loop owns the media and ends it when the call ends.
    rtp: Weak<RtpSession>,
}

#[async_trait]
impl CallControl for PhoneCall {
    async fn hangup(&self, reason: &str) -> Result<(), CallError> {
        self.sip.hangup(reason).await
    }

    async fn transfer(&self, target: &str) -> Result<(), CallError> {
        self.sip.transfer(target).await
    }

    async fn send_dtmf(&self, digits: &str) -> Result<(), CallError> {
        let rtp = self
            .rtp
            .upgrade()
            .ok_or_else(|| CallError::Failed("the call's media has ended".into()))?;
        rtp.send_dtmf(digits)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))
    }
}

/// A finished call's models, or freshly loaded ones (on a blocking thread: it takes ~0.1 s).
async fn take_models(shared: &Shared) -> Result<Models, PhoneError> {
    if let Some(m) = shared.idle_models.lock().expect("model pool").pop() {
        return Ok(m);
    }
    let (listen, store) = (shared.listen.clone(), shared.store.clone());
    tokio::task::spawn_blocking(move || Models::load(&listen, &store))
        .await
        .map_err(|e| PhoneError::Call(format!("loading models: {e}")))?
        .map_err(PhoneError::from)
}
