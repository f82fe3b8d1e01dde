//! One call's media over a UDP socket: RTP in through the jitter buffer to 16 kHz frames for
//! the conversation engine, and the engine's 16 kHz voice out as 20 ms G.711 packets on a
//! steady clock, with DTMF both ways.
//!
//! The shape mirrors [`crate::transport::local`]: received audio lands in a lock-free ring
//! ([`MediaStreams::inbound`]) at [`PIPELINE_RATE`] with a [`Wake`] (and a [`Notify`] for async
//! consumers); the engine's voice goes into [`RtpSink`], a non-blocking
//! [`crate::session::AudioSink`]. One tokio task per call owns every piece of state (no lock
//! is ever held, nothing allocates per packet): it receives datagrams, and on each 20 ms tick
//! plays one frame out of the jitter buffer and sends one packet.
//!
//! Symmetric RTP: the first valid packet from the expected peer (same host as the SDP address
//! by default: NATs rewrite ports) latches the remote; from then on packets go to that source
//! and packets from anywhere else are rejected and counted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use super::cn::{self, CN_PAYLOAD_TYPE};
use super::dtmf::{DtmfDigit, DtmfReceiver, DtmfSchedule, ScheduledEvent};
use super::g711::G711;
use super::inband::InbandDetector;
use super::jitter::{Arrival, JitterBuffer, JitterConfig, Payload, MAX_PACKET};
use super::rtcp::{self, ReportBlock, SenderInfo};
use super::rtp::{RtpHeader, RtpPacket};
use crate::audio::ring::{self, Wake};
use crate::audio::Resampler;
use crate::transport::local::PIPELINE_RATE;
use crate::transport::sip::sdp::NegotiatedMedia;
use crate::transport::sip::worth_logging;

/// G.711's clock and sample rate.
pub const G711_RATE: u32 = 8000;
/// Packet time: 20 ms, the RFC 3551 default every PBX expects.
pub const PTIME: Duration = Duration::from_millis(20);
/// Samples per packet at 8 kHz.
const FRAME_8K: usize = 160;
/// Samples per frame at the pipeline's rate.
const FRAME_16K: usize = 320;
/// Inbound ring: 2 s at 16 kHz, as the kiosk's microphone ring.
const INBOUND_RING: usize = PIPELINE_RATE as usize * 2;
/// Outbound ring: 1 s of queued voice, as the kiosk's speaker ring.
const OUTBOUND_RING: usize = PIPELINE_RATE as usize;
/// A key press sent as RFC 4733: its length, pause after it, and level (-dBm0).
const DTMF_MS: u32 = 100;
const DTMF_GAP: Duration = Duration::from_millis(100);
const DTMF_VOLUME: u8 = 10;
/// Digits that may wait to be sent.
const DTMF_QUEUE: usize = 64;
/// Interval between RTCP reports (RFC 3550's minimum is 5 s).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// Which sources may latch the remote address (symmetric RTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latch {
    /// The SDP address's host, any port (a NAT rewrote the port): the default.
    #[default]
    SameHost,
    /// Any source (the peer is behind a NAT that rewrote its address too). Riskier: the first
    /// packet from anyone wins.
    AnySource,
    /// Only the exact SDP address; packets go there and nowhere else.
    Exact,
}

/// What signalling negotiated for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// The peer's RTP address from its SDP.
    pub remote: SocketAddr,
    /// The negotiated codec (its static payload type is used both ways).
    pub codec: G711,
    /// The negotiated telephone-event payload type (commonly 101), if any.
    pub telephone_event: Option<u8>,
    /// The jitter buffer's sizing.
    pub jitter: JitterConfig,
    /// Who may latch the remote address.
    pub latch: Latch,
    /// Look for DTMF tones in the received audio as well.
    pub inband_dtmf: bool,
}

impl MediaConfig {
    /// The usual call: `codec` to `remote`, telephone-event on 101, default jitter buffer,
    /// latching on the same host, in-band detection on.
    pub fn new(remote: SocketAddr, codec: G711) -> Self {
        Self {
            remote,
            codec,
            telephone_event: Some(101),
            jitter: JitterConfig::default(),
            latch: Latch::default(),
            inband_dtmf: true,
        }
    }
}

