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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::agent::configured::{ConfiguredAgent, ConfiguredAgentError};
use crate::agent::{Agent, ToolContext};
use crate::config::dtmf::DtmfConfig;
use crate::config::{Config, ListenConfig, ProvidersError};
use crate::listen::live::{Listener, Live, LiveInput};
use crate::listen::models::ModelStore;
use crate::listen::{ListenError, ListenEvent, Models};
use crate::session::{
    AgentSession, AgentState, AudioSink, Providers, SessionError, SessionEvent, SessionHandle,
    SessionInput, SessionOptions, UserInput,
};
use crate::telephony::dtmf::{DtmfAction, DtmfHandler};
use crate::telephony::voicemail::{VoicemailAction, VoicemailOptions};
use crate::telephony::warm_transfer::{
    self, BriefingAgent, Consultation, ConsultationEvent, ConsultationLine, TransferLine,
    WarmTransferOptions,
};
use crate::transport::local::PIPELINE_RATE;
use crate::transport::sip::media::{
    parse_info, MediaConfig, MediaEvent, RtpSession, RtpSink, G711,
};
use crate::transport::sip::{
    CallEvent, CallHandle, DialError, Dialer, Endpoint, EndpointError, HangupReason, IncomingCall,
};
use crate::transport::{CallControl, CallError, HoldLineSender};

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
    /// A sound the agent section names cannot be played.
    #[error(transparent)]
    Sound(#[from] crate::config::agent::SoundError),
    /// A call could not be answered or its media started.
    #[error("the call: {0}")]
    Call(String),
}

/// What every call shares.
struct Shared {
    agent: Arc<dyn Agent>,
    providers: Providers,
    /// The session options of a call hark answers (no voicemail detection: a caller is a
    /// person, or a machine that called on purpose).
    options: SessionOptions,
    /// `[agent.voicemail]`, for calls hark places.
    voicemail: Option<VoicemailOptions>,
    /// `[agent.warm_transfer]`.
    warm_transfer: Option<WarmTransferOptions>,
    /// `[agent.dtmf]`: what the caller's keys do.
    dtmf: DtmfConfig,
    listen: ListenConfig,
    store: ModelStore,
    /// Models returned by finished calls, ready for the next (loading costs ~0.1 s).
    idle_models: Mutex<Vec<Models>>,
    events: broadcast::Sender<PhoneEvent>,
    dialer: Dialer,
    /// Hangs up every call (the endpoint shuts down).
    stop_calls: broadcast::Sender<()>,
}

impl Shared {
    async fn new(
        config: &Config,
        store: ModelStore,
        events: broadcast::Sender<PhoneEvent>,
        dialer: Dialer,
    ) -> Result<Arc<Shared>, PhoneError> {
        let agent_config = config.agent.as_ref().ok_or(PhoneError::NoAgent)?;
        let providers = config.providers()?;
        if providers.llm.is_none() && providers.realtime.is_none() {
            return Err(PhoneError::NoModel);
        }
        let agent: Arc<dyn Agent> = Arc::new(ConfiguredAgent::connect(agent_config).await?);
        let mut options = agent_config.session_options();
        options.input_rate = PIPELINE_RATE;
        options.output_rate = PIPELINE_RATE;
        options.thinking_audio = agent_config.thinking_sound(PIPELINE_RATE)?;
        let warm_transfer = agent_config
            .warm_transfer
            .as_ref()
            .map(|w| w.to_options(PIPELINE_RATE))
            .transpose()?;
        let voicemail = options.voicemail.take();
        Ok(Arc::new(Shared {
            agent,
            providers: Providers {
                vad: true,
                turn_detector: config.listen.turn.enabled,
                ..providers
            },
            options,
            voicemail,
            warm_transfer,
            dtmf: agent_config.dtmf.clone(),
            listen: config.listen.clone(),
            store,
            idle_models: Mutex::new(Vec::new()),
            events,
            dialer,
            stop_calls: broadcast::channel(1).0,
        }))
    }
}

