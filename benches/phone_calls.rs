//! Whole phone calls at once, measured for real: each call is a caller [`RtpSession`] on
//! loopback sending real speech (looped, G.711 µ-law) in real time into hark's side, which is
//! what `src/service/phone.rs` runs per call (an `RtpSession`, and the live front end started
//! by [`call_front_end`]: RNNoise, Silero VAD, Smart Turn at each pause), with hark sending a
//! looped reply back on its 20 ms clock. No providers: the front end's events are counted.
//!
//! Measured over a steady window after a warm-up: process CPU (getrusage) per second of wall
//! time and per call, and the same split by thread (front ends, hark's RTP runtime, the
//! callers); the lateness of every packet hark sends against its 20 ms schedule, seen by the
//! kernel's receive stamp (SO_TIMESTAMPNS: on loopback, the moment hark's `sendto` ran, i.e.
//! hark's own clock) and by the caller task's receive time; skipped send ticks; concealed
//! frames and inbound ring overflows on hark's side; how far each front end fell behind real
//! time; resident memory. Then the bars of issue 6 get a one-line verdict each.
//!
//! The caller's packets come from its `RtpSession` socket; hark's packets to that address are
//! taken by a "tap" socket bound to the same port (SO_REUSEPORT) and connected to hark's
//! socket, which the kernel prefers for that source: the tap timestamps them without any relay.
//!
//! `cargo bench --bench phone_calls` runs 1 call, 20 calls, then a ramp to find where the bar
//! breaks (`HARK_CALLS="1,20,24"` sets the list instead, `HARK_CALLS_SECS` the window,
//! `HARK_CALLS_RAMP=0` skips the ramp). Under `cargo test` it runs one short call as a smoke
//! test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hark::audio::{read_wav, Audio, Resampler};
use hark::config::ListenConfig;
use hark::listen::denoise::{self, Denoiser};
use hark::listen::live::{Listener, Live};
use hark::listen::models::ModelStore;
use hark::listen::vad::{self, VadEventType};
use hark::listen::{ListenEvent, Models};
use hark::service::phone::call_front_end;
use hark::transport::sip::media::{MediaConfig, MediaStats, RtpPacket, RtpSession, G711};
use tokio::sync::watch;

/// One packet's time and RTP clock.
type Stamp = (u32, i64, i64);

/// CPU seconds this process has used (user + system), from getrusage.
fn process_cpu() -> f64 {
    hark::bench::cpu_time().as_secs_f64()
}

/// CPU seconds the calling thread has used.
fn thread_cpu() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds of every thread of this process, by thread id, with its name.
fn threads_cpu() -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let p = entry.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        // schedstat's first field: nanoseconds on a CPU (user and system together).
        let ns = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            out.insert(tid, (name.trim().to_string(), ns as f64 / 1e9));
        }
    }
    out
}

/// The thread groups reported: the front ends, hark's RTP runtime, the callers, the rest.
fn group(name: &str) -> &'static str {
    if name.starts_with("hark-listen") {
        "front end"
    } else if name.starts_with("hark-rtp") {
        "hark RTP"
    } else if name.starts_with("caller") {
        "caller"
    } else {
        "other"
    }
}

/// CPU seconds per thread group between two snapshots.
fn cpu_by_group(
    a: &HashMap<u32, (String, f64)>,
    b: &HashMap<u32, (String, f64)>,
) -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    for (tid, (name, t)) in b {
        let before = a.get(tid).map_or(0.0, |x| x.1);
        *out.entry(group(name)).or_insert(0.0) += t - before;
    }
    out
}

/// CPU seconds the whole machine has been busy (every core, every process), from /proc/stat:
/// with this process's own time subtracted, how much the rest of the machine competed.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: f64 = ticks.iter().take(8).sum::<f64>()
        - ticks.get(3).unwrap_or(&0.0)
        - ticks.get(4).unwrap_or(&0.0);
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Resident memory now (VmRSS), in MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn realtime_ns() -> i64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// A loopback UDP socket with SO_REUSEPORT, bound to `port` (0: any), non-blocking.
fn reuseport_socket(port: u16) -> std::io::Result<std::net::UdpSocket> {
    // SAFETY: plain socket calls on a descriptor we own; it moves into the std socket.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let socket = std::net::UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            &one as *const _ as *const libc::c_void,
            size,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let r = libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(socket)
    }
}