/// Why a media session could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The socket could not be inspected.
    #[error("RTP socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A digit to send is not one of `0-9*#A-D`.
    #[error("not a DTMF digit: {0:?}")]
    BadDigit(char),
    /// The peer did not negotiate telephone-event, so digits cannot be sent as RFC 4733.
    #[error("the peer did not negotiate telephone-event")]
    NoTelephoneEvent,
    /// More digits are waiting than the queue holds.
    #[error("too many DTMF digits queued")]
    DtmfQueueFull,
    /// The session's task has ended.
    #[error("the media session has ended")]
    Closed,
    /// A re-INVITE settled on a codec the media layer does not speak.
    #[error("codec {0} (payload type {1}) is not G.711")]
    UnsupportedCodec(&'static str, u8),
}

/// How a received digit arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Tones in the audio.
    Inband,
}

/// What the session tells the call's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A digit was received.
    Dtmf {
        /// The digit.
        digit: DtmfDigit,
        /// How it came.
        source: DtmfSource,
        /// Its length when known (RFC 4733).
        duration_ms: Option<u32>,
    },
    /// The remote address was latched (symmetric RTP) to this source.
    Latched(SocketAddr),
}

/// The call's counters, readable at any time (metrics, logs at hangup).
#[derive(Debug, Default)]
pub struct MediaStats {
    /// RTP packets accepted (any payload type the call negotiated).
    pub received: AtomicU64,
    /// Packets never received (RFC 3550 expected minus received).
    pub lost: AtomicU64,
    /// Packets that came after their playout time.
    pub late: AtomicU64,
    /// Packets received twice.
    pub duplicates: AtomicU64,
    /// Datagrams that were not valid RTP or carried a payload type not negotiated.
    pub malformed: AtomicU64,
    /// Valid packets from a source other than the latched peer.
    pub rejected: AtomicU64,
    /// Frames concealed by the jitter buffer.
    pub concealed: AtomicU64,
    /// RTP packets sent (audio and events).
    pub sent: AtomicU64,
    /// Sends that failed at the socket.
    pub send_errors: AtomicU64,
    /// Ticks the clock skipped because the task ran late.
    pub late_ticks: AtomicU64,
    /// Inbound samples dropped because the engine fell 2 s behind.
    pub inbound_dropped: AtomicU64,
    /// Outbound samples dropped because more than 1 s of voice was queued.
    pub outbound_dropped: AtomicU64,
    /// Digits received (all sources).
    pub dtmf_received: AtomicU64,
    /// Digits sent as RFC 4733.
    pub dtmf_sent: AtomicU64,
    /// RFC 3550 interarrival jitter in microseconds.
    pub jitter_us: AtomicU32,
    /// RTCP compound packets sent.
    pub rtcp_sent: AtomicU64,
    /// Valid RTCP compound packets received.
    pub rtcp_received: AtomicU64,
    /// RTCP datagrams refused as malformed.
    pub rtcp_malformed: AtomicU64,
    /// Of our packets, how many the peer reports lost in all (its last report block on us).
    pub peer_lost: AtomicU64,
    /// The peer's interarrival jitter of our stream, in microseconds (same report).
    pub peer_jitter_us: AtomicU32,
    /// The last round trip measured from the peer's reports (RFC 3550 §6.4.1), in
    /// microseconds; 0 until one echoed an SR of ours.
    pub round_trip_us: AtomicU32,
}

impl MediaStats {
    /// The jitter estimate in milliseconds.
    pub fn jitter_ms(&self) -> f32 {
        self.jitter_us.load(Ordering::Relaxed) as f32 / 1000.0
    }

    /// The last round trip the peer's reports gave, if any did.
    pub fn round_trip(&self) -> Option<Duration> {
        match self.round_trip_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        }
    }
}

/// The engine's ends of a running session.
pub struct MediaStreams {
    /// Received audio: mono `f32` at [`PIPELINE_RATE`], 20 ms at a time.
    pub inbound: rtrb::Consumer<f32>,
    /// Unparked when inbound audio arrives (register the consuming thread).
    pub inbound_wake: Arc<Wake>,
    /// Notified when inbound audio arrives (for an async consumer).
    pub inbound_notify: Arc<Notify>,
    /// Where the agent's voice goes.
    pub outbound: RtpSink,
    /// Digits and latching news; a full channel drops (and the stats still count digits).
    pub events: mpsc::Receiver<MediaEvent>,
}

