//! The SIP endpoint: one UDP socket, the registration, and the calls in progress.
//!
//! One task reads the socket and handles each datagram in turn: responses go to the client
//! transaction waiting for them ([`SipSocket::transact`]), requests to the UAS logic below
//! (INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, re-INVITE). A retransmitted request gets the
//! response sent the first time again. The state lock is never held across an await.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::call::{CallEvent, CallHandle, HangupReason, IncomingCall};
use super::digest::{Algorithm, Guard, Verdict};
use super::message::{uri_host_port, uri_host_port_or, uri_of, Message, StartLine, MAX_MESSAGE};
use super::refer::{self, ReferProgress};
use super::register::{self, Registrar, RegistrationState};
use super::sdp::{self, NegotiatedMedia, Offer, SdpError};
use super::tcp::{TcpTransport, TlsSetup};
use super::transport::{branch, token, SipSocket, T1, T2};
use super::worth_logging;
use crate::config::sip::{AllowNet, SipConfig, SipTransport};
use crate::providers::http::ApiKey;
use crate::transport::CallError;

/// Methods the endpoint handles, for `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY, UPDATE";
/// How long a transaction's response is kept to answer retransmissions (64·T1).
const RESPONSE_CACHE: Duration = Duration::from_secs(32);
/// Most responses kept for retransmissions at once (about 2 MB at most).
pub const MAX_CACHED_RESPONSES: usize = 4096;
/// Calls offered but not yet taken by [`Endpoint::accept`].
const ACCEPT_QUEUE: usize = 8;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The `[sip]` section is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::SipIssue),
    /// The signalling socket could not be bound.
    #[error("cannot bind SIP socket {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// A TLS certificate, key or CA file named in `[sip]` cannot be used.
    #[error("sip: {0}")]
    Tls(#[from] crate::providers::tls::TlsFileError),
}

/// Counts of what the endpoint refused, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams read.
    pub received: AtomicU64,
    /// Datagrams that were not valid SIP (answered 400 when possible, else dropped).
    pub malformed: AtomicU64,
    /// INVITEs from peers outside `allow` (answered 403).
    pub forbidden: AtomicU64,
    /// INVITEs refused because `max_sessions` calls were up (answered 486).
    pub busy: AtomicU64,
    /// INVITEs whose SDP could not be answered (400 or 488).
    pub bad_offer: AtomicU64,
    /// INVITEs challenged for credentials (401; `inbound_auth`).
    pub unauthorized: AtomicU64,
    /// INVITEs whose credentials were wrong (403; `inbound_auth`).
    pub bad_credentials: AtomicU64,
}

/// How many entries the endpoint's tables hold: what a flood could try to grow. Each is
/// bounded (calls by `max_sessions`, cached responses by a fixed cap, transfers by calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Calls ringing or up.
    pub calls: usize,
    /// Responses kept to answer retransmitted requests.
    pub cached_responses: usize,
    /// Bookkeeping entries behind `cached_responses` (their order).
    pub cache_order: usize,
    /// Transfers waiting for their outcome.
    pub transfers: usize,
}

/// Settings derived from `[sip]`.
pub(super) struct Settings {
    pub(super) max_sessions: usize,
    pub(super) allow: Vec<AllowNet>,
    pub(super) codecs: Vec<String>,
    pub(super) rtp_ports: [u16; 2],
    /// Whether the registrar may tell hark its address (no `public_address`, over UDP).
    pub(super) learns_address: bool,
    /// How often to refresh a NAT's mapping towards the registrar over UDP.
    pub(super) keepalive: Option<Duration>,
    pub(super) user: String,
    /// Digest credentials for outbound calls (auth user, password), from `[sip]`.
    pub(super) credentials: Option<(String, ApiKey)>,
    /// Where outbound INVITEs go when a registrar is configured (it routes them).
    pub(super) outbound_proxy: Option<(String, u16)>,
    /// The address-of-record domain (`From` of outbound calls).
    pub(super) domain: Option<String>,
    /// Challenges new INVITEs when `[sip] inbound_auth` is on.
    pub(super) inbound_guard: Option<Guard>,
    /// The session interval asked for on calls hark places (0: none).
    pub(super) session_expires: u32,
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// 180 sent, waiting for the engine to answer.
    Ringing,
    /// 200 sent, waiting for ACK.
    Answered,
    /// ACK received.
    Confirmed,
}

pub(super) struct CallState {
    pub(super) invite: Message,
    pub(super) invite_branch: String,
    pub(super) source: SocketAddr,
    pub(super) local_tag: String,
    /// `From` of hark's requests in this dialog (hark's URI with its tag).
    pub(super) local_party: String,
    /// `To` of hark's requests in this dialog (the peer's URI with its tag).
    pub(super) remote_party: String,
    /// The ACK hark sent for a 2xx to its own INVITE, resent if that 2xx is (outbound calls).
    pub(super) ack_bytes: Option<(Vec<u8>, SocketAddr)>,
    pub(super) remote_target: String,
    pub(super) route_set: Vec<String>,
    pub(super) local_cseq: u32,
    pub(super) phase: Phase,
    pub(super) offer: Offer,
    pub(super) media: NegotiatedMedia,
    pub(super) rtp_local: SocketAddr,
    pub(super) session_id: u64,
    pub(super) sdp_version: u64,
    pub(super) ack: Arc<Notify>,
    pub(super) events: mpsc::Sender<CallEvent>,
}