/// The tap: hark's packets to the caller's port, with the kernel's receive time.
fn tap_socket(port: u16, hark: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = reuseport_socket(port)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a descriptor `s` owns.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.connect(hark)?;
    tokio::net::UdpSocket::from_std(s)
}

/// Receives one datagram into `buf`: its length and the kernel's receive time (ns, realtime).
fn recv_stamped(fd: i32, buf: &mut [u8]) -> std::io::Result<(usize, i64)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr points at buffers that outlive the call; cmsg walking stays within
    // `control` as the kernel filled it.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stamp = 0;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, stamp))
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Stop,
}

/// What the front end of one call produced, and how far it fell behind real time.
#[derive(Default)]
struct FrontCounters {
    frames: AtomicU64,
    speech_ends: AtomicU64,
    turns: AtomicU64,
    /// The largest (lag − smallest lag) seen while measuring, in µs.
    lag_us: AtomicU64,
    /// Wall time of the pushes that ran Smart Turn (its frame, VAD window and inference), µs.
    turn_us: AtomicU64,
    turn_max_us: AtomicU64,
    measuring: AtomicBool,
}

/// The front end's listener: counts, and tracks lag (10 ms of audio per frame vs the clock).
struct Counting {
    c: Arc<FrontCounters>,
    start: Option<Instant>,
    frames: u64,
    best: i64,
    /// When the frame being pushed was handed over (the push runs right after).
    pushed: Instant,
}

impl Listener for Counting {
    fn audio(&mut self, _frame: &[f32]) {
        let now = Instant::now();
        self.pushed = now;
        let start = *self.start.get_or_insert(now);
        self.frames += 1;
        self.c.frames.fetch_add(1, Relaxed);
        let lag = now.duration_since(start).as_micros() as i64 - self.frames as i64 * 10_000;
        if self.c.measuring.load(Relaxed) {
            self.best = self.best.min(lag);
            self.c.lag_us.fetch_max((lag - self.best) as u64, Relaxed);
        } else {
            self.best = lag;
        }
    }