/// The send side as the engine sees it: a non-blocking [`crate::session::AudioSink`] taking
/// mono samples at [`PIPELINE_RATE`].
pub struct RtpSink {
    ring: rtrb::Producer<f32>,
    stats: Arc<MediaStats>,
}

impl RtpSink {
    /// Queues samples; what does not fit (more than 1 s queued) is dropped and counted.
    pub fn push(&mut self, samples: &[f32]) {
        let lost = ring::push_slice(&mut self.ring, samples);
        if lost > 0 {
            self.stats
                .outbound_dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
    }
}

impl crate::session::AudioSink for RtpSink {
    fn write(&mut self, frame: &[f32]) {
        self.push(frame);
    }
}

enum Command {
    Dtmf(Vec<DtmfDigit>),
    Retarget {
        remote: SocketAddr,
        codec: G711,
        telephone_event: Option<u8>,
    },
}

/// A running call's media. Dropping it stops the task.
pub struct RtpSession {
    commands: mpsc::Sender<Command>,
    stats: Arc<MediaStats>,
    local: SocketAddr,
    telephone_event: AtomicBool,
    task: tokio::task::JoinHandle<()>,
}

impl RtpSession {
    /// Starts the media of a call on `socket` (bound by signalling to the port its SDP
    /// announced). Must be called inside a tokio runtime.
    pub fn start(
        socket: UdpSocket,
        config: MediaConfig,
    ) -> Result<(Self, MediaStreams), MediaError> {
        Self::start_with_rtcp(socket, None, config)
    }

    /// As [`Self::start`], with RTCP on `rtcp` (conventionally the RTP port + 1): a compound
    /// report every 5 s to the peer's RTP port + 1 (or wherever its RTCP comes from), and the
    /// peer's reports counted.
    pub fn start_with_rtcp(
        socket: UdpSocket,
        rtcp: Option<UdpSocket>,
        config: MediaConfig,
    ) -> Result<(Self, MediaStreams), MediaError> {
        let local = socket.local_addr()?;
        let telephone_event = AtomicBool::new(config.telephone_event.is_some());
        let stats = Arc::new(MediaStats::default());
        let (in_tx, in_rx) = rtrb::RingBuffer::new(INBOUND_RING);
        let (out_tx, out_rx) = rtrb::RingBuffer::new(OUTBOUND_RING);
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let wake = Arc::new(Wake::default());
        let notify = Arc::new(Notify::new());
        let task = Task::new(
            socket,
            rtcp,
            config,
            stats.clone(),
            in_tx,
            out_rx,
            ev_tx,
            wake.clone(),
            notify.clone(),
        );
        let task = tokio::spawn(task.run(cmd_rx));
        Ok((
            Self {
                commands: cmd_tx,
                stats: stats.clone(),
                local,
                telephone_event,
                task,
            },
            MediaStreams {
                inbound: in_rx,
                inbound_wake: wake,
                inbound_notify: notify,
                outbound: RtpSink {
                    ring: out_tx,
                    stats,
                },
                events: ev_rx,
            },
        ))
    }

    /// Queues `digits` (`0-9*#A-D`) to be sent as RFC 4733 events, 100 ms each with 100 ms
    /// between them; audio is paused while they play.
    pub async fn send_dtmf(&self, digits: &str) -> Result<(), MediaError> {
        if !self.telephone_event.load(Ordering::Relaxed) {
            return Err(MediaError::NoTelephoneEvent);
        }
        let digits = digits
            .chars()
            .map(|c| DtmfDigit::from_char(c).ok_or(MediaError::BadDigit(c)))
            .collect::<Result<Vec<_>, _>>()?;
        self.commands
            .send(Command::Dtmf(digits))
            .await
            .map_err(|_| MediaError::Closed)
    }