/// Starts the endpoint: `config` must have `[sip]`.
async fn endpoint(config: &Config) -> Result<Endpoint, PhoneError> {
    let sip = config.sip.as_ref().ok_or(PhoneError::NoSip)?;
    if config.agent.is_none() {
        return Err(PhoneError::NoAgent);
    }
    Ok(Endpoint::start(sip).await?)
}

/// Runs the endpoint until `shutdown` resolves: registers (if a registrar is configured),
/// answers calls, and on shutdown hangs up the calls in progress and unregisters.
pub async fn run(
    config: &Config,
    store: ModelStore,
    events: broadcast::Sender<PhoneEvent>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PhoneError> {
    let mut endpoint = endpoint(config).await?;
    let shared = Shared::new(config, store, events, endpoint.dialer()).await?;
    tracing::info!(address = %endpoint.local_addr(), "SIP endpoint listening");
    let _ = shared.events.send(PhoneEvent::Ready {
        address: endpoint.local_addr(),
    });
    let mut calls = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            call = endpoint.accept() => match call {
                Some(call) => {
                    let (shared, stop) = (shared.clone(), shared.stop_calls.subscribe());
                    calls.spawn(async move {
                        let id = call.id.clone();
                        if let Err(e) = serve(call, shared, stop, Role::Answered).await {
                            tracing::warn!(call = %id, error = %e, "call failed");
                        }
                    });
                }
                None => break,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
        }
    }
    let _ = shared.stop_calls.send(());
    while calls.join_next().await.is_some() {}
    endpoint.shutdown().await;
    Ok(())
}