/// A transfer under way: REFER sent in the dialog with `local_tag`; NOTIFYs update `progress`.
/// Kept apart from the call so a NOTIFY that arrives after the caller's BYE still counts.
pub(super) struct TransferSlot {
    local_tag: String,
    progress: watch::Sender<ReferProgress>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) calls: HashMap<String, CallState>,
    /// Transfers waiting for their outcome, by Call-ID.
    transfers: HashMap<String, TransferSlot>,
    /// hark's own re-INVITEs (hold, resume) per call, by Call-ID.
    pub(super) dialogs: HashMap<String, super::hold::DialogExtra>,
    /// Last response per (branch, method), for retransmitted requests.
    answered: HashMap<(String, String), (Vec<u8>, Instant)>,
    /// `answered`'s keys in the order they were stored, to expire and evict the oldest in
    /// constant time (a key stored again appears twice; the older entry is then stale).
    answered_order: VecDeque<((String, String), Instant)>,
    registrar_ip: Option<IpAddr>,
    next_rtp: u16,
}

impl State {
    /// Call `id`, if it is up and answered: what hold and transfer act on.
    pub(super) fn confirmed_call(&mut self, id: &str) -> Result<&mut CallState, CallError> {
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(|| CallError::Failed("the call is over".into()))?;
        if call.phase != Phase::Confirmed {
            return Err(CallError::Failed("the call is not answered yet".into()));
        }
        Ok(call)
    }
}

/// What the socket task and the call handles share.
pub struct Shared {
    pub(super) socket: SipSocket,
    pub(super) settings: Settings,
    /// Contact/SDP address: the signalling socket's ip:port as peers reach it (learnt from the
    /// registrar behind a NAT, see [`Shared::learn_address`]).
    contact_addr: Mutex<SocketAddr>,
    state: Mutex<State>,
    stats: Stats,
    incoming: mpsc::Sender<IncomingCall>,
}

/// A SIP user agent: registers (when configured) and hands out incoming calls.
pub struct Endpoint {
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<IncomingCall>,
    registration: watch::Receiver<RegistrationState>,
    stop: watch::Sender<bool>,
    reader: JoinHandle<()>,
    registrar: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Binds the signalling socket, starts reading it and, when `registrar` is set,
    /// registering.
    pub async fn start(config: &SipConfig) -> Result<Endpoint, EndpointError> {
        config.validate()?;
        let bind = config.bind_addr()?;
        let socket = match config.transport {
            SipTransport::Udp => SipSocket::new(
                UdpSocket::bind(bind)
                    .await
                    .map_err(|e| EndpointError::Bind(bind, e))?,
            ),
            SipTransport::Tcp => SipSocket::tcp(
                TcpTransport::bind(bind)
                    .await
                    .map_err(|e| EndpointError::Bind(bind, e))?,
            ),
            SipTransport::Tls => {
                let tls = TlsSetup::from_config(config)?.expect("transport is tls");
                SipSocket::tcp(
                    TcpTransport::bind_tls(bind, tls)
                        .await
                        .map_err(|e| EndpointError::Bind(bind, e))?,
                )
            }
        };
        let bound = socket
            .local_addr()
            .map_err(|e| EndpointError::Bind(bind, e))?;
        let registrar = config
            .registrar
            .as_ref()
            .map(|r| Registrar::from_config(r, config));
        let ip = match config
            .public_address
            .as_deref()
            .and_then(|p| p.parse().ok())
        {
            Some(ip) => ip,
            None if bound.ip().is_unspecified() => {
                local_ip_towards(registrar.as_ref().map(|r| r.host_port()))
                    .await
                    .unwrap_or(bound.ip())
            }
            None => bound.ip(),
        };
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let shared = Arc::new(Shared {
            socket,
            settings: Settings {
                max_sessions: config.max_sessions as usize,
                allow: config.allow_nets()?,
                codecs: config
                    .codecs
                    .iter()
                    .map(|c| c.to_ascii_uppercase())
                    .collect(),
                rtp_ports: config.rtp_ports,
                learns_address: config.public_address.is_none()
                    && config.transport == SipTransport::Udp,
                keepalive: (config.keepalive > 0 && config.transport == SipTransport::Udp)
                    .then(|| Duration::from_secs(u64::from(config.keepalive))),
                user: config.user.clone().unwrap_or_else(|| "hark".into()),
                credentials: config.password.clone().map(|p| {
                    let user = config.auth_user.clone().or(config.user.clone());
                    (user.unwrap_or_default(), p)
                }),
                outbound_proxy: registrar.as_ref().map(|r| r.host_port()),
                domain: config
                    .domain
                    .clone()
                    .or_else(|| registrar.as_ref().map(|r| r.host_port().0)),
                inbound_guard: config.inbound_credentials().map(|a| {
                    let algorithms: Vec<Algorithm> = a
                        .algorithms
                        .iter()
                        .map(|n| match n.as_str() {
                            "SHA-256" => Algorithm::Sha256,
                            _ => Algorithm::Md5,
                        })
                        .collect();
                    Guard::new(&a.realm, &a.user, a.password).with_algorithms(&algorithms)
                }),
                session_expires: config.session_expires,
            },
            contact_addr: Mutex::new(SocketAddr::new(ip, bound.port())),
            state: Mutex::new(State {
                next_rtp: config.rtp_ports[0],
                ..State::default()
            }),
            stats: Stats::default(),
            incoming: tx,
        });
        if config.allow.is_empty() && registrar.is_none() {
            tracing::warn!("sip: no registrar and an empty allow list: every INVITE gets 403");
        }
        let (stop, stop_rx) = watch::channel(false);
        let reader = tokio::spawn(read_loop(shared.clone()));
        let (reg_tx, reg_rx) = watch::channel(RegistrationState::Off);
        let registrar = registrar
            .map(|r| tokio::spawn(register::run(shared.clone(), r, reg_tx, stop_rx.clone())));
        tracing::info!(addr = %shared.contact_addr(), "sip: endpoint listening");
        Ok(Endpoint {
            shared,
            incoming: rx,
            registration: reg_rx,
            stop,
            reader,
            registrar,
        })
    }

    /// The next incoming call (ringing); `None` after shutdown.
    pub async fn accept(&mut self) -> Option<IncomingCall> {
        self.incoming.recv().await
    }