    /// Follows a re-INVITE that moved the media (RFC 3264 §8.3): packets go to the new
    /// address (latched afresh, never again to the old source), the voice is encoded with the
    /// new G.711 law and telephone-event uses the new payload type. The engine's rings and the
    /// RTP clock carry on untouched; a new SSRC from the peer resets the jitter buffer (it does
    /// on any SSRC change).
    pub async fn retarget(&self, media: &NegotiatedMedia) -> Result<(), MediaError> {
        let codec = G711::from_payload_type(media.payload_type).ok_or(
            MediaError::UnsupportedCodec(media.codec, media.payload_type),
        )?;
        self.commands
            .send(Command::Retarget {
                remote: media.remote,
                codec,
                telephone_event: media.telephone_event,
            })
            .await
            .map_err(|_| MediaError::Closed)?;
        self.telephone_event
            .store(media.telephone_event.is_some(), Ordering::Relaxed);
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<MediaStats> {
        &self.stats
    }

    /// The local RTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the task is still running (it ends only on a socket failure or when stopped).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for RtpSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

/// Receives on `socket` if there is one; otherwise never completes.
async fn recv_optional(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

struct ActiveDtmf {
    schedule: std::iter::Peekable<DtmfSchedule>,
    started: Instant,
    timestamp: u32,
}

/// Everything one call's task owns.
struct Task {
    socket: UdpSocket,
    rtcp: Option<UdpSocket>,
    rtcp_peer: Option<SocketAddr>,
    /// Middle 32 bits of the last SR's NTP time, and when it came (for DLSR).
    last_sr: Option<(u32, Instant)>,
    /// Expected and received at the previous report (for the fraction lost).
    prior: (u64, u64),
    sent_packets: u32,
    sent_octets: u32,
    cname: String,
    cfg: MediaConfig,
    stats: Arc<MediaStats>,
    events: mpsc::Sender<MediaEvent>,
    wake: Arc<Wake>,
    notify: Arc<Notify>,
    epoch: Instant,
    // Receive side.
    peer: Option<SocketAddr>,
    /// The source latched before a re-INVITE moved the media: never latched again.
    retired: Option<SocketAddr>,
    jitter: JitterBuffer,
    dtmf_rx: DtmfReceiver,
    inband: Option<InbandDetector>,
    /// When the last telephone-event packet came (in 8 kHz units since `epoch`).
    last_event: u64,
    decoded: Box<[f32]>,
    frame8: Box<[f32]>,
    up: Resampler,
    up_out: Vec<f32>,
    inbound: rtrb::Producer<f32>,
    // Send side.
    outbound: rtrb::Consumer<f32>,
    frame16: Box<[f32]>,
    down: Resampler,
    down_out: Vec<f32>,
    codes: Box<[u8]>,
    packet: Box<[u8]>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    ticks: u64,
    dtmf_queue: VecDeque<DtmfDigit>,
    dtmf: Option<ActiveDtmf>,
    dtmf_next: Instant,
}

impl Task {
    #[allow(clippy::too_many_arguments)]
    fn new(
        socket: UdpSocket,
        rtcp: Option<UdpSocket>,
        cfg: MediaConfig,
        stats: Arc<MediaStats>,
        inbound: rtrb::Producer<f32>,
        outbound: rtrb::Consumer<f32>,
        events: mpsc::Sender<MediaEvent>,
        wake: Arc<Wake>,
        notify: Arc<Notify>,
    ) -> Self {
        let now = Instant::now();
        let ssrc = random_u32();
        Self {
            cname: format!(
                "hark-{ssrc:08x}@{}",
                socket
                    .local_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default()
            ),
            socket,
            rtcp,
            rtcp_peer: None,
            last_sr: None,
            prior: (0, 0),
            sent_packets: 0,
            sent_octets: 0,
            jitter: JitterBuffer::new(cfg.jitter),
            inband: cfg.inband_dtmf.then(InbandDetector::default),
            cfg,
            stats,
            events,
            wake,
            notify,
            epoch: now,
            peer: None,
            retired: None,
            dtmf_rx: DtmfReceiver::new(G711_RATE),
            last_event: 0,
            decoded: vec![0.0; MAX_PACKET].into_boxed_slice(),
            frame8: vec![0.0; FRAME_8K].into_boxed_slice(),
            up: Resampler::new(G711_RATE, PIPELINE_RATE),
            up_out: Vec::with_capacity(FRAME_16K * 4),
            inbound,
            outbound,
            frame16: vec![0.0; FRAME_16K].into_boxed_slice(),
            down: Resampler::new(PIPELINE_RATE, G711_RATE),
            down_out: Vec::with_capacity(FRAME_8K * 4),
            codes: vec![0u8; FRAME_8K].into_boxed_slice(),
            packet: vec![0u8; 1500].into_boxed_slice(),
            ssrc,
            seq: random_u32() as u16,
            ts: random_u32(),
            ticks: 0,
            dtmf_queue: VecDeque::with_capacity(DTMF_QUEUE),
            dtmf: None,
            dtmf_next: now,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut clock = tokio::time::interval_at(self.epoch + PTIME, PTIME);
        clock.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut buf = [0u8; 2048];
        let mut rtcp_buf = [0u8; 1500];
        let mut reports = tokio::time::interval_at(self.epoch + RTCP_INTERVAL, RTCP_INTERVAL);
        reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let dtmf_timer = tokio::time::sleep_until(self.epoch);
        tokio::pin!(dtmf_timer);
        tracing::debug!(remote = %self.cfg.remote, codec = ?self.cfg.codec, "RTP session started");
        loop {
            let dtmf_pending = self.dtmf.is_some() || !self.dtmf_queue.is_empty();
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from),
                    Err(e) => {
                        // ICMP port unreachable and the like surface here on Linux; keep going.
                        tracing::debug!(error = %e, "RTP receive error");
                    }
                },
                r = recv_optional(self.rtcp.as_ref(), &mut rtcp_buf) => match r {
                    Ok((n, from)) => self.on_rtcp(&rtcp_buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "RTCP receive error"),
                },
                _ = reports.tick(), if self.rtcp.is_some() => self.send_report().await,
                at = clock.tick() => self.on_tick(at).await,
                () = &mut dtmf_timer, if dtmf_pending => {
                    self.on_dtmf_timer().await;
                    dtmf_timer.as_mut().reset(self.dtmf_next);
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Dtmf(digits)) => {
                        for d in digits {
                            if self.dtmf_queue.len() >= DTMF_QUEUE {
                                tracing::warn!("DTMF queue full; digit dropped");
                                break;
                            }
                            self.dtmf_queue.push_back(d);
                        }
                        if self.dtmf.is_none() {
                            self.dtmf_next = self.dtmf_next.max(Instant::now());
                            dtmf_timer.as_mut().reset(self.dtmf_next);
                        }
                    }
                    Some(Command::Retarget { remote, codec, telephone_event }) => {
                        self.retarget(remote, codec, telephone_event);
                    }
                    None => break,
                },
            }
        }
        tracing::debug!("RTP session stopped");
    }