/// Places one call to `target` with the agent (with `[agent.voicemail]`'s detection, if
/// configured) and returns once it is over: `hark call`. `shutdown` hangs up.
pub async fn call(
    config: &Config,
    store: ModelStore,
    events: broadcast::Sender<PhoneEvent>,
    target: &str,
    ring_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<HangupReason, PhoneError> {
    let endpoint = endpoint(config).await?;
    let shared = Shared::new(config, store, events, endpoint.dialer()).await?;
    let _ = shared.events.send(PhoneEvent::Ready {
        address: endpoint.local_addr(),
    });
    let result = async {
        let call = endpoint
            .call(target, ring_timeout)
            .await
            .map_err(|e| PhoneError::Call(format!("calling {target}: {e}")))?;
        let stop = shared.stop_calls.subscribe();
        let id = call.id.clone();
        let mut ended = shared.events.subscribe();
        let served = serve(call, shared.clone(), stop, Role::Placed);
        tokio::pin!(served, shutdown);
        tokio::select! {
            r = &mut served => r?,
            _ = &mut shutdown => {
                let _ = shared.stop_calls.send(());
                served.await?;
            }
        }
        loop {
            match ended.try_recv() {
                Ok(PhoneEvent::CallEnded { call, reason }) if call == id => return Ok(reason),
                Ok(_) => {}
                Err(_) => return Ok(HangupReason::Local),
            }
        }
    }
    .await;
    endpoint.shutdown().await;
    result
}

/// Why hark is on a call, which decides the agent and its options.
enum Role {
    /// Someone called hark.
    Answered,
    /// hark called someone (voicemail detection applies).
    Placed,
    /// A warm transfer's call to the supervisor: the briefing agent talks.
    Briefing {
        agent: Arc<BriefingAgent>,
        to_transfer: mpsc::Sender<ConsultationEvent>,
        commands: mpsc::Receiver<LegCommand>,
    },
}

/// The front end's output for one call: into its session, or once the call is joined to
/// another, straight to the other call's media.
struct ToCall {
    session: SessionInput,
    call: String,
    events: broadcast::Sender<PhoneEvent>,
    /// The other call's media, sent once (a warm transfer's switch).
    joined: std::sync::mpsc::Receiver<RtpSink>,
    peer: Option<RtpSink>,
}

impl Listener for ToCall {
    fn audio(&mut self, frame: &[f32]) {
        if self.peer.is_none() {
            self.peer = self.joined.try_recv().ok();
        }
        match &mut self.peer {
            Some(peer) => peer.push(frame),
            None => self.session.push_audio(frame),
        }
    }

    fn event(&mut self, event: &ListenEvent) {
        if self.peer.is_some() {
            return;
        }
        self.session.user(UserInput::from(*event));
        let _ = self.events.send(PhoneEvent::Listen {
            call: self.call.clone(),
            event: *event,
        });
    }
}

/// The session's audio sink: the call's media, handed back when the session ends so that a
/// warm transfer can join the call to another.
struct HandBack {
    sink: Option<RtpSink>,
    back: Option<oneshot::Sender<RtpSink>>,
}

impl AudioSink for HandBack {
    fn write(&mut self, frame: &[f32]) {
        if let Some(s) = &mut self.sink {
            s.push(frame);
        }
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        if let (Some(sink), Some(back)) = (self.sink.take(), self.back.take()) {
            let _ = back.send(sink);
        }
    }
}

/// What a warm transfer asks of a call's loop.
enum LegCommand {
    /// End the agent's session and hand over the call's media for joining.
    Release(oneshot::Sender<Result<Released, CallError>>),
    /// Joined to `peer`: carry the call until either side hangs up.
    Join { peer: Arc<CallHandle> },
    /// Hang up (an abandoned consultation).
    HangUp,
}

/// A call whose session has ended, ready to be joined.
struct Released {
    /// Where audio for this call goes.
    sink: RtpSink,
    /// Gives this call's front end the other call's sink.
    joined: std::sync::mpsc::SyncSender<RtpSink>,
    sip: Arc<CallHandle>,
}

/// One call, from answer to hangup.
async fn serve(
    call: IncomingCall,
    shared: Arc<Shared>,
    mut stop: broadcast::Receiver<()>,
    role: Role,
) -> Result<(), PhoneError> {
    let models = take_models(&shared).await?;
    let (id, from) = (call.id.clone(), call.from.clone());
    let media = &call.media;
    let codec = G711::from_payload_type(media.payload_type)
        .ok_or_else(|| PhoneError::Call(format!("codec {} is not G.711", media.codec)))?;
    let media_config = MediaConfig {
        telephone_event: media.telephone_event,
        ..MediaConfig::new(media.remote, codec)
    };
    if matches!(role, Role::Answered) {
        call.answer()
            .await
            .map_err(|e| PhoneError::Call(format!("answer: {e}")))?;
    }
    let handle_sip = call.control();
    // The socket moves to the media; the call's events stay here.
    let (socket, rtcp, mut call_events) = call.into_parts();
    let (rtp, streams) = RtpSession::start_with_rtcp(socket, Some(rtcp), media_config)
        .map_err(|e| PhoneError::Call(e.to_string()))?;
    let rtp = Arc::new(rtp);
    let open = Arc::new(AtomicBool::new(true));
    let (leg_tx, leg_rx) = mpsc::channel(4);
    let (agent, options, mut commands, to_transfer) = match role {
        Role::Answered => (shared.agent.clone(), shared.options.clone(), leg_rx, None),
        Role::Placed => {
            let mut options = shared.options.clone();
            options.voicemail = shared.voicemail.clone();
            (shared.agent.clone(), options, leg_rx, None)
        }
        Role::Briefing {
            agent,
            to_transfer,
            commands,
        } => {
            let mut options = shared.options.clone();
            // An answering machine on the supervisor's line ends the briefing, not the call.
            options.voicemail = Some(VoicemailOptions {
                action: VoicemailAction::Report,
                ..shared.voicemail.clone().unwrap_or_default()
            });
            options.wake_up = None;
            (
                agent as Arc<dyn Agent>,
                options,
                commands,
                Some(to_transfer),
            )
        }
    };
    let control: Arc<dyn CallControl> = Arc::new(PhoneCall {
        sip: handle_sip.clone(),
        rtp: Arc::downgrade(&rtp),
        transfer: to_transfer.is_none().then(|| TransferContext {
            shared: shared.clone(),
            open: open.clone(),
            leg: leg_tx,
            running: Arc::new(AtomicBool::new(false)),
        }),
    });
    let mut media_events = streams.events;
    let (back_tx, mut sink_back) = oneshot::channel();
    let session = AgentSession::start(
        agent,
        shared.providers.clone(),
        options,
        Box::new(HandBack {
            sink: Some(streams.outbound),
            back: Some(back_tx),
        }),
        ToolContext {
            call: Some(control.clone()),
            session: None,
        },
    )
    .await?;
    let mut session_events = session.subscribe();
    let (joined_tx, joined_rx) = std::sync::mpsc::sync_channel(1);
    let live = call_front_end(
        &shared.listen,
        models,
        streams.inbound,
        streams.inbound_wake,
        open.clone(),
        Box::new(ToCall {
            session: session.input(),
            call: id.clone(),
            events: shared.events.clone(),
            joined: joined_rx,
            peer: None,
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
    let mut session_over = false;
    let mut events_open = true;
    let mut reason = None;
    // Set once the session was ended for a warm transfer's switch: the call goes on.
    let mut releasing: Option<oneshot::Sender<Result<Released, CallError>>> = None;
    let mut joined_to: Option<Arc<CallHandle>> = None;
    let mut released = false;
    loop {
        tokio::select! {
            _ = &mut closed, if !session_over => {
                session_over = true;
                if !released {
                    break;
                }
            }
            sink = &mut sink_back, if releasing.is_some() => {
                let reply = releasing.take().expect("guarded");
                let _ = reply.send(sink.map_err(|_| CallError::Failed("the call's media has ended".into())).map(|sink| Released {
                    sink,
                    joined: joined_tx.clone(),
                    sip: handle_sip.clone(),
                }));
            }
            c = commands.recv() => match c {
                Some(LegCommand::Release(reply)) if reason.is_none() && !released => {
                    released = true;
                    releasing = Some(reply);
                    handle.close().await;
                }
                Some(LegCommand::Release(reply)) => {
                    let _ = reply.send(Err(CallError::Failed("the call has ended".into())));
                }
                Some(LegCommand::Join { peer }) => joined_to = Some(peer),
                Some(LegCommand::HangUp) => {
                    if let Err(e) = handle_sip.hangup("the consultation was abandoned").await {
                        tracing::debug!(call = %id, error = %e, "BYE failed");
                    }
                    reason = Some(HangupReason::Local);
                    if released { break; }
                    handle.close().await;
                }
                None => {}
            },
            _ = stop.recv(), if reason.is_none() => {
                reason = Some(HangupReason::Shutdown);
                if released { break; }
                handle.close().await;
            }
            // Read on after the session ends: a warm transfer publishes its last phases there.
            e = session_events.recv(), if events_open => match e {
                Ok(event) => {
                    if let (SessionEvent::Voicemail { detected: true }, Some(t)) = (&event, &to_transfer) {
                        let _ = t.try_send(ConsultationEvent::Voicemail);
                    }
                    let _ = shared.events.send(PhoneEvent::Session { call: id.clone(), event });
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            e = call_events.recv(), if reason.is_none() => match e {
                Some(CallEvent::Hangup { reason: r }) => {
                    reason = Some(r);
                    if let Some(t) = &to_transfer {
                        let _ = t.try_send(ConsultationEvent::HungUp);
                    }
                    if released { break; }
                    handle.close().await;
                }
                None => {
                    reason = Some(HangupReason::Remote);
                    if released { break; }
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
                Some(CallEvent::MediaChanged(m)) => if let Err(e) = rtp.retarget(&m).await {
                    tracing::warn!(call = %id, error = %e, "re-INVITE's media not applied")
                }
            },
            _ = sleep_until_or_never(keys.deadline()), if reason.is_none() && !released => {
                if let Some(action) = keys.expire(tokio::time::Instant::now()) {
                    act(&handle, &id, action);
                }
            }
            Some(e) = media_events.recv() => match e {
                MediaEvent::Dtmf { digit, .. } if !released => dtmf(&mut keys, &handle, &id, digit.to_char()),
                MediaEvent::Dtmf { .. } => {}
                MediaEvent::Latched(addr) => {
                    tracing::debug!(call = %id, %addr, "RTP latched");
                    if let Some(t) = &to_transfer {
                        let _ = t.try_send(ConsultationEvent::AudioLive);
                    }
                }
            },
        }
    }
    // What the session said last (a voicemail verdict before its hangup) still goes out.
    while let Ok(event) = session_events.try_recv() {
        let _ = shared.events.send(PhoneEvent::Session {
            call: id.clone(),
            event,
        });
    }
    // Joined calls end together.
    if let Some(peer) = joined_to {
        if let Err(e) = peer.hangup("the other side of the transfer hung up").await {
            tracing::debug!(call = %id, error = %e, "the joined call was already over");
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
    if !session_over {
        handle.close().await;
        closed.await;
    }
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
        peer_lost = stats.peer_lost.load(std::sync::atomic::Ordering::Relaxed),
        round_trip_ms = stats.round_trip().map(|d| d.as_secs_f32() * 1000.0),
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

/// Starts one call's front end on the caller's audio (16 kHz, from the call's
/// [`RtpSession`]); `open` mutes it (cleared while the caller is on hold). No echo canceller on
/// a phone line. Public so the concurrent-calls benchmark (`benches/phone_calls.rs`) builds
/// exactly what a call runs.
pub fn call_front_end(
    listen: &ListenConfig,
    models: Models,
    inbound: rtrb::Consumer<f32>,
    wake: Arc<crate::audio::ring::Wake>,
    open: Arc<AtomicBool>,
    listener: Box<dyn Listener>,
) -> Result<Live, ListenError> {
    let input = LiveInput {
        mic: inbound,
        wake,
        open,
        played: None,
    };
    Live::spawn(listen.clone(), models, input, listener)
}

/// A call's controls as the session sees them: signalling (hangup, transfer) by the SIP call,
/// DTMF by its media as RFC 4733 events, warm transfer by the endpoint.
struct PhoneCall {
    sip: Arc<CallHandle>,
    /// Weak: the call loop owns the media and ends it when the call ends.
    rtp: Weak<RtpSession>,
    /// What a warm transfer needs; `None` on a supervisor's call (no transfer from there).
    transfer: Option<TransferContext>,
}

struct TransferContext {
    shared: Arc<Shared>,
    /// The caller's audio into the front end.
    open: Arc<AtomicBool>,
    /// The call's loop.
    leg: mpsc::Sender<LegCommand>,
    /// A transfer runs.
    running: Arc<AtomicBool>,
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

    async fn warm_transfer(&self, session: SessionHandle) -> Result<HoldLineSender, CallError> {
        let cx = self.transfer.as_ref().ok_or(CallError::Unsupported)?;
        let options = cx.shared.warm_transfer.clone().ok_or_else(|| {
            CallError::Failed("no supervisor is configured ([agent.warm_transfer])".into())
        })?;
        if cx.running.swap(true, Ordering::SeqCst) {
            return Err(CallError::Failed(
                "a transfer is already in progress".into(),
            ));
        }
        let (go, hold_line) = oneshot::channel();
        let line = CallerLine {
            shared: cx.shared.clone(),
            sip: self.sip.clone(),
            open: cx.open.clone(),
            leg: cx.leg.clone(),
        };
        let running = cx.running.clone();
        tokio::spawn(async move {
            let Ok(hold_line) = hold_line.await else {
                running.store(false, Ordering::SeqCst);
                return;
            };
            let llm = line.shared.providers.llm.clone();
            let result = warm_transfer::run(&session, &line, llm, &options, hold_line).await;
            tracing::info!(success = result.success, error = ?result.error, "warm transfer ended");
            if !result.success {
                running.store(false, Ordering::SeqCst);
            }
        });
        Ok(go)
    }
}

/// The caller's side of a warm transfer.
struct CallerLine {
    shared: Arc<Shared>,
    sip: Arc<CallHandle>,
    open: Arc<AtomicBool>,
    leg: mpsc::Sender<LegCommand>,
}

#[async_trait]
impl TransferLine for CallerLine {
    fn call_id(&self) -> String {
        self.sip.call_id().to_string()
    }

    fn set_caller_heard(&self, heard: bool) {
        self.open.store(heard, Ordering::Relaxed);
    }

    async fn hold_caller(&self) -> Result<(), CallError> {
        self.sip.hold().await
    }

    async fn resume_caller(&self) -> Result<(), CallError> {
        self.sip.resume().await
    }

    async fn dial(
        &self,
        destination: &str,
        ring: Duration,
        briefing: Arc<BriefingAgent>,
    ) -> Result<Consultation, CallError> {
        let call = self
            .shared
            .dialer
            .consult(destination, ring)
            .await
            .map_err(|e| match e {
                DialError::NoAnswer(why) => CallError::NoAnswer(why),
                e => CallError::Failed(e.to_string()),
            })?;
        let call_id = call.id.clone();
        let (events_tx, events) = mpsc::channel(16);
        let (commands_tx, commands) = mpsc::channel(4);
        let shared = self.shared.clone();
        // The supervisor's call ends with the endpoint like any other.
        let stop = self.shared.stop_calls.subscribe();
        let id = call_id.clone();
        tokio::spawn(async move {
            let role = Role::Briefing {
                agent: briefing,
                to_transfer: events_tx,
                commands,
            };
            if let Err(e) = serve(call, shared, stop, role).await {
                tracing::warn!(call = %id, error = %e, "the supervisor's call failed");
            }
        });
        Ok(Consultation {
            call_id,
            events,
            line: Box::new(SupervisorLine {
                caller: self.leg.clone(),
                supervisor: commands_tx,
            }),
        })
    }
}

/// The supervisor's side of a warm transfer.
struct SupervisorLine {
    caller: mpsc::Sender<LegCommand>,
    supervisor: mpsc::Sender<LegCommand>,
}

/// Ends a call's session and takes its media.
async fn release(leg: &mpsc::Sender<LegCommand>) -> Result<Released, CallError> {
    let (tx, rx) = oneshot::channel();
    leg.send(LegCommand::Release(tx))
        .await
        .map_err(|_| CallError::Failed("the call has ended".into()))?;
    rx.await
        .map_err(|_| CallError::Failed("the call has ended".into()))?
}

#[async_trait]
impl ConsultationLine for SupervisorLine {
    async fn connect(self: Box<Self>) -> Result<(), CallError> {
        let supervisor = release(&self.supervisor).await?;
        let caller = match release(&self.caller).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.supervisor.send(LegCommand::HangUp).await;
                return Err(e);
            }
        };
        // Each front end now feeds the other call's media.
        let _ = caller.joined.try_send(supervisor.sink);
        let _ = supervisor.joined.try_send(caller.sink);
        let _ = self
            .caller
            .send(LegCommand::Join {
                peer: supervisor.sip,
            })
            .await;
        let _ = self
            .supervisor
            .send(LegCommand::Join { peer: caller.sip })
            .await;
        Ok(())
    }

    async fn abandon(self: Box<Self>) {
        let _ = self.supervisor.send(LegCommand::HangUp).await;
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
