//! What a flood costs the SIP endpoint: CPU time per hostile datagram (random bytes, a cut
//! INVITE, an INVITE from outside `allow`, an allowed INVITE refused busy, an INVITE
//! challenged by `inbound_auth`), and its tables and resident memory afterwards.
//!
//! Measured as this process's CPU time (user + system) while a sender in the same process
//! pours the datagrams over loopback, minus the same pour into a socket that only reads and
//! discards (the sender's and the kernel's share). `cargo bench --bench sip_flood`

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hark::config::SipConfig;
use hark::transport::sip::Endpoint;
use tokio::net::UdpSocket;

/// Datagrams per kind.
const N: usize = 20_000;

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Resident memory of this process, in MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn config(extra: &str) -> SipConfig {
    let c: SipConfig = toml::from_str(&format!(
        "bind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\nrtp_ports = [26000, 26039]\n{extra}"
    ))
    .unwrap();
    c.validate().unwrap();
    c
}

fn invite(from: SocketAddr, to: SocketAddr, call: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:hark@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@{from}>;tag=t{call}\r\nTo: <sip:hark@{to}>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{from}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends `datagrams` in batches of 100, waiting after each until `received` counts them (at
/// most 1 s, so a drop by the kernel does not hang the bench); returns CPU seconds used.
async fn pour(
    sock: &UdpSocket,
    to: SocketAddr,
    datagrams: &[Vec<u8>],
    received: &dyn Fn() -> u64,
) -> f64 {
    let start = cpu_seconds();
    for batch in datagrams.chunks(100) {
        let target = received() + batch.len() as u64;
        for d in batch {
            let _ = sock.send_to(d, to).await;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while received() < target && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    }
    cpu_seconds() - start
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rss_start = rss_mb();
    let friend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let (f, s) = (friend.local_addr().unwrap(), stranger.local_addr().unwrap());

    // Baseline: the same pour into a socket that reads and discards.
    let sink = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sink_addr = sink.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (reader, c) = (sink.clone(), count.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while reader.recv_from(&mut buf).await.is_ok() {
            c.fetch_add(1, Relaxed);
        }
    });
    let sample: Vec<Vec<u8>> = (0..N)
        .map(|i| invite(f, sink_addr, &format!("b{i}")))
        .collect();
    let base = pour(&friend, sink_addr, &sample, &|| count.load(Relaxed)).await / N as f64;

    let ep = Endpoint::start(&config("")).await.unwrap();
    let to = ep.local_addr();
    let received = || ep.stats().received.load(Relaxed);
    let mut rng = Rng(0x00c0_ffee_1234);
    let noise: Vec<Vec<u8>> = (0..N)
        .map(|_| {
            let len = 1 + (rng.next() % 1400) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        })
        .collect();
    let cut: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut d = invite(f, to, &format!("c{i}"));
            d.truncate(60 + i % 300);
            d
        })
        .collect();
    let forbidden: Vec<Vec<u8>> = (0..N).map(|i| invite(s, to, &format!("f{i}"))).collect();
    let busy: Vec<Vec<u8>> = (0..N).map(|i| invite(f, to, &format!("a{i}"))).collect();

    let mut rows = Vec::new();
    for (what, sock, data) in [
        ("random bytes (dropped)", &friend, &noise),
        ("INVITE cut short (dropped or 400)", &friend, &cut),
        ("INVITE from outside allow (403)", &stranger, &forbidden),
        ("allowed INVITE, line busy (100 + 486)", &friend, &busy),
    ] {
        let cpu = pour(sock, to, data, &received).await / N as f64;
        rows.push((what, cpu));
    }
    let fp = ep.footprint();
    let rss_after = rss_mb();

    let guarded = Endpoint::start(&config(
        "inbound_auth = true\nuser = \"door\"\npassword = \"bench-secret\"",
    ))
    .await
    .unwrap();
    let gto = guarded.local_addr();
    let challenged: Vec<Vec<u8>> = (0..N).map(|i| invite(f, gto, &format!("g{i}"))).collect();
    let cpu = pour(&friend, gto, &challenged, &|| {
        guarded.stats().received.load(Relaxed)
    })
    .await
        / N as f64;
    rows.push(("allowed INVITE, no credentials (401)", cpu));

    println!(
        "SIP flood, {N} datagrams per kind; CPU per datagram (whole process; sender and kernel share = {:.1} µs, subtracted)",
        base * 1e6
    );
    for (what, cpu) in rows {
        println!(
            "  {what:<40} {:7.1} µs  (raw {:7.1} µs)",
            (cpu - base).max(0.0) * 1e6,
            cpu * 1e6
        );
    }
    println!(
        "  tables after {} datagrams: {} call(s), {} cached responses ({} order entries); RSS {:.1} -> {:.1} MB",
        4 * N,
        fp.calls,
        fp.cached_responses,
        fp.cache_order,
        rss_start,
        rss_after
    );
    println!(
        "  counted: malformed {}, forbidden {}, busy {}, challenged {}",
        ep.stats().malformed.load(Relaxed),
        ep.stats().forbidden.load(Relaxed),
        ep.stats().busy.load(Relaxed),
        guarded.stats().unauthorized.load(Relaxed)
    );
}