    /// Calls `target` (a `sip:` URI): INVITE with an SDP offer (through the registrar when one
    /// is configured, else straight to the URI's host), answering a 401/407 with `[sip]`'s
    /// credentials, waiting up to `ring_timeout` for an answer. The returned call is already
    /// answered (ACK sent).
    pub async fn call(
        &self,
        target: &str,
        ring_timeout: Duration,
    ) -> Result<IncomingCall, super::outbound::DialError> {
        super::outbound::dial(&self.shared, target, ring_timeout, false).await
    }

    /// A handle that places calls while the endpoint accepts them.
    pub fn dialer(&self) -> super::outbound::Dialer {
        super::outbound::Dialer {
            shared: self.shared.clone(),
        }
    }

    /// Where peers reach the endpoint (Contact address; behind a NAT, as the registrar sees
    /// it once it has said so).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.contact_addr()
    }

    /// The registration's state, to watch or wait on.
    pub fn registration(&self) -> watch::Receiver<RegistrationState> {
        self.registration.clone()
    }

    /// What was refused so far.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The sizes of the endpoint's tables now (for tests and diagnostics).
    pub fn footprint(&self) -> Footprint {
        let st = self.shared.lock();
        Footprint {
            calls: st.calls.len(),
            cached_responses: st.answered.len(),
            cache_order: st.answered_order.len(),
            transfers: st.transfers.len(),
        }
    }

    /// Hangs up every call, un-registers (Expires: 0, waits up to 5 s for the registrar) and
    /// stops reading the socket.
    pub async fn shutdown(mut self) {
        let ids: Vec<String> = self.shared.lock().calls.keys().cloned().collect();
        for id in ids {
            let _ = self.shared.end_call(&id, HangupReason::Shutdown).await;
        }
        let _ = self.stop.send(true);
        if let Some(task) = self.registrar.take() {
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
        self.reader.abort();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(task) = &self.registrar {
            task.abort();
        }
    }
}

/// The local address the OS would use to reach `target` (no packet is sent).
async fn local_ip_towards(target: Option<(String, u16)>) -> Option<IpAddr> {
    let (host, port) = target?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next()?;
    let probe = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await
    .ok()?;
    probe.connect(addr).await.ok()?;
    Some(probe.local_addr().ok()?.ip())
}