    fn event(&mut self, event: &ListenEvent) {
        match event {
            ListenEvent::Vad(v) if v.event_type == VadEventType::EndOfSpeech => {
                self.c.speech_ends.fetch_add(1, Relaxed);
            }
            ListenEvent::Turn(_) => {
                self.c.turns.fetch_add(1, Relaxed);
                let us = self.pushed.elapsed().as_micros() as u64;
                if self.c.measuring.load(Relaxed) {
                    self.c.turn_us.fetch_add(us, Relaxed);
                    self.c.turn_max_us.fetch_max(us, Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// One call in progress.
struct Call {
    hark_rtp: RtpSession,
    caller_rtp: RtpSession,
    live: Live,
    front: Arc<FrontCounters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tap: tokio::task::JoinHandle<(Vec<Stamp>, u64)>,
}

/// Counters of a media session that matter here, as numbers.
fn media_counts(s: &MediaStats) -> [u64; 6] {
    [
        s.concealed.load(Relaxed),
        s.inbound_dropped.load(Relaxed),
        s.late_ticks.load(Relaxed),
        s.lost.load(Relaxed),
        s.sent.load(Relaxed),
        s.received.load(Relaxed),
    ]
}

/// Pushes `audio` (16 kHz) looped into `sink` in real time, 20 ms per tick, from `offset`.
async fn speak(
    mut sink: hark::transport::sip::media::RtpSink,
    audio: Arc<Vec<f32>>,
    offset: usize,
    prefill: usize,
) {
    let mut at = offset % audio.len();
    let mut next = |n: usize, sink: &mut hark::transport::sip::media::RtpSink| {
        let mut left = n;
        while left > 0 {
            let take = left.min(audio.len() - at);
            sink.push(&audio[at..at + take]);
            at = (at + take) % audio.len();
            left -= take;
        }
    };
    next(prefill, &mut sink);
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    loop {
        clock.tick().await;
        next(320, &mut sink);
    }
}

/// Takes hark's packets for one call: (RTP timestamp, kernel ns, task ns) while measuring,
/// plus how many carried sound (not G.711 silence).
async fn tap(
    socket: tokio::net::UdpSocket,
    mut phase: watch::Receiver<Phase>,
    capacity: usize,
) -> (Vec<Stamp>, u64) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let mut stamps = Vec::with_capacity(capacity);
    let mut buf = [0u8; 2048];
    let mut voiced = 0;
    loop {
        tokio::select! {
            r = socket.readable() => {
                if r.is_err() { break; }
                let got = socket.try_io(tokio::io::Interest::READABLE, || recv_stamped(fd, &mut buf));
                let Ok((n, kernel)) = got else { continue };
                let user = realtime_ns();
                if *phase.borrow() != Phase::Measure { continue; }
                if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                    if p.payload.iter().any(|&b| b != 0xff && b != 0x7f) {
                        voiced += 1;
                    }
                    if stamps.len() < stamps.capacity() {
                        stamps.push((p.header.timestamp, kernel, user));
                    }
                }
            }
            r = phase.changed() => {
                if r.is_err() || *phase.borrow() == Phase::Stop { break; }
            }
        }
    }
    (stamps, voiced)
}

/// Each packet's lateness against its 20 ms schedule (its RTP timestamp), in ms: `which`
/// picks the kernel (1) or task (2) time. The schedule's origin is the best packet's.
fn lateness(stamps: &[Stamp], which: usize) -> Vec<f64> {
    let Some(first) = stamps.first() else {
        return Vec::new();
    };
    let offsets: Vec<i64> = stamps
        .iter()
        .map(|s| {
            let t = if which == 1 { s.1 } else { s.2 };
            let sched = s.0.wrapping_sub(first.0) as i32 as i64 * 1_000_000 / 8;
            t - sched
        })
        .collect();
    let best = offsets.iter().copied().min().unwrap_or(0);
    offsets.iter().map(|o| (o - best) as f64 / 1e6).collect()
}

/// Packets hark's clock skipped: gaps in the RTP timestamps beyond one packet.
fn skipped(stamps: &[Stamp]) -> u64 {
    let mut ts: Vec<u32> = stamps.iter().map(|s| s.0).collect();
    ts.sort_by_key(|t| t.wrapping_sub(stamps[0].0));
    ts.windows(2)
        .map(|w| (w[1].wrapping_sub(w[0]) / 160).saturating_sub(1) as u64)
        .sum()
}

fn max_p99(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let p99 = v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)];
    (v[v.len() - 1], p99)
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Outcome {
    calls: usize,
    wall: f64,
    process: f64,
    /// CPU seconds other processes on the machine used meanwhile (they compete for the cores).
    others: f64,
    groups: HashMap<&'static str, f64>,
    sender: (f64, f64),
    caller: (f64, f64),
    packets: usize,
    voiced: u64,
    skipped: u64,
    late_ticks: u64,
    concealed: u64,
    overflow: u64,
    lost: u64,
    frames: u64,
    speech_ends: u64,
    turns: u64,
    lag_ms: f64,
    /// Smart Turn pushes measured live: mean and max wall time, ms.
    turn_ms: (f64, f64),
    rss: f64,
    peak_rss: f64,
    load_s: f64,
}

impl Outcome {
    /// Per call, % of one core.
    fn pct(&self, cpu: f64) -> f64 {
        cpu / self.wall / self.calls as f64 * 100.0
    }

    fn group(&self, g: &str) -> f64 {
        self.groups.get(g).copied().unwrap_or(0.0)
    }

    /// hark's own cost: its RTP runtime and its front ends (not the callers, not the bench).
    fn hark(&self) -> f64 {
        self.group("front end") + self.group("hark RTP")
    }

    /// The concurrency bar: no packet later than 20 ms, and every front end kept up.
    fn meets_bar(&self) -> bool {
        self.sender.0 <= 20.0 && self.overflow == 0 && self.skipped == 0 && self.packets > 0
    }
}

struct Bench {
    listen: ListenConfig,
    store: ModelStore,
    speech: Arc<Vec<f32>>,
    reply: Arc<Vec<f32>>,
    hark_rt: tokio::runtime::Runtime,
    caller_rt: tokio::runtime::Runtime,
    /// Models of finished calls, for the next (as the phone endpoint's pool).
    pool: Vec<Models>,
}

impl Bench {
    fn run(&mut self, calls: usize, warmup: Duration, window: Duration) -> Outcome {
        // Models first, as an endpoint with a warm pool would have them (each load is timed).
        let t = Instant::now();
        while self.pool.len() < calls {
            self.pool
                .push(Models::load(&self.listen, &self.store).expect("models load"));
        }
        let load_s = t.elapsed().as_secs_f64();
        let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
        let packets_cap = (window.as_secs_f64() * 50.0 * 1.5) as usize + 100;
        let mut live_calls = Vec::with_capacity(calls);
        for i in 0..calls {
            let caller_socket = reuseport_socket(0).expect("caller socket");
            let caller_addr = caller_socket.local_addr().unwrap();
            let hark_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            hark_socket.set_nonblocking(true).unwrap();
            let hark_addr = hark_socket.local_addr().unwrap();

            // Caller side: its own runtime.
            let (caller_rtp, tap_task, caller_task) = {
                let _rt = self.caller_rt.enter();
                let tap_socket = tap_socket(caller_addr.port(), hark_addr).expect("tap socket");
                let socket = tokio::net::UdpSocket::from_std(caller_socket).unwrap();
                let (rtp, streams) =
                    RtpSession::start(socket, MediaConfig::new(hark_addr, G711::Pcmu)).unwrap();
                let tap_task = tokio::spawn(tap(tap_socket, phase_rx.clone(), packets_cap));
                // Calls start at different points of the recording, as real callers would.
                let offset = i * 7919 * 16;
                // The caller hears nothing (the tap takes hark's packets): its inbound ring
                // is dropped, its session's pushes into it are refused (a counter).
                let task = tokio::spawn(speak(streams.outbound, self.speech.clone(), offset, 0));
                (rtp, tap_task, task)
            };

            // hark's side: what `serve` in src/service/phone.rs builds for a call.
            let _rt = self.hark_rt.enter();
            let socket = tokio::net::UdpSocket::from_std(hark_socket).unwrap();
            let media = MediaConfig {
                telephone_event: Some(101),
                ..MediaConfig::new(caller_addr, G711::Pcmu)
            };
            let (hark_rtp, streams) = RtpSession::start(socket, media).unwrap();
            let front = Arc::new(FrontCounters::default());
            let live = call_front_end(
                &self.listen,
                self.pool.pop().unwrap(),
                streams.inbound,
                streams.inbound_wake,
                Arc::new(AtomicBool::new(true)),
                Box::new(Counting {
                    c: front.clone(),
                    start: None,
                    frames: 0,
                    best: 0,
                    pushed: Instant::now(),
                }),
            )
            .expect("front end starts");
            let reply = tokio::spawn(speak(
                streams.outbound,
                self.reply.clone(),
                i * 3331 * 16,
                3200,
            ));
            live_calls.push(Call {
                hark_rtp,
                caller_rtp,
                live,
                front,
                tasks: vec![reply, caller_task],
                tap: tap_task,
            });
        }

        std::thread::sleep(warmup);
        let snap = |calls: &[Call]| -> Vec<[u64; 6]> {
            calls
                .iter()
                .map(|c| media_counts(c.hark_rtp.stats()))
                .collect()
        };
        let front = |calls: &[Call]| -> [u64; 3] {
            let mut s = [0; 3];
            for c in calls {
                s[0] += c.front.frames.load(Relaxed);
                s[1] += c.front.speech_ends.load(Relaxed);
                s[2] += c.front.turns.load(Relaxed);
            }
            s
        };
        for c in &live_calls {
            c.front.measuring.store(true, Relaxed);
        }
        let _ = phase_tx.send(Phase::Measure);
        let (m0, f0, th0, cpu0, busy0, t0) = (
            snap(&live_calls),
            front(&live_calls),
            threads_cpu(),
            process_cpu(),
            machine_busy(),
            Instant::now(),
        );
        let mut rss: f64 = 0.0;
        while t0.elapsed() < window {
            std::thread::sleep(Duration::from_millis(250).min(window.saturating_sub(t0.elapsed())));
            rss = rss.max(rss_mb());
        }
        let (cpu1, busy1, th1, wall) = (
            process_cpu(),
            machine_busy(),
            threads_cpu(),
            t0.elapsed().as_secs_f64(),
        );
        let (m1, f1) = (snap(&live_calls), front(&live_calls));
        let _ = phase_tx.send(Phase::Stop);

        let mut delta = [0u64; 6];
        for (a, b) in m0.iter().zip(&m1) {
            for k in 0..6 {
                delta[k] += b[k] - a[k];
            }
        }
        let mut stamps_sender = Vec::new();
        let mut stamps_caller = Vec::new();
        let (mut packets, mut voiced, mut skip, mut lag) = (0, 0, 0, 0u64);
        let (mut turn_sum, mut turn_max) = (0u64, 0u64);
        for c in live_calls {
            lag = lag.max(c.front.lag_us.load(Relaxed));
            turn_sum += c.front.turn_us.load(Relaxed);
            turn_max = turn_max.max(c.front.turn_max_us.load(Relaxed));
            let (s, v) = self.caller_rt.block_on(c.tap).expect("tap task");
            packets += s.len();
            voiced += v;
            if !s.is_empty() {
                skip += skipped(&s);
            }
            stamps_sender.extend(lateness(&s, 1));
            stamps_caller.extend(lateness(&s, 2));
            for t in c.tasks {
                t.abort();
            }
            drop(c.caller_rtp);
            drop(c.hark_rtp);
            if let Ok(Some(models)) = c.live.stop() {
                self.pool.push(models);
            }
        }
        Outcome {
            calls,
            wall,
            process: cpu1 - cpu0,
            others: ((busy1 - busy0) - (cpu1 - cpu0)).max(0.0),
            groups: cpu_by_group(&th0, &th1),
            sender: max_p99(stamps_sender),
            caller: max_p99(stamps_caller),
            packets,
            voiced,
            skipped: skip,
            concealed: delta[0],
            overflow: delta[1],
            late_ticks: delta[2],
            lost: delta[3],
            frames: f1[0] - f0[0],
            speech_ends: f1[1] - f0[1],
            turns: f1[2] - f0[2],
            lag_ms: lag as f64 / 1000.0,
            turn_ms: (
                turn_sum as f64 / 1000.0 / (f1[2] - f0[2]).max(1) as f64,
                turn_max as f64 / 1000.0,
            ),
            rss,
            peak_rss: hark::bench::peak_rss_kb().unwrap_or(0) as f64 / 1024.0,
            load_s,
        }
    }
}

/// What each stage of one call's front end costs, measured on this thread over the speech
/// (% of one core per second of audio), the way the live front end runs them.
fn stages(
    listen: &ListenConfig,
    models: &mut Models,
    speech: &[f32],
    turns_per_s: f64,
) -> Vec<(String, f64)> {
    let secs = speech.len() as f64 / 16_000.0;
    let mut out = Vec::new();
    if listen.denoise.enabled {
        let mut up = Resampler::new(16_000, denoise::SAMPLE_RATE);
        let mut rnnoise = Denoiser::new();
        let mut down = Resampler::new(denoise::SAMPLE_RATE, 16_000);
        let (mut at48, mut clean, mut at16) = (
            Vec::with_capacity(4096),
            Vec::with_capacity(4096),
            Vec::with_capacity(4096),
        );
        let t = thread_cpu();
        for chunk in speech.chunks(160) {
            at48.clear();
            up.process(chunk, &mut at48);
            clean.clear();
            rnnoise.process(&at48, &mut clean);
            at16.clear();
            down.process(&clean, &mut at16);
        }
        out.push((
            "RNNoise (16->48 kHz, denoise, 48->16 kHz)".into(),
            (thread_cpu() - t) / secs * 100.0,
        ));
    }
    let vad_model = models.vad_mut();
    vad_model.reset();
    let t = thread_cpu();
    for w in speech.chunks_exact(vad::WINDOW) {
        vad_model.probability(w).expect("silero runs");
    }
    out.push((
        "Silero VAD (every 32 ms)".into(),
        (thread_cpu() - t) / secs * 100.0,
    ));
    if let Some(turn) = models.turn_mut() {
        let n = 10;
        let t = thread_cpu();
        for i in 0..n {
            let end = (speech.len() * (i % 5 + 4) / 8).max(16_000);
            turn.predict(&speech[..end]).expect("smart turn runs");
        }
        let per = (thread_cpu() - t) / n as f64;
        out.push((
            format!(
                "Smart Turn ({:.1} ms CPU per inference x {turns_per_s:.2}/s)",
                per * 1e3
            ),
            per * turns_per_s * 100.0,
        ));
    }
    out
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn print_header() {
    println!(
        "{:>5} | {:>7} {:>6} {:>6} {:>6} {:>6} | {:>13} {:>13} | {:>4} {:>4} {:>4} {:>4} | {:>6} | {:>9} | {:>5} {:>5} | {:>6}",
        "calls", "process", "hark", "FE", "RTP", "caller", "late sender", "late caller", "skip", "conc", "ovfl", "lost", "FElag", "ends/turns", "RSS", "peak", "others"
    );
    println!(
        "{:>5} | {:>7} {:>6} {:>6} {:>6} {:>6} | {:>13} {:>13} | {:>4} {:>4} {:>4} {:>4} | {:>6} | {:>9} | {:>5} {:>5} | {:>6}",
        "", "/call", "/call", "/call", "/call", "/call", "max/p99 ms", "max/p99 ms", "pkts", "frm", "smp", "pkts", "max ms", "", "MB", "MB", "% core"
    );
}

fn print_row(o: &Outcome) {
    println!(
        "{:>5} | {:>7.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} | {:>6.1}/{:>6.1} {:>6.1}/{:>6.1} | {:>4} {:>4} {:>4} {:>4} | {:>6.1} | {:>4}/{:<4} | {:>5.0} {:>5.0} | {:>6.0}",
        o.calls,
        o.pct(o.process),
        o.pct(o.hark()),
        o.pct(o.group("front end")),
        o.pct(o.group("hark RTP")),
        o.pct(o.group("caller")),
        o.sender.0,
        o.sender.1,
        o.caller.0,
        o.caller.1,
        o.skipped,
        o.concealed,
        o.overflow,
        o.lost,
        o.lag_ms,
        o.speech_ends,
        o.turns,
        o.rss,
        o.peak_rss,
        o.others / o.wall * 100.0,
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let listen = ListenConfig::default();
    let store = ModelStore::with_dirs(vec![root.join("models")]);
    let load = |name: &str| -> Arc<Vec<f32>> {
        let a: Audio =
            read_wav(&root.join("models/speech").join(name)).expect("run python3 models/fetch.py");
        Arc::new(a.resampled(16_000).samples)
    };
    let runtime = |name: &'static str, workers: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let mut bench = Bench {
        speech: load("two_cities.wav"),
        reply: load("beckett.wav"),
        listen,
        store,
        // hark's media runs on a two-worker runtime (the machine's cores); the callers on one.
        hark_rt: runtime("hark-rtp", 2),
        caller_rt: runtime("caller", 1),
        pool: Vec::new(),
    };
    let (warmup, window) = if full {
        (
            Duration::from_secs(3),
            Duration::from_secs(env_or("HARK_CALLS_SECS", 20)),
        )
    } else {
        (Duration::from_secs(1), Duration::from_secs(2))
    };
    let list: Vec<usize> = match std::env::var("HARK_CALLS") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) if full => vec![1, 20],
        Err(_) => vec![1],
    };
    let ramp = full
        && std::env::var("HARK_CALLS_RAMP")
            .ok()
            .is_none_or(|v| v != "0");
    println!(
        "phone calls: caller RtpSession (speech, PCMU) -> hark RtpSession + front end (RNNoise, Silero, Smart Turn) -> looped reply; warm-up {} s, window {} s",
        warmup.as_secs(),
        window.as_secs()
    );
    println!(
        "CPU in % of one core per call: process = everything (callers too); hark = front-end threads (FE) + hark's RTP runtime; others = the rest of the machine meanwhile (of {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_header();
    let mut outcomes = Vec::new();
    for &n in &list {
        let o = bench.run(n, warmup, window);
        print_row(&o);
        outcomes.push(o);
    }
    if ramp {
        let twenty = outcomes
            .iter()
            .find(|o| o.calls == 20)
            .is_none_or(|o| o.meets_bar());
        let ramp_window = Duration::from_secs(env_or("HARK_CALLS_RAMP_SECS", 10));
        let steps: Vec<usize> = if twenty {
            (24..=env_or("HARK_CALLS_MAX", 64)).step_by(4).collect()
        } else {
            vec![16, 12, 8, 4, 2]
        };
        for n in steps {
            let o = bench.run(n, warmup, ramp_window);
            print_row(&o);
            let pass = o.meets_bar();
            outcomes.push(o);
            if pass != twenty {
                break;
            }
        }
    }
    let one = outcomes
        .iter()
        .find(|o| o.calls == 1)
        .cloned()
        .unwrap_or_else(|| outcomes[0].clone());
    println!(
        "1 call: {} packets sent to the caller in {:.1} s ({} with sound), {} front-end frames, {} ends of speech, {} Smart Turn runs, models loaded in {:.2} s",
        one.packets, one.wall, one.voiced, one.frames, one.speech_ends, one.turns, one.load_s
    );
    assert!(one.packets > 0, "the caller received no packets from hark");
    assert!(one.frames > 0, "the front end heard nothing");
    // Per stage, offline on this thread with the same models and speech.
    let turns_per_s = one.turns as f64 / one.wall;
    let mut models = bench.pool.pop().expect("a model set returned by the runs");
    println!("1 call per stage (% of one core, per second of audio):");
    println!(
        "  {:<60} {:>6.2}",
        "hark RTP runtime (live: receive, jitter, DTMF, resample, send)",
        one.pct(one.group("hark RTP"))
    );
    println!(
        "  {:<60} {:>6.2}",
        "front-end thread (live, all stages)",
        one.pct(one.group("front end"))
    );
    let clip = &bench.speech[..bench.speech.len().min(30 * 16_000)];
    for (name, pct) in stages(&bench.listen, &mut models, clip, turns_per_s) {
        println!("  {:<60} {:>6.2}", name, pct);
    }
    println!(
        "  Smart Turn live: {:.1} ms mean, {:.1} ms max wall per inference push",
        one.turn_ms.0, one.turn_ms.1
    );
    if full
        && std::env::var("HARK_CALLS_ABLATE")
            .ok()
            .is_none_or(|v| v != "0")
    {
        // The same call live with stages switched off: the differences are each stage's
        // live cost (cold caches, wake-ups and all), not a tight loop's.
        let full_listen = bench.listen.clone();
        let mut no_turn = full_listen.clone();
        no_turn.turn.enabled = false;
        let mut bare = no_turn.clone();
        bare.denoise.enabled = false;
        let mut rows = Vec::new();
        for (label, cfg) in [
            ("without Smart Turn", no_turn),
            ("without Smart Turn and RNNoise", bare),
        ] {
            bench.listen = cfg;
            bench.pool.clear();
            let o = bench.run(1, warmup, window);
            rows.push((
                label,
                o.pct(o.group("front end")),
                o.pct(o.group("hark RTP")),
            ));
        }
        bench.listen = full_listen;
        bench.pool.clear();
        let fe = one.pct(one.group("front end"));
        println!("1 call live, front-end thread by ablation (% of one core):");
        println!("  {:<60} {:>6.2}", "all stages", fe);
        for (label, pct, rtp) in &rows {
            println!("  {:<60} {:>6.2}   (RTP {:.2})", label, pct, rtp);
        }
        println!("  {:<60} {:>6.2}", "=> Smart Turn", fe - rows[0].1);
        println!(
            "  {:<60} {:>6.2}",
            "=> RNNoise chain",
            rows[0].1 - rows[1].1
        );
        println!(
            "  {:<60} {:>6.2}",
            "=> Silero + thread wake-ups + frame handling", rows[1].1
        );
    }
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "bar 1 (one call's media path <= 3 % of one core): {} ({:.2} % hark: front end {:.2} + RTP {:.2}; process incl. caller {:.2})",
        verdict(one.pct(one.hark()) <= 3.0),
        one.pct(one.hark()),
        one.pct(one.group("front end")),
        one.pct(one.group("hark RTP")),
        one.pct(one.process)
    );
    if let Some(o) = outcomes.iter().find(|o| o.calls == 20) {
        println!(
            "bar 2 (20 calls, RTP never late by > 20 ms, front ends keep up): {} (sender max {:.1} ms p99 {:.1} ms; caller view max {:.1} ms; skipped {} (hark's late ticks {}), overflow {}, concealed {}; {:.0} % of one core in all)",
            verdict(o.meets_bar()),
            o.sender.0, o.sender.1, o.caller.0, o.skipped, o.late_ticks, o.overflow, o.concealed,
            o.process / o.wall * 100.0
        );
    }
    if let Some(best) = outcomes
        .iter()
        .filter(|o| o.meets_bar())
        .map(|o| o.calls)
        .max()
    {
        println!("largest number of calls that met the bar: {best}");
    }
}