    fn arrival(&self) -> u64 {
        (self.epoch.elapsed().as_micros() * u128::from(G711_RATE) / 1_000_000) as u64
    }

    fn emit(&self, e: MediaEvent) {
        if let MediaEvent::Dtmf { digit, source, .. } = e {
            self.stats.dtmf_received.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%digit, ?source, "DTMF received");
        }
        if self.events.try_send(e).is_err() {
            tracing::debug!("media event dropped: the channel is full or closed");
        }
    }

    fn malformed(&self, from: SocketAddr, why: &dyn std::fmt::Display) {
        let n = self.stats.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n, 1000) {
            tracing::warn!(%from, count = n, "RTP datagram refused: {why}");
        }
    }

    /// Applies a re-INVITE's media: see [`RtpSession::retarget`].
    fn retarget(&mut self, remote: SocketAddr, codec: G711, telephone_event: Option<u8>) {
        if remote != self.cfg.remote {
            tracing::info!(from = %self.cfg.remote, to = %remote, "RTP peer moved by re-INVITE");
            self.retired = self.peer.take().filter(|p| *p != remote);
            self.cfg.remote = remote;
            self.rtcp_peer = None;
        }
        if codec != self.cfg.codec {
            tracing::info!(from = ?self.cfg.codec, to = ?codec, "RTP codec changed by re-INVITE");
            self.cfg.codec = codec;
        }
        if telephone_event != self.cfg.telephone_event {
            self.cfg.telephone_event = telephone_event;
            self.dtmf_rx = DtmfReceiver::new(G711_RATE);
            if telephone_event.is_none() {
                self.dtmf_queue.clear();
            }
        }
    }

    fn may_latch(&self, from: SocketAddr) -> bool {
        if self.retired == Some(from) {
            return false;
        }
        match self.cfg.latch {
            Latch::SameHost => from.ip() == self.cfg.remote.ip(),
            Latch::AnySource => true,
            Latch::Exact => from == self.cfg.remote,
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        if let Some(peer) = self.peer {
            if peer != from {
                let n = self.stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 1000) {
                    tracing::warn!(%from, %peer, count = n, "RTP from a source other than the latched peer ignored");
                }
                return;
            }
        }
        // RTCP multiplexed on the RTP port (RFC 5761): packet types 192–223; not ours to play.
        if data.len() >= 2 && (192..=223).contains(&data[1]) && data[0] >> 6 == 2 {
            return;
        }
        let pkt = match RtpPacket::parse(data) {
            Ok(p) => p,
            Err(e) => return self.malformed(from, &e),
        };
        let pt = pkt.header.payload_type;
        let is_audio = pt == self.cfg.codec.payload_type();
        let is_event = Some(pt) == self.cfg.telephone_event;
        if !(is_audio || is_event || pt == CN_PAYLOAD_TYPE) {
            return self.malformed(from, &format_args!("payload type {pt} not negotiated"));
        }
        if is_audio && pkt.payload.len() > MAX_PACKET {
            return self.malformed(
                from,
                &format_args!("{} audio bytes, more than 60 ms", pkt.payload.len()),
            );
        }
        if self.peer.is_none() {
            if !self.may_latch(from) {
                let n = self.stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 1000) {
                    tracing::warn!(%from, expected = %self.cfg.remote, "RTP from an unexpected source ignored");
                }
                return;
            }
            self.peer = Some(from);
            tracing::info!(%from, sdp = %self.cfg.remote, "RTP peer latched");
            self.emit(MediaEvent::Latched(from));
        }
        let h = pkt.header;
        let arrival = Arrival {
            sequence: h.sequence,
            timestamp: h.timestamp,
            marker: h.marker,
            ssrc: h.ssrc,
            arrival: self.arrival(),
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let before = self.jitter.stats().ssrc_changes;
        if is_audio {
            let n = pkt.payload.len();
            self.cfg.codec.decode(pkt.payload, &mut self.decoded[..n]);
            self.jitter
                .insert(arrival, Payload::Audio(&self.decoded[..n]));
        } else if is_event {
            self.jitter.insert(arrival, Payload::NoAudio);
            self.last_event = arrival.arrival;
        } else {
            match cn::parse_level(pkt.payload) {
                Ok(level) => {
                    self.jitter.insert(arrival, Payload::ComfortNoise(level));
                }
                Err(e) => return self.malformed(from, &e),
            }
        }
        if self.jitter.stats().ssrc_changes != before {
            self.dtmf_rx = DtmfReceiver::new(G711_RATE);
        }
        if is_event {
            match self.dtmf_rx.on_packet(h.timestamp, pkt.payload) {
                Ok(done) => {
                    for r in done.into_iter().flatten() {
                        self.emit(MediaEvent::Dtmf {
                            digit: r.digit,
                            source: DtmfSource::Rfc4733,
                            duration_ms: Some(r.duration_ms),
                        });
                    }
                }
                Err(e) => self.malformed(from, &e),
            }
        }
    }

    async fn on_tick(&mut self, at: Instant) {
        // The RTP clock follows the wall clock: skipped ticks advance it too.
        let due = (at.duration_since(self.epoch).as_millis() / PTIME.as_millis()) as u64;
        if due > self.ticks + 1 {
            self.stats
                .late_ticks
                .fetch_add(due - self.ticks - 1, Ordering::Relaxed);
        }
        let elapsed = due.saturating_sub(self.ticks).max(1);
        self.ticks = due.max(self.ticks + 1);
        self.play_one();
        self.send_one(elapsed).await;
        self.publish();
    }

    /// Plays one frame from the jitter buffer to the engine.
    fn play_one(&mut self) {
        self.jitter.pop(&mut self.frame8);
        if let Some(det) = &mut self.inband {
            let mut found = None;
            det.push(&self.frame8, |d| found = Some(d.digit));
            if let Some(digit) = found {
                self.emit(MediaEvent::Dtmf {
                    digit,
                    source: DtmfSource::Inband,
                    duration_ms: None,
                });
            }
        }
        // An event with no news for a second is over even if its end packets were lost.
        let quiet = self.arrival().saturating_sub(self.last_event) > u64::from(G711_RATE);
        if let Some(r) = quiet.then(|| self.dtmf_rx.finish()).flatten() {
            self.emit(MediaEvent::Dtmf {
                digit: r.digit,
                source: DtmfSource::Rfc4733,
                duration_ms: Some(r.duration_ms),
            });
        }
        self.up_out.clear();
        self.up.process(&self.frame8, &mut self.up_out);
        let lost = ring::push_slice(&mut self.inbound, &self.up_out);
        if lost > 0 {
            self.stats
                .inbound_dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
        self.wake.wake();
        self.notify.notify_one();
    }

    /// Sends one 20 ms packet of the agent's voice (or silence), unless DTMF is playing.
    async fn send_one(&mut self, elapsed_frames: u64) {
        let available = self.outbound.slots().min(FRAME_16K);
        self.frame16.fill(0.0);
        if !ring::pop_exact(&mut self.outbound, &mut self.frame16[..available]) {
            self.frame16[..available].fill(0.0);
        }
        self.down.process(&self.frame16, &mut self.down_out);
        let ts = self.ts;
        self.ts = self
            .ts
            .wrapping_add((elapsed_frames as u32).wrapping_mul(FRAME_8K as u32));
        if self.dtmf.is_some() {
            // The event carries the audio's timestamps meanwhile; the voice is dropped.
            self.take_frame8();
            return;
        }
        let codec = self.cfg.codec;
        if self.down_out.len() >= FRAME_8K {
            codec.encode(&self.down_out[..FRAME_8K], &mut self.codes);
            self.take_frame8();
        } else {
            // Only at start-up: the resampler's delay has not filled a frame yet.
            self.codes.fill(codec.silence());
        }
        let header = RtpHeader {
            marker: false,
            payload_type: codec.payload_type(),
            sequence: self.seq,
            timestamp: ts,
            ssrc: self.ssrc,
        };
        let n = header
            .write(&self.codes, &mut self.packet)
            .expect("a 1500-byte buffer holds a 172-byte packet");
        self.send(n).await;
    }

    fn take_frame8(&mut self) {
        let n = self.down_out.len().min(FRAME_8K);
        self.down_out.copy_within(n.., 0);
        self.down_out.truncate(self.down_out.len() - n);
    }

    async fn send(&mut self, len: usize) {
        self.seq = self.seq.wrapping_add(1);
        let to = self.peer.unwrap_or(self.cfg.remote);
        match self.socket.send_to(&self.packet[..len], to).await {
            Ok(_) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.sent_packets = self.sent_packets.wrapping_add(1);
                self.sent_octets = self
                    .sent_octets
                    .wrapping_add(len.saturating_sub(super::rtp::HEADER_LEN) as u32);
            }
            Err(e) => {
                let n = self.stats.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 1000) {
                    tracing::warn!(error = %e, %to, count = n, "RTP send failed");
                }
            }
        }
    }

    /// Sends the DTMF packets that are due and sets [`Self::dtmf_next`].
    async fn on_dtmf_timer(&mut self) {
        let Some(pt) = self.cfg.telephone_event else {
            self.dtmf_queue.clear();
            return;
        };
        let now = Instant::now();
        if self.dtmf.is_none() {
            let Some(digit) = self.dtmf_queue.pop_front() else {
                return;
            };
            self.dtmf = Some(ActiveDtmf {
                schedule: DtmfSchedule::new(digit, DTMF_MS, DTMF_VOLUME, G711_RATE).peekable(),
                started: now,
                timestamp: self.ts,
            });
            self.stats.dtmf_sent.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            let Some(active) = self.dtmf.as_mut() else {
                return;
            };
            let due = |e: &ScheduledEvent| active.started + Duration::from_millis(e.at_ms.into());
            let Some(next) = active.schedule.peek().copied() else {
                self.dtmf = None;
                self.dtmf_next = now + DTMF_GAP;
                return;
            };
            if due(&next) > now {
                self.dtmf_next = due(&next);
                return;
            }
            active.schedule.next();
            let header = RtpHeader {
                marker: next.marker,
                payload_type: pt,
                sequence: self.seq,
                timestamp: active.timestamp,
                ssrc: self.ssrc,
            };
            let n = header
                .write(&next.event.to_bytes(), &mut self.packet)
                .expect("a 1500-byte buffer holds a 16-byte packet");
            self.send(n).await;
        }
    }

    fn on_rtcp(&mut self, data: &[u8], from: SocketAddr) {
        // Only the latched RTP peer's host may report (symmetric RTCP: latch its source).
        let host = self.peer.unwrap_or(self.cfg.remote).ip();
        if from.ip() != host {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match rtcp::parse_compound(data) {
            Ok(packets) => {
                self.stats.rtcp_received.fetch_add(1, Ordering::Relaxed);
                self.rtcp_peer.get_or_insert(from);
                for p in &packets {
                    if let Some(info) = p.sender_info() {
                        self.last_sr = Some(((info.ntp >> 16) as u32, Instant::now()));
                    }
                    for block in p.report_blocks().filter(|b| b.ssrc == self.ssrc) {
                        self.on_report_of_ours(&block);
                    }
                    if p.packet_type == rtcp::BYE {
                        tracing::info!(%from, "RTCP BYE from the peer");
                    }
                }
            }
            Err(e) => {
                let n = self.stats.rtcp_malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 1000) {
                    tracing::warn!(%from, count = n, "RTCP datagram refused: {e}");
                }
            }
        }
    }

    /// Keeps what the peer says of our stream: loss, jitter and the round trip.
    fn on_report_of_ours(&self, block: &ReportBlock) {
        let st = &self.stats;
        st.peer_lost
            .store(u64::from(block.cumulative_lost), Ordering::Relaxed);
        // In RTP timestamp units: G.711's 8 kHz clock.
        let jitter_us = u64::from(block.jitter) * 1_000_000 / u64::from(G711_RATE);
        st.peer_jitter_us
            .store(jitter_us.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
        if let Some(rtt) = block.round_trip(rtcp::ntp_now()) {
            let us = rtt.as_micros().clamp(1, u128::from(u32::MAX)) as u32;
            st.round_trip_us.store(us, Ordering::Relaxed);
        }
    }

    /// Sends an SR (or RR before anything was sent) with a block about the received stream.
    async fn send_report(&mut self) {
        let Some(sock) = &self.rtcp else { return };
        let block = self.jitter.source().map(|s| {
            let (expected, received) = (s.expected, s.received);
            let (de, dr) = (
                expected - self.prior.0.min(expected),
                received.saturating_sub(self.prior.1),
            );
            self.prior = (expected, received);
            let fraction = if de == 0 || dr >= de {
                0
            } else {
                ((de - dr) * 256 / de) as u8
            };
            let (last_sr, delay) = match self.last_sr {
                Some((lsr, at)) => (lsr, (at.elapsed().as_secs_f64() * 65_536.0) as u32),
                None => (0, 0),
            };
            ReportBlock {
                ssrc: s.ssrc,
                fraction_lost: fraction,
                cumulative_lost: expected.saturating_sub(received).min(0x7f_ffff) as u32,
                highest_seq: s.highest_seq as u32,
                jitter: s.jitter,
                last_sr,
                delay_since_last_sr: delay,
            }
        });
        let sender = (self.sent_packets > 0).then(|| SenderInfo {
            ntp: rtcp::ntp_now(),
            rtp_timestamp: self.ts,
            packets: self.sent_packets,
            octets: self.sent_octets,
        });
        let mut out = [0u8; 512];
        let Ok(n) = rtcp::write_report(self.ssrc, sender, block, &self.cname, &mut out) else {
            return;
        };
        let to = self.rtcp_peer.unwrap_or_else(|| {
            let rtp = self.peer.unwrap_or(self.cfg.remote);
            SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
        });
        match sock.send_to(&out[..n], to).await {
            Ok(_) => {
                self.stats.rtcp_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, %to, "RTCP send failed"),
        }
    }

    /// Copies the jitter buffer's counters into the shared stats.
    fn publish(&self) {
        let j = self.jitter.stats();
        let s = &self.stats;
        s.lost.store(j.lost, Ordering::Relaxed);
        s.late.store(j.late, Ordering::Relaxed);
        s.duplicates.store(j.duplicates, Ordering::Relaxed);
        s.concealed.store(j.concealed, Ordering::Relaxed);
        s.jitter_us
            .store((j.jitter_ms * 1000.0) as u32, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_logging_thins_out() {
        let logged = (1..=5000).filter(|&n| worth_logging(n, 1000)).count();
        assert_eq!(logged, 10 + 5);
    }
}