async fn read_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let (n, src) = match shared.socket.recv(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable surfaces here on some systems; keep serving.
                tracing::debug!(error = %e, "sip: receive error");
                continue;
            }
        };
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        let data = &buf[..n];
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keep-alive (RFC 5626 CRLF)
        }
        if n > MAX_MESSAGE {
            shared.malformed(src, "datagram too large");
            continue;
        }
        match Message::parse(data) {
            Ok(msg) => shared.handle(msg, src).await,
            Err(e) => {
                shared.malformed(src, &e.to_string());
                if let Some(req) = Message::parse_lenient(data) {
                    let answerable = matches!(req.start, StartLine::Request { ref method, .. } if method != "ACK")
                        && ["Via", "From", "To", "Call-ID"]
                            .iter()
                            .all(|h| req.header(h).is_some());
                    if answerable {
                        let reason = format!("Bad Request ({e})").replace(['\r', '\n'], " ");
                        let resp = Message::response_to(&req, 400, &reason, None);
                        shared.socket.send(&resp, src).await;
                    }
                }
            }
        }
    }
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn malformed(&self, src: SocketAddr, why: &str) {
        let n = self.stats.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n, 100) {
            tracing::warn!(%src, count = n, "sip: malformed message: {why}");
        }
    }

    /// Sends a response and keeps it for retransmissions of the request.
    async fn respond(&self, req: &Message, resp: Message, to: SocketAddr) {
        let bytes = resp.to_bytes();
        if let Some(b) = req.branch() {
            let mut st = self.lock();
            let now = Instant::now();
            // Bounded: a flood of distinct requests must not grow memory without limit; the
            // oldest responses make room (a legitimate call's are the newest).
            while let Some((key, at)) = st.answered_order.front() {
                let expired = now.duration_since(*at) >= RESPONSE_CACHE;
                if !expired && st.answered_order.len() < MAX_CACHED_RESPONSES {
                    break;
                }
                let (key, at) = (key.clone(), *at);
                if st
                    .answered
                    .get(&key)
                    .is_some_and(|(_, stored)| *stored == at)
                {
                    st.answered.remove(&key);
                }
                st.answered_order.pop_front();
            }
            let key = (b, req.method().to_owned());
            st.answered_order.push_back((key.clone(), now));
            st.answered.insert(key, (bytes.clone(), now));
        }
        self.socket.send_bytes(&bytes, to).await;
    }

    async fn reply(&self, req: &Message, code: u16, reason: &str, to: SocketAddr) {
        let tag = self
            .lock()
            .calls
            .get(req.call_id())
            .map(|c| c.local_tag.clone());
        let resp = Message::response_to(req, code, reason, tag.as_deref().or(Some(&token()[..16])));
        self.respond(req, resp, to).await;
    }

    async fn handle(self: &Arc<Self>, msg: Message, src: SocketAddr) {
        if msg.code().is_some() {
            let resend_ack = if msg.method() == "INVITE" && msg.code().is_some_and(|c| c < 300) {
                super::hold::ack_to_resend(&self.lock(), &msg)
            } else {
                None
            };
            if let Some((ack, to)) = resend_ack {
                // A retransmitted 2xx: our ACK was lost (RFC 3261 §13.2.2.4).
                self.socket.send_bytes(&ack, to).await;
            } else if !self.socket.deliver(msg) {
                tracing::debug!(%src, "sip: stray response dropped");
            }
            return;
        }
        let method = msg.method().to_owned();
        if method != "ACK" {
            let cached = msg.branch().and_then(|b| {
                self.lock()
                    .answered
                    .get(&(b, method.clone()))
                    .map(|(bytes, _)| bytes.clone())
            });
            if let Some(bytes) = cached {
                self.socket.send_bytes(&bytes, src).await;
                return;
            }
        }
        match method.as_str() {
            "INVITE" if msg.to_tag().is_none() => self.new_invite(msg, src).await,
            "INVITE" | "UPDATE" => self.reinvite(msg, src).await,
            "ACK" => self.ack(&msg),
            "BYE" => self.bye(msg, src).await,
            "CANCEL" => self.cancel(msg, src).await,
            "OPTIONS" => {
                let mut resp = Message::response_to(&msg, 200, "OK", Some(&token()[..16]));
                resp.push("Allow", ALLOW)
                    .push("Accept", "application/sdp")
                    .push("Supported", "");
                resp.headers
                    .retain(|(n, v)| n != "Supported" || !v.is_empty());
                self.respond(&msg, resp, src).await;
            }
            "INFO" => self.info(msg, src).await,
            "NOTIFY" => self.notify(msg, src).await,
            _ => {
                let mut resp = Message::response_to(&msg, 405, "Method Not Allowed", None);
                resp.push("Allow", ALLOW);
                self.respond(&msg, resp, src).await;
            }
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.settings.allow.iter().any(|n| n.contains(ip))
            || self.lock().registrar_ip.is_some_and(|r| r == ip)
    }

    /// Where peers reach the endpoint (Contact, Via and SDP address).
    pub(super) fn contact_addr(&self) -> SocketAddr {
        *self.contact_addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `seen` (the `received`/`rport` of a registrar's response, RFC 3581) as the
    /// address peers reach hark at, when it differs and hark may learn it: behind a NAT, the
    /// registrar can only reach hark through the NAT's mapping. Returns the address replaced.
    pub(super) fn learn_address(&self, seen: SocketAddr) -> Option<SocketAddr> {
        if !self.settings.learns_address {
            return None;
        }
        let mut addr = self.contact_addr.lock().unwrap_or_else(|e| e.into_inner());
        (*addr != seen).then(|| std::mem::replace(&mut *addr, seen))
    }

    pub(super) fn set_registrar_ip(&self, ip: IpAddr) {
        self.lock().registrar_ip = Some(ip);
    }

    async fn new_invite(self: &Arc<Self>, msg: Message, src: SocketAddr) {
        if !self.allowed(src.ip()) {
            let n = self.stats.forbidden.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n, 100) {
                tracing::warn!(%src, count = n, "sip: INVITE from a peer not in sip.allow refused (403)");
            }
            // Answered statelessly, not cached: a flood from strangers must not push the
            // responses kept for real calls' retransmissions out of the cache.
            let resp = Message::response_to(&msg, 403, "Forbidden", Some(&token()[..16]));
            self.socket.send(&resp, src).await;
            return;
        }
        if !self.authorized(&msg, src).await {
            return;
        }
        let known = self.lock().calls.get(msg.call_id()).map(|c| {
            let same_branch = msg.branch().as_deref() == Some(c.invite_branch.as_str());
            (same_branch, c.phase, c.local_tag.clone())
        });
        match known {
            // A retransmission whose cached response a flood pushed out of the cache: ringing
            // still (the 2xx, once sent, is retransmitted until the ACK anyway).
            Some((true, phase, tag)) => {
                if phase == Phase::Ringing {
                    let mut ringing = Message::response_to(&msg, 180, "Ringing", Some(&tag));
                    ringing.push("Contact", self.contact());
                    self.socket.send(&ringing, src).await;
                }
                return;
            }
            // Same Call-ID, new branch: a merged or looped request (RFC 3261 §8.2.2.2).
            Some((false, ..)) => {
                self.reply(&msg, 482, "Loop Detected", src).await;
                return;
            }
            None => {}
        }
        let trying = Message::response_to(&msg, 100, "Trying", None);
        self.respond(&msg, trying, src).await;
        if self.lock().calls.len() >= self.settings.max_sessions {
            let n = self.stats.busy.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n, 100) {
                tracing::info!(%src, count = n, "sip: busy, INVITE refused (486)");
            }
            self.reply(&msg, 486, "Busy Here", src).await;
            return;
        }
        let offer = match self.read_offer(&msg) {
            Ok(o) => o,
            Err((code, reason)) => {
                let n = self.stats.bad_offer.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 100) {
                    tracing::warn!(%src, count = n, "sip: INVITE refused ({code} {reason})");
                }
                self.reply(&msg, code, &reason, src).await;
                return;
            }
        };
        let (offer, media) = offer;
        let timer = match super::timer::negotiate(&msg) {
            Ok(t) => t,
            Err(min_se) => {
                let mut resp = Message::response_to(&msg, 422, "Session Interval Too Small", None);
                resp.push("Min-SE", min_se.to_string());
                self.respond(&msg, resp, src).await;
                return;
            }
        };
        let Some((rtp_socket, rtcp_socket)) = self.bind_media().await else {
            tracing::warn!("sip: no free RTP port in sip.rtp_ports; INVITE refused (503)");
            self.reply(&msg, 503, "Service Unavailable", src).await;
            return;
        };
        let rtp_local = SocketAddr::new(
            self.contact_addr().ip(),
            rtp_socket.local_addr().map_or(0, |a| a.port()),
        );
        let local_tag = token()[..16].to_owned();
        let (ev_tx, ev_rx) = mpsc::channel(32);
        let state = CallState {
            invite_branch: msg.branch().unwrap_or_default(),
            source: src,
            local_tag: local_tag.clone(),
            local_party: format!("{};tag={local_tag}", msg.header("To").unwrap_or_default()),
            remote_party: msg.header("From").unwrap_or_default().to_owned(),
            ack_bytes: None,
            remote_target: msg
                .header("Contact")
                .map(|c| uri_of(c).to_owned())
                .unwrap_or_else(|| format!("sip:{src}")),
            route_set: msg.header_values("Record-Route"),
            local_cseq: 1,
            phase: Phase::Ringing,
            offer,
            media: media.clone(),
            rtp_local,
            session_id: u64::from_str_radix(&token()[..12], 16).unwrap_or(1),
            sdp_version: 1,
            ack: Arc::new(Notify::new()),
            events: ev_tx,
            invite: msg.clone(),
        };
        let id = msg.call_id().to_owned();
        {
            let mut st = self.lock();
            st.calls.insert(id.clone(), state);
            st.dialogs.remove(&id);
            super::hold::prune(&mut st);
            if timer.is_some() {
                st.dialogs.entry(id.clone()).or_default().timer.terms = timer;
            }
        }
        let mut ringing = Message::response_to(&msg, 180, "Ringing", Some(&local_tag));
        ringing.push("Contact", self.contact());
        self.respond(&msg, ringing, src).await;
        let call = IncomingCall {
            id: id.clone(),
            from: msg.header("From").unwrap_or_default().to_owned(),
            to: msg.header("To").unwrap_or_default().to_owned(),
            media,
            rtp_socket,
            rtcp_socket,
            events: ev_rx,
            control: Arc::new(CallHandle {
                shared: self.clone(),
                call_id: id.clone(),
            }),
        };
        tracing::info!(call = %id, from = %call.from, codec = call.media.codec, "sip: incoming call");
        if self.incoming.try_send(call).is_err() {
            tracing::warn!(call = %id, "sip: nobody is accepting calls; refused (480)");
            self.lock().calls.remove(&id);
            self.reply(&msg, 480, "Temporarily Unavailable", src).await;
        }
    }

    /// Whether a new INVITE may go on under `[sip] inbound_auth`: true when it is off or the
    /// request carries valid credentials; otherwise the 401 challenge (or 403 for wrong
    /// credentials) is sent here.
    async fn authorized(&self, msg: &Message, src: SocketAddr) -> bool {
        let Some(guard) = &self.settings.inbound_guard else {
            return true;
        };
        let answers: Vec<&str> = msg
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            .map(|(_, v)| v.as_str())
            .collect();
        match guard.check(msg.method(), &answers) {
            Verdict::Accepted => true,
            Verdict::Challenge { stale } => {
                let n = self.stats.unauthorized.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 100) {
                    tracing::info!(%src, count = n, stale, "sip: INVITE challenged (401)");
                }
                let mut resp = Message::response_to(msg, 401, "Unauthorized", Some(&token()[..16]));
                for c in guard.challenges(stale) {
                    resp.push("WWW-Authenticate", c);
                }
                self.respond(msg, resp, src).await;
                false
            }
            Verdict::Refused(why) => {
                let n = self.stats.bad_credentials.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 100) {
                    tracing::warn!(%src, count = n, "sip: INVITE with bad credentials refused (403): {why}");
                }
                let resp = Message::response_to(
                    msg,
                    403,
                    "Forbidden (bad credentials)",
                    Some(&token()[..16]),
                );
                self.respond(msg, resp, src).await;
                false
            }
        }
    }

    /// The SDP offer of an INVITE and the media chosen from it, or the final response to send.
    fn read_offer(&self, msg: &Message) -> Result<(Offer, NegotiatedMedia), (u16, String)> {
        let ct = msg.header("Content-Type").unwrap_or_default();
        if msg.body.is_empty() || !ct.to_ascii_lowercase().starts_with("application/sdp") {
            return Err((488, "Not Acceptable Here (SDP offer required)".into()));
        }
        let offer = Offer::parse(&msg.body).map_err(|e| (400, format!("Bad Request ({e})")))?;
        let media = offer
            .negotiate(&self.settings.codecs)
            .map_err(|e| match e {
                SdpError::Malformed(_) => (400, format!("Bad Request ({e})")),
                _ => (488, format!("Not Acceptable Here ({e})")),
            })?;
        Ok((offer, media))
    }

    /// Binds a call's RTP socket on an even port of `rtp_ports` and its RTCP socket on the
    /// next (RFC 3550 §11: the SDP names only the first), skipping pairs in use.
    pub(super) async fn bind_media(&self) -> Option<(UdpSocket, UdpSocket)> {
        let [lo, hi] = self.settings.rtp_ports;
        // Beside the signalling socket: the advertised address may be a NAT's or
        // `public_address`, not one of this host's.
        let bind_ip = self
            .socket
            .local_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span.div_ceil(2).min(500) {
            let port = {
                let mut st = self.lock();
                let p = st.next_rtp;
                st.next_rtp = if p.saturating_add(2) > hi { lo } else { p + 2 };
                p
            };
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(bind_ip, port)).await else {
                continue;
            };
            if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(bind_ip, next)).await {
                return Some((rtp, rtcp));
            }
        }
        None
    }

    pub(super) fn contact(&self) -> String {
        format!(
            "<sip:{}@{}{}>",
            self.settings.user,
            self.contact_addr(),
            self.socket.uri_param()
        )
    }

    fn ack(&self, msg: &Message) {
        let st = self.lock();
        if let Some(call) = st.calls.get(msg.call_id()).filter(|_| in_dialog(&st, msg)) {
            if call.phase == Phase::Answered || call.phase == Phase::Confirmed {
                call.ack.notify_one();
            }
        }
    }

    /// Sends 200 OK with the SDP answer until the ACK, for a call still ringing.
    pub(super) async fn answer(self: &Arc<Self>, id: &str) -> Result<(), CallError> {
        let (ok, to, ack) = {
            let mut st = self.lock();
            let timer = super::timer::terms(&st, id);
            let call = st
                .calls
                .get_mut(id)
                .ok_or_else(|| CallError::Failed("the call is over".into()))?;
            if call.phase != Phase::Ringing {
                return Err(CallError::Failed("the call was already answered".into()));
            }
            call.phase = Phase::Answered;
            let sdp = sdp::answer(
                &call.offer,
                &call.media,
                call.rtp_local,
                call.session_id,
                call.sdp_version,
            );
            let mut ok = Message::response_to(&call.invite, 200, "OK", Some(&call.local_tag));
            ok.push("Contact", self.contact()).push("Allow", ALLOW);
            super::timer::decorate(timer, &mut ok);
            ok.set_body("application/sdp", sdp.into_bytes());
            (ok, call.source, call.ack.clone())
        };
        let invite = self.lock().calls.get(id).map(|c| c.invite.clone());
        if let Some(invite) = invite {
            self.respond(&invite, ok.clone(), to).await;
        }
        if self.retransmit_until_ack(&ok, to, &ack).await {
            if let Some(call) = self.lock().calls.get_mut(id) {
                call.phase = Phase::Confirmed;
            }
            if super::timer::terms(&self.lock(), id).is_some() {
                super::timer::spawn(self.clone(), id.to_owned());
            }
            tracing::info!(call = %id, "sip: call answered");
            Ok(())
        } else {
            tracing::warn!(call = %id, "sip: no ACK for 200 OK within 32 s; hanging up");
            let _ = self.end_call(id, HangupReason::NoAck).await;
            Err(CallError::Failed(
                "the caller never acknowledged the answer".into(),
            ))
        }
    }

    /// Resends a 2xx at T1, 2·T1, ... T2 until `ack` fires (RFC 3261 §13.3.1.4); false after
    /// 64·T1 without ACK.
    async fn retransmit_until_ack(&self, ok: &Message, to: SocketAddr, ack: &Notify) -> bool {
        let bytes = ok.to_bytes();
        let deadline = tokio::time::Instant::now() + T1 * 64;
        let mut gap = T1;
        loop {
            let wake = (tokio::time::Instant::now() + gap).min(deadline);
            if tokio::time::timeout_at(wake, ack.notified()).await.is_ok() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.socket.send_bytes(&bytes, to).await;
            gap = (gap * 2).min(T2);
        }
    }

    /// A re-INVITE, or an UPDATE (RFC 3311), from the far end: a new offer for the call's media
    /// (hold, resume, another codec or address) and a session refresh. An UPDATE may carry no
    /// offer and then only refreshes the session; it is answered once, with no ACK to wait for.
    async fn reinvite(self: &Arc<Self>, msg: Message, src: SocketAddr) {
        let update = msg.method() == "UPDATE";
        let known = in_dialog(&self.lock(), &msg);
        if !known {
            self.reply(&msg, 481, "Call/Transaction Does Not Exist", src)
                .await;
            return;
        }
        if super::hold::reinvite_in_flight(&self.lock(), msg.call_id()) {
            // Glare: hark's own re-INVITE is under way (RFC 3261 §14.2).
            self.reply(&msg, 491, "Request Pending", src).await;
            return;
        }
        let timer = match super::timer::negotiate(&msg) {
            Ok(t) => t,
            Err(min_se) => {
                let mut resp = Message::response_to(&msg, 422, "Session Interval Too Small", None);
                resp.push("Min-SE", min_se.to_string());
                self.respond(&msg, resp, src).await;
                return;
            }
        };
        if update && msg.body.is_empty() {
            let ok = {
                let mut st = self.lock();
                let Some(call) = st.calls.get_mut(msg.call_id()) else {
                    return;
                };
                if let Some(c) = msg.header("Contact") {
                    call.remote_target = uri_of(c).to_owned();
                }
                let mut ok = Message::response_to(&msg, 200, "OK", Some(&call.local_tag));
                ok.push("Contact", self.contact()).push("Allow", ALLOW);
                super::timer::refreshed(&mut st, msg.call_id(), timer);
                super::timer::decorate(super::timer::terms(&st, msg.call_id()), &mut ok);
                ok
            };
            self.respond(&msg, ok, src).await;
            return;
        }
        let (offer, mut media) = match self.read_offer(&msg) {
            Ok(o) => o,
            Err((code, reason)) => {
                self.reply(&msg, code, &reason, src).await;
                return;
            }
        };
        let prepared = {
            let mut st = self.lock();
            if super::hold::held(&st, msg.call_id()) {
                super::hold::while_held(&mut media);
            }
            let Some(call) = st.calls.get_mut(msg.call_id()) else {
                return;
            };
            let was_hold = call.media.direction.is_hold();
            let changed = call.media != media;
            call.sdp_version += 1;
            call.offer = offer;
            call.media = media.clone();
            call.source = src;
            if let Some(c) = msg.header("Contact") {
                call.remote_target = uri_of(c).to_owned();
            }
            let sdp = sdp::answer(
                &call.offer,
                &call.media,
                call.rtp_local,
                call.session_id,
                call.sdp_version,
            );
            let mut ok = Message::response_to(&msg, 200, "OK", Some(&call.local_tag));
            ok.push("Contact", self.contact()).push("Allow", ALLOW);
            let (ack, events_tx) = (call.ack.clone(), call.events.clone());
            // A re-INVITE refreshes the session (RFC 4028 §10); its terms may change.
            super::timer::refreshed(&mut st, msg.call_id(), timer);
            super::timer::decorate(super::timer::terms(&st, msg.call_id()), &mut ok);
            ok.set_body("application/sdp", sdp.into_bytes());
            let mut events = Vec::new();
            match (was_hold, media.direction.is_hold()) {
                (false, true) => events.push(CallEvent::Hold),
                (true, false) => events.push(CallEvent::Resume),
                _ => {}
            }
            if changed {
                events.push(CallEvent::MediaChanged(media));
            }
            (ok, ack, events_tx, events)
        };
        let (ok, ack, tx, events) = prepared;
        for e in events {
            let _ = tx.try_send(e);
        }
        self.respond(&msg, ok.clone(), src).await;
        if !update {
            let me = self.clone();
            tokio::spawn(async move {
                me.retransmit_until_ack(&ok, src, &ack).await;
            });
        }
    }

    async fn bye(&self, msg: Message, src: SocketAddr) {
        let call = {
            let mut st = self.lock();
            if in_dialog(&st, &msg) {
                leg_ended(&st, msg.call_id());
                st.calls.remove(msg.call_id())
            } else {
                None
            }
        };
        match call {
            Some(call) => {
                self.reply_with_tag(&msg, 200, "OK", &call.local_tag, src)
                    .await;
                tracing::info!(call = %msg.call_id(), "sip: caller hung up");
                let _ = call.events.try_send(CallEvent::Hangup {
                    reason: HangupReason::Remote,
                });
            }
            None => {
                self.reply(&msg, 481, "Call/Transaction Does Not Exist", src)
                    .await
            }
        }
    }

    async fn reply_with_tag(
        &self,
        req: &Message,
        code: u16,
        reason: &str,
        tag: &str,
        to: SocketAddr,
    ) {
        let resp = Message::response_to(req, code, reason, Some(tag));
        self.respond(req, resp, to).await;
    }

    async fn cancel(&self, msg: Message, src: SocketAddr) {
        let call = {
            let mut st = self.lock();
            let matches = st.calls.get(msg.call_id()).is_some_and(|c| {
                Some(&c.invite_branch) == msg.branch().as_ref() && c.phase == Phase::Ringing
            });
            if matches {
                st.calls.remove(msg.call_id())
            } else {
                None
            }
        };
        let Some(call) = call else {
            self.reply(&msg, 481, "Call/Transaction Does Not Exist", src)
                .await;
            return;
        };
        self.reply_with_tag(&msg, 200, "OK", &call.local_tag, src)
            .await;
        let terminated = Message::response_to(
            &call.invite,
            487,
            "Request Terminated",
            Some(&call.local_tag),
        );
        self.respond(&call.invite, terminated, call.source).await;
        tracing::info!(call = %msg.call_id(), "sip: caller cancelled before answer");
        let _ = call.events.try_send(CallEvent::Hangup {
            reason: HangupReason::Cancelled,
        });
    }

    async fn info(&self, msg: Message, src: SocketAddr) {
        let found = {
            let st = self.lock();
            st.calls
                .get(msg.call_id())
                .filter(|_| in_dialog(&st, &msg))
                .map(|c| (c.events.clone(), c.local_tag.clone()))
        };
        let Some((events, tag)) = found else {
            self.reply(&msg, 481, "Call/Transaction Does Not Exist", src)
                .await;
            return;
        };
        self.reply_with_tag(&msg, 200, "OK", &tag, src).await;
        let _ = events.try_send(CallEvent::Info {
            content_type: msg.header("Content-Type").unwrap_or_default().to_owned(),
            body: msg.body,
        });
    }

    /// Ends a call from hark's side: 603 while ringing, BYE once answered.
    pub(super) async fn hangup(&self, id: &str, reason: &str) -> Result<(), CallError> {
        tracing::info!(call = %id, reason, "sip: hanging up");
        self.end_call(id, HangupReason::Local).await
    }

    pub(super) async fn end_call(&self, id: &str, why: HangupReason) -> Result<(), CallError> {
        let removed = {
            let mut st = self.lock();
            leg_ended(&st, id);
            st.calls.remove(id)
        };
        let Some(mut call) = removed else {
            return Err(CallError::Failed("the call is over".into()));
        };
        let _ = call.events.try_send(CallEvent::Hangup { reason: why });
        if call.phase == Phase::Ringing {
            let decline = Message::response_to(&call.invite, 603, "Decline", Some(&call.local_tag));
            self.respond(&call.invite, decline, call.source).await;
            return Ok(());
        }
        call.local_cseq += 1;
        let (bye, dest) = self.in_dialog_request(&call, "BYE");
        let dest = match dest {
            Some(d) => d,
            None => resolve(&self.socket, &dest_uri(&call))
                .await
                .unwrap_or(call.source),
        };
        match self.socket.transact(&bye, dest, T1 * 64).await {
            Ok(resp) if resp.code().is_some_and(|c| c < 300 || c == 481 || c == 408) => Ok(()),
            Ok(resp) => Err(CallError::Failed(format!(
                "BYE answered {}",
                resp.code().unwrap_or_default()
            ))),
            Err(e) => Err(CallError::Failed(e.to_string())),
        }
    }

    /// A NOTIFY of the implicit subscription a REFER created (RFC 3515 §2.4.4): answered 200
    /// and fed to the transfer's progress when it matches a transfer under way (481 if not,
    /// 489 for another event package).
    async fn notify(&self, msg: Message, src: SocketAddr) {
        let slot = {
            let st = self.lock();
            st.transfers
                .get(msg.call_id())
                .filter(|s| msg.to_tag().as_deref() == Some(s.local_tag.as_str()))
                .map(|s| (s.progress.clone(), s.local_tag.clone()))
        };
        let Some((progress, tag)) = slot else {
            self.reply(&msg, 481, "Subscription Does Not Exist", src)
                .await;
            return;
        };
        let event = msg.header("Event").unwrap_or_default();
        let package = event.split(';').next().unwrap_or_default().trim();
        if !package.eq_ignore_ascii_case("refer") {
            self.reply_with_tag(&msg, 489, "Bad Event", &tag, src).await;
            return;
        }
        self.reply_with_tag(&msg, 200, "OK", &tag, src).await;
        let state = msg.header("Subscription-State");
        let mut result = Ok(());
        progress.send_modify(|p| result = p.notify(state, &msg.body));
        match result {
            Ok(()) => tracing::info!(
                call = %msg.call_id(),
                status = progress.borrow().last_code,
                subscription = state.unwrap_or_default(),
                "sip: transfer progress"
            ),
            Err(e) => self.malformed(src, &format!("NOTIFY for a transfer: {e}")),
        }
    }

    /// Blind transfer of answered call `id` to `target` (RFC 3515): REFER in the dialog, then
    /// the NOTIFYs until a final result or `limit`. Success hangs up our leg (the caller is
    /// with the target now); failure leaves the call up and says why in words.
    pub(super) async fn transfer(
        &self,
        id: &str,
        target: &str,
        limit: Duration,
    ) -> Result<(), CallError> {
        let deadline = tokio::time::Instant::now() + limit;
        let (refer, literal, first_hop, source, uri, mut progress) = {
            let mut st = self.lock();
            if st.transfers.contains_key(id) {
                return Err(CallError::Failed(
                    "a transfer of this call is already under way".into(),
                ));
            }
            let call = st.confirmed_call(id)?;
            let uri = refer::target_uri(
                target,
                self.settings.domain.as_deref(),
                uri_of(&call.remote_party),
            )
            .map_err(|e| CallError::Failed(e.to_string()))?;
            call.local_cseq += 1;
            let (mut req, literal) = self.in_dialog_request(call, "REFER");
            req.push("Refer-To", format!("<{uri}>"))
                .push("Referred-By", format!("<{}>", uri_of(&call.local_party)))
                .push("Allow", ALLOW);
            let (tx, rx) = watch::channel(ReferProgress::default());
            let slot = TransferSlot {
                local_tag: call.local_tag.clone(),
                progress: tx,
            };
            let hop = dest_uri(call);
            let source = call.source;
            st.transfers.insert(id.to_owned(), slot);
            (req, literal, hop, source, uri, rx)
        };
        let _guard = TransferGuard {
            shared: self,
            id: id.to_owned(),
        };
        let dest = match literal {
            Some(d) => d,
            None => resolve(&self.socket, &first_hop).await.unwrap_or(source),
        };
        tracing::info!(call = %id, target = %uri, "sip: transferring the caller (REFER)");
        let answered =
            tokio::time::timeout_at(deadline, self.socket.transact(&refer, dest, T1 * 64)).await;
        let refer_code = match answered {
            Ok(Ok(resp)) => resp.code(),
            Ok(Err(e)) => {
                tracing::warn!(call = %id, error = %e, "sip: REFER got no answer");
                None
            }
            Err(_) => None,
        };
        if let (Some(code), Some(slot)) = (refer_code, self.lock().transfers.get(id)) {
            slot.progress.send_modify(|p| p.refer_answered(code));
        }
        // Wait for the final NOTIFY; after our leg ended, only a short grace for it.
        let mut wait_until = deadline;
        let result = loop {
            let now = progress.borrow_and_update().clone();
            if let Some(outcome) = now.outcome() {
                break outcome;
            }
            if refer_code.is_none() && !now.accepted {
                break Err(refer::TransferFailure::NoAnswer);
            }
            if now.call_ended {
                wait_until = wait_until.min(tokio::time::Instant::now() + refer::NOTIFY_GRACE);
            }
            match tokio::time::timeout_at(wait_until, progress.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => break progress.borrow().on_deadline(),
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(call = %id, target = %uri, "sip: transfer succeeded; leaving the call");
                // The caller may have sent BYE already ("the call is over"): nothing to do.
                let _ = self.end_call(id, HangupReason::Transferred).await;
                Ok(())
            }
            Err(why) => {
                tracing::info!(call = %id, target = %uri, reason = %why, "sip: transfer failed; the call stays up");
                Err(CallError::Failed(why.to_string()))
            }
        }
    }

    /// A request inside the dialog of `call` (RFC 3261 §12.2.1.1), and where to send it when
    /// that is a literal address.
    pub(super) fn in_dialog_request(
        &self,
        call: &CallState,
        method: &str,
    ) -> (Message, Option<SocketAddr>) {
        let mut req = Message::request(method, &call.remote_target);
        req.push(
            "Via",
            format!(
                "SIP/2.0/UDP {};branch={};rport",
                self.contact_addr(),
                branch()
            ),
        )
        .push("Max-Forwards", "70");
        for r in &call.route_set {
            req.push("Route", r.clone());
        }
        req.push("From", call.local_party.clone())
            .push("To", call.remote_party.clone())
            .push("Call-ID", call.invite.call_id())
            .push("CSeq", format!("{} {method}", call.local_cseq))
            .push("Contact", self.contact());
        let literal = uri_host_port(&dest_uri(call))
            .and_then(|(h, p)| h.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, p)));
        (req, literal)
    }
}

/// Tells a transfer waiting on call `id` that our leg ended.
fn leg_ended(st: &State, id: &str) {
    if let Some(slot) = st.transfers.get(id) {
        slot.progress.send_modify(ReferProgress::leg_ended);
    }
}

/// Removes a transfer's slot when its waiter finishes (or is cancelled).
struct TransferGuard<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().transfers.remove(&self.id);
    }
}

/// Whether `msg` belongs to a call's dialog: its Call-ID, and hark's tag in `To` (RFC 3261
/// §12.2.2).
fn in_dialog(st: &State, msg: &Message) -> bool {
    st.calls
        .get(msg.call_id())
        .is_some_and(|c| msg.to_tag().as_deref() == Some(c.local_tag.as_str()))
}

/// The URI a request in the dialog goes to first: the first route, or the remote target.
pub(super) fn dest_uri(call: &CallState) -> String {
    call.route_set
        .first()
        .map(|r| uri_of(r).to_owned())
        .unwrap_or_else(|| call.remote_target.clone())
}

/// Resolves a `sip:` URI's host and port (the transport's default port when it names none),
/// telling `socket` the name for checking a TLS certificate.
pub(super) async fn resolve(socket: &SipSocket, uri: &str) -> Option<SocketAddr> {
    let (host, port) = uri_host_port_or(uri, socket.default_port())?;
    let found = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next()?;
    socket.name(found, &host);
    Some(found)
}
