//! The media of a SIP call, as a specification: the jitter buffer against a simulated network
//! (loss, reordering, duplication, jitter bursts), two RTP sessions talking over loopback with
//! real speech through PCMU and PCMA, a session fed garbage, DTMF both ways, in-band DTMF from
//! tone files made by sox, and a hot path that does not allocate.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hark::audio::{read_wav, Audio, Resampler};
use hark::transport::sip::media::g711::G711;
use hark::transport::sip::media::inband::InbandDetector;
use hark::transport::sip::media::jitter::{
    Arrival, FrameKind, JitterBuffer, JitterConfig, Payload,
};
use hark::transport::sip::media::rtp::{RtpHeader, RtpPacket};
use hark::transport::sip::media::session::{
    DtmfSource, Latch, MediaConfig, MediaEvent, MediaStreams, RtpSession,
};
use support::alloc;
use tokio::net::UdpSocket;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// A deterministic generator for the simulated network.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Frame `k`'s samples all hold this value, so a played frame says which packet it was.
fn tag(k: u32) -> f32 {
    (k + 1) as f32 / 4096.0
}

fn untag(v: f32) -> u32 {
    (v * 4096.0).round() as u32 - 1
}

struct Sent {
    k: u32,
    arrival_ms: f64,
}

/// What the simulated network did and what the buffer played.
struct Run {
    dropped: usize,
    duplicated: usize,
    played: Vec<(u32, f64)>,
    targets: Vec<f32>,
    kinds: Vec<FrameKind>,
    arrivals: Vec<f64>,
    jb: JitterBuffer,
}

/// Sends `n` 20 ms packets through a network that delays each by `base + U(0, spread)` ms,
/// loses `loss`, duplicates `dup`, and adds `burst_ms` to packets in `burst`; plays one frame
/// every 20 ms (7 ms out of phase with the sender).
fn simulate(
    n: u32,
    spread: f64,
    loss: f64,
    dup: f64,
    burst: std::ops::Range<u32>,
    burst_ms: f64,
    seed: u64,
) -> Run {
    let mut rng = Rng(seed);
    let (mut sent, mut dropped, mut duplicated) = (Vec::new(), 0, 0);
    for k in 0..n {
        // The first and last packets always arrive, so RFC 3550's loss count is exact.
        if k > 0 && k + 1 < n && rng.next() < loss {
            dropped += 1;
            continue;
        }
        let mut delay = 10.0 + rng.next() * spread;
        if burst.contains(&k) {
            delay += burst_ms;
        }
        let at = k as f64 * 20.0 + delay;
        sent.push(Sent { k, arrival_ms: at });
        if rng.next() < dup {
            duplicated += 1;
            sent.push(Sent {
                k,
                arrival_ms: at + 1.0 + rng.next() * 5.0,
            });
        }
    }
    sent.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms));
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut out = [0f32; 160];
    let (mut played, mut targets, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = 0;
    let mut arrivals = vec![f64::NAN; n as usize];
    for tick in 0..n + 40 {
        let now = tick as f64 * 20.0 + 7.0;
        while next < sent.len() && sent[next].arrival_ms <= now {
            let s = &sent[next];
            let samples = vec![tag(s.k); 160];
            let a = Arrival {
                sequence: (s.k as u16).wrapping_add(65_000),
                timestamp: s.k.wrapping_mul(160).wrapping_add(4_294_900_000),
                marker: s.k == 0,
                ssrc: 42,
                arrival: (s.arrival_ms * 8.0) as u64,
            };
            jb.insert(a, Payload::Audio(&samples));
            if arrivals[s.k as usize].is_nan() {
                arrivals[s.k as usize] = s.arrival_ms;
            }
            next += 1;
        }
        let kind = jb.pop(&mut out);
        kinds.push(kind);
        targets.push(jb.stats().target_ms);
        if kind == FrameKind::Audio {
            assert!(out.iter().all(|&v| v == out[0]), "a frame is one packet");
            played.push((untag(out[0]), now));
        }
    }
    Run {
        dropped,
        duplicated,
        played,
        targets,
        kinds,
        arrivals,
        jb,
    }
}

#[test]
fn jitter_buffer_on_a_clean_network_holds_the_minimum_delay_and_plays_everything() {
    let run = simulate(500, 0.0, 0.0, 0.0, 0..0, 0.0, 1);
    let ks: Vec<u32> = run.played.iter().map(|p| p.0).collect();
    assert_eq!(ks, (0..500).collect::<Vec<_>>());
    for &(k, at) in &run.played {
        let wait = at - run.arrivals[k as usize];
        assert!(wait <= 40.0, "frame {k} waited {wait} ms");
    }
    let s = run.jb.stats();
    // The only concealment is the fade-out after the last packet (three frames).
    assert_eq!(
        (s.lost, s.late, s.duplicates, s.concealed, s.skipped),
        (0, 0, 0, 3, 0)
    );
    assert_eq!(s.target_ms, 20.0);
}

#[test]
fn jitter_buffer_survives_loss_reordering_duplicates_and_a_burst() {
    // 3 % loss, 3 % duplicates, 0–40 ms of jitter (neighbours swap), and a 180 ms stall
    // for packets 200..215.
    let run = simulate(600, 40.0, 0.03, 0.03, 200..215, 180.0, 7);
    let s = run.jb.stats();

    // Continuity: frames play in order, each at most once.
    for w in run.played.windows(2) {
        assert!(w[1].0 > w[0].0, "frame {} after {}", w[1].0, w[0].0);
    }
    // Counters match what the network did.
    assert_eq!(s.lost as usize, run.dropped, "RFC 3550 loss");
    assert_eq!(s.duplicates as usize, run.duplicated);
    let played = run.played.len() as u64;
    assert!(played + s.late + s.lost <= 600);
    assert!(
        played + s.late + s.lost + s.skipped >= 600,
        "every packet is played, late, lost or skipped: {played} {s:?}"
    );
    assert!(played >= 540, "most packets play: {played}");
    // Every gap is filled: no silence once playing, losses concealed.
    let first = run
        .kinds
        .iter()
        .position(|k| *k == FrameKind::Audio)
        .unwrap();
    let concealed = run.kinds[first..]
        .iter()
        .filter(|k| **k == FrameKind::Concealed)
        .count() as u64;
    assert_eq!(concealed, s.concealed);
    assert!(
        concealed >= s.lost,
        "each loss concealed: {concealed} < {}",
        s.lost
    );
    // The target follows the jitter: larger after the stall than before, within bounds.
    let before = run.targets[190];
    let after = run.targets[230];
    assert!(
        (20.0..100.0).contains(&before),
        "before the stall: {before} ms"
    );
    assert!(after > before, "after the stall: {after} ms vs {before} ms");
    assert!(run.targets.iter().all(|&t| (20.0..=200.0).contains(&t)));
    // Bounded delay: no frame waited in the buffer longer than the maximum plus a frame.
    for &(k, at) in &run.played {
        let wait = at - run.arrivals[k as usize];
        assert!(wait <= 220.0, "frame {k} waited {wait} ms");
    }
    // And the delay comes back down once the network calms (the shrink works).
    let late_waits: Vec<f64> = run
        .played
        .iter()
        .filter(|p| p.0 > 520)
        .map(|&(k, at)| at - run.arrivals[k as usize])
        .collect();
    let mean = late_waits.iter().sum::<f64>() / late_waits.len() as f64;
    assert!(mean < 120.0, "mean wait at the end: {mean} ms");
    assert!(s.jitter_ms > 5.0, "jitter estimated: {}", s.jitter_ms);
}

/// Two sessions on loopback, A talking to B.
async fn pair(codec: G711) -> ((RtpSession, MediaStreams), (RtpSession, MediaStreams)) {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let sa = RtpSession::start(a, MediaConfig::new(ba, codec)).unwrap();
    let sb = RtpSession::start(b, MediaConfig::new(aa, codec)).unwrap();
    (sa, sb)
}

/// Waits for `n` samples of inbound audio (driven by the session's notification).
async fn collect(streams: &mut MediaStreams, n: usize) -> Vec<f32> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        let notified = streams.inbound_notify.notified();
        let ready = streams.inbound.slots();
        if ready > 0 {
            let chunk = streams.inbound.read_chunk(ready).unwrap();
            let (x, y) = chunk.as_slices();
            got.extend_from_slice(x);
            got.extend_from_slice(y);
            chunk.commit_all();
            continue;
        }
        tokio::time::timeout_at(deadline, notified)
            .await
            .expect("inbound audio keeps coming");
    }
    got.truncate(n);
    got
}

/// Speech through A's sink, paced at real time, then what B heard.
async fn talk(codec: G711, speech: &[f32]) -> Vec<f32> {
    let ((_sa, mut a), (sb, mut b)) = pair(codec).await;
    let total = speech.len() + 16_000;
    let send = async {
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        for chunk in speech.chunks(320) {
            clock.tick().await;
            a.outbound.push(chunk);
        }
    };
    let (_, heard) = tokio::join!(send, collect(&mut b, total));
    let st = sb.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(st.malformed.load(Relaxed), 0);
    assert_eq!(st.lost.load(Relaxed), 0, "loopback loses nothing");
    assert!(st.received.load(Relaxed) > (total / 320 - 10) as u64);
    heard
}

/// The median SNR over the speech's 250 ms windows, each at its own best delay, and the delay
/// of the first second. Per window: an adaptive jitter buffer may move the delay once mid-call
/// when the machine is starved (seen once in CI), which is not a codec or transport fault, but
/// one global alignment would then score everything after it as noise.
fn snr_db(reference: &[f32], heard: &[f32]) -> (f64, usize) {
    const WINDOW: usize = 4_000;
    const MAX_LAG: usize = 8_000;
    let (_, lag) = support::card::best_match(&reference[8000..24_000], &heard[8000..], 16_000);
    let mut snrs = Vec::new();
    for (i, w) in reference.chunks_exact(WINDOW).enumerate() {
        let start = i * WINDOW;
        let loud = (w.iter().map(|v| v * v).sum::<f32>() / WINDOW as f32).sqrt() > 0.01;
        if !loud || start + WINDOW + MAX_LAG > heard.len() {
            continue;
        }
        let (_, l) = support::card::best_match(w, &heard[start..], MAX_LAG);
        let (mut s, mut e) = (0f64, 0f64);
        for (j, r) in w.iter().enumerate() {
            let (r, h) = (f64::from(*r), f64::from(heard[start + l + j]));
            s += r * r;
            e += (r - h) * (r - h);
        }
        snrs.push(10.0 * (s / e).log10());
    }
    assert!(
        snrs.len() >= 6,
        "too little speech to compare: {} windows",
        snrs.len()
    );
    (support::card::median(snrs), lag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_speech_crosses_pcmu_and_pcma_over_loopback() {
    let speech = common::speech("beckett.wav").resampled(16_000);
    let speech = &speech.samples[..16_000 * 3];
    // The reference is the speech through the same 16 → 8 → 16 kHz path without G.711, so the
    // comparison measures the codec and the transport, not the telephone band.
    let mut down = Resampler::new(16_000, 8_000);
    let mut up = Resampler::new(8_000, 16_000);
    let (mut narrow, mut reference) = (Vec::new(), Vec::new());
    down.process(speech, &mut narrow);
    down.flush(&mut narrow);
    up.process(&narrow, &mut reference);
    up.flush(&mut reference);
    let (pcmu, pcma) = tokio::join!(talk(G711::Pcmu, speech), talk(G711::Pcma, speech));
    for (law, heard) in [("PCMU", pcmu), ("PCMA", pcma)] {
        let (snr, lag) = snr_db(&reference, &heard);
        // G.711's quantisation noise sits about 38 dB under a loud signal and closer under
        // quiet syllables; anything lost, concealed or garbled would cost far more than the
        // 10 dB of margin below 35 dB.
        println!("{law}: SNR {snr:.1} dB at a delay of {lag} samples");
        assert!(snr > 25.0, "{law}: SNR {snr:.1} dB");
        assert!(lag < 16_000, "{law}: delay {lag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_sent_as_rfc4733_arrives_once_each_in_order() {
    let ((sa, _a), (sb, mut b)) = pair(G711::Pcma).await;
    sa.send_dtmf("159#*").await.unwrap();
    assert!(sa.send_dtmf("12x").await.is_err(), "bad digits are refused");
    let mut got = String::new();
    while got.len() < 5 {
        let e = tokio::time::timeout(Duration::from_secs(5), b.events.recv())
            .await
            .expect("digits arrive within 5 s")
            .expect("channel open");
        if let MediaEvent::Dtmf {
            digit,
            source,
            duration_ms,
        } = e
        {
            assert_eq!(source, DtmfSource::Rfc4733);
            assert_eq!(duration_ms, Some(100));
            got.push(digit.to_char());
        }
    }
    assert_eq!(got, "159#*");
    // Nothing more: no duplicate from the retransmitted end packets.
    let more = tokio::time::timeout(Duration::from_millis(400), b.events.recv()).await;
    assert!(more.is_err(), "unexpected event {more:?}");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        sb.stats().lost.load(Relaxed),
        0,
        "events share the sequence space"
    );
    assert_eq!(sa.stats().dtmf_sent.load(Relaxed), 5);
}

fn rtp(codec: G711, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 12 + payload.len()];
    RtpHeader {
        marker: seq == 0,
        payload_type: codec.payload_type(),
        sequence: seq,
        timestamp: ts,
        ssrc,
    }
    .write(payload, &mut buf)
    .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_and_counted_while_the_session_keeps_playing() {
    use std::sync::atomic::Ordering::Relaxed;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // The SDP names another port on this host: the peer latches by its real source.
    let sdp: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut cfg = MediaConfig::new(sdp, G711::Pcmu);
    cfg.latch = Latch::SameHost;
    let (s, mut streams) = RtpSession::start(sock, cfg).unwrap();
    let to = s.local_addr();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x40; 40],                                          // version 1
        vec![0xff; 30],                                          // version 3
        vec![0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],             // 15 CSRCs claimed, none there
        vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9], // extension too long
        vec![0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 7, 200],     // padding larger than body
    ];
    let mut wrong_pt = rtp(G711::Pcmu, 5, 0, 1, &[0xff; 160]);
    wrong_pt[1] = 96;
    junk.push(wrong_pt);
    junk.push(rtp(G711::Pcmu, 6, 0, 1, &[0xff; 1000])); // more than 60 ms of audio
    let mut rng = Rng(99);
    for _ in 0..200 {
        let len = (rng.next() * 300.0) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| (rng.next() * 256.0) as u8).collect();
        if let Some(b) = d.first_mut() {
            *b &= 0x7f; // never version 2
        }
        junk.push(d);
    }
    for d in &junk {
        peer.send_to(d, to).await.unwrap();
    }
    // A 1 kHz tone follows from the same peer.
    let tone: Vec<f32> = (0..8000 * 2)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 8000.0).sin())
        .collect();
    let mut codes = vec![0u8; 160];
    let send = async {
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        for (k, f) in tone.chunks(160).enumerate() {
            clock.tick().await;
            G711::Pcmu.encode(f, &mut codes);
            let p = rtp(G711::Pcmu, k as u16, k as u32 * 160, 0xabc, &codes);
            peer.send_to(&p, to).await.unwrap();
        }
    };
    let (_, heard) = tokio::join!(send, collect(&mut streams, 16_000 * 2));
    match streams.events.try_recv() {
        Ok(MediaEvent::Latched(a)) => assert_eq!(a, peer_addr),
        other => panic!("expected the latch, got {other:?}"),
    }
    assert_eq!(s.stats().malformed.load(Relaxed), junk.len() as u64);
    assert!(s.is_running());
    // The tone came through: the second half of what was heard is loud and at 1 kHz.
    let tail = &heard[16_000..];
    let rms = (tail.iter().map(|v| v * v).sum::<f32>() / tail.len() as f32).sqrt();
    assert!(rms > 0.15, "rms {rms}");
    let crossings = tail
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    assert!(
        (950..=1050).contains(&crossings),
        "{crossings} cycles in 1 s"
    );
    // Another source is now refused: the remote is latched.
    let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    intruder
        .send_to(&rtp(G711::Pcmu, 1, 160, 0xabc, &[0xff; 160]), to)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while s.stats().rejected.load(Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "intruder not counted"
        );
        streams.inbound_notify.notified().await;
    }
}

fn sox(args: &[&str]) {
    let ok = Command::new("sox")
        .args(args)
        .status()
        .expect("sox is installed by scripts/setup.sh --test")
        .success();
    assert!(ok, "sox {args:?}");
}

const KEYS: [(char, u32, u32); 16] = [
    ('1', 697, 1209),
    ('2', 697, 1336),
    ('3', 697, 1477),
    ('A', 697, 1633),
    ('4', 770, 1209),
    ('5', 770, 1336),
    ('6', 770, 1477),
    ('B', 770, 1633),
    ('7', 852, 1209),
    ('8', 852, 1336),
    ('9', 852, 1477),
    ('C', 852, 1633),
    ('*', 941, 1209),
    ('0', 941, 1336),
    ('#', 941, 1477),
    ('D', 941, 1633),
];

/// A tone file made by sox: each digit 80 ms, then 80 ms of silence; and the same with white
/// noise mixed in `noise_db` below full scale.
fn sox_tones(dir: &Path, digits: &str, noise: Option<f32>) -> Audio {
    let mut parts = Vec::new();
    let gap = dir.join("gap.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        gap.to_str().unwrap(),
        "trim",
        "0",
        "0.08",
    ]);
    for (i, c) in digits.chars().enumerate() {
        let (_, lo, hi) = KEYS.iter().find(|k| k.0 == c).unwrap();
        let f = dir.join(format!("d{i}.wav"));
        let (lo, hi) = (lo.to_string(), hi.to_string());
        sox(&[
            "-n",
            "-r",
            "8000",
            "-b",
            "16",
            f.to_str().unwrap(),
            "synth",
            "0.08",
            "sine",
            &lo,
            "sine",
            &hi,
            "remix",
            "-",
            "vol",
            "0.5",
        ]);
        parts.push(f);
        parts.push(gap.clone());
    }
    let tones = dir.join("tones.wav");
    let mut args: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap()).collect();
    args.push(tones.to_str().unwrap());
    sox(&args);
    let out = match noise {
        None => tones,
        Some(vol) => {
            let noise = dir.join("noise.wav");
            let mixed = dir.join("mixed.wav");
            let secs = format!("{}", digits.len() as f32 * 0.16);
            sox(&[
                "-n",
                "-r",
                "8000",
                "-b",
                "16",
                "-c",
                "1",
                noise.to_str().unwrap(),
                "synth",
                &secs,
                "whitenoise",
                "vol",
                &vol.to_string(),
            ]);
            sox(&[
                "-m",
                tones.to_str().unwrap(),
                noise.to_str().unwrap(),
                mixed.to_str().unwrap(),
            ]);
            mixed
        }
    };
    let audio = read_wav(&out).unwrap();
    assert_eq!(audio.rate, 8000);
    audio
}

fn detect(samples: &[f32]) -> String {
    let mut d = InbandDetector::default();
    let mut s = String::new();
    for chunk in samples.chunks(160) {
        d.push(chunk, |g| s.push(g.digit.to_char()));
    }
    s
}

fn through_g711(law: G711, x: &[f32]) -> Vec<f32> {
    let mut codes = vec![0u8; x.len()];
    let mut y = vec![0f32; x.len()];
    law.encode(x, &mut codes);
    law.decode(&codes, &mut y);
    y
}

#[test]
fn sox_tone_files_decode_clean_noisy_and_through_g711() {
    let dir = std::env::temp_dir().join(format!("hark-dtmf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let digits = "0123456789*#ABCD";
    let clean = sox_tones(&dir, digits, None);
    assert_eq!(detect(&clean.samples), digits);
    assert_eq!(detect(&through_g711(G711::Pcmu, &clean.samples)), digits);
    // White noise at 0.05 of full scale (sox -m halves both: the tones at about -12 dBFS each,
    // the noise near -37 dBFS RMS, so about 20 dB under them).
    let noisy = sox_tones(&dir, "5551#", Some(0.1));
    let rms = |x: &[f32]| (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    let gap = &noisy.samples[640..1280]; // silence between digits 0 and 1: only noise
    assert!(rms(gap) > 0.01, "the noise is there: {}", rms(gap));
    assert_eq!(detect(&through_g711(G711::Pcma, &noisy.samples)), "5551#");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn real_speech_produces_no_false_digits() {
    for name in common::SPEECH {
        let speech = common::speech(name).resampled(8000);
        for law in [G711::Pcmu, G711::Pcma] {
            let heard = detect(&through_g711(law, &speech.samples));
            assert_eq!(heard, "", "{name} through {law:?}: false digits {heard:?}");
        }
        // Louder too: speech at +10 dB (clipped like a hot line).
        let loud: Vec<f32> = speech
            .samples
            .iter()
            .map(|v| (v * 3.0).clamp(-1.0, 1.0))
            .collect();
        assert_eq!(detect(&loud), "", "{name} loud");
    }
}

#[test]
fn the_receive_and_send_hot_path_does_not_allocate() {
    let codec = G711::Pcmu;
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut det = InbandDetector::default();
    let mut up = Resampler::new(8000, 16_000);
    let mut down = Resampler::new(16_000, 8000);
    let (mut up_out, mut down_out) = (Vec::with_capacity(1280), Vec::with_capacity(640));
    let (mut ring_tx, mut ring_rx) = rtrb::RingBuffer::<f32>::new(32_000);
    let voice: Vec<f32> = (0..320).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let mut frame8 = [0f32; 160];
    let mut decoded = [0f32; 160];
    let mut codes = [0u8; 160];
    let mut packet = [0u8; 1500];
    let mut wire = [0u8; 1500];
    let mut step = |k: u32| {
        // Receive: a packet parsed, decoded, buffered; one frame played and resampled.
        codec.encode(&voice[..160], &mut codes);
        let h = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: k as u16,
            timestamp: k * 160,
            ssrc: 5,
        };
        let n = h.write(&codes, &mut wire).unwrap();
        let p = RtpPacket::parse(&wire[..n]).unwrap();
        codec.decode(p.payload, &mut decoded);
        let a = Arrival {
            sequence: p.header.sequence,
            timestamp: p.header.timestamp,
            marker: false,
            ssrc: p.header.ssrc,
            arrival: u64::from(k) * 160,
        };
        if k % 7 != 3 {
            jb.insert(a, Payload::Audio(&decoded));
        }
        jb.pop(&mut frame8);
        det.push(&frame8, |_| {});
        up_out.clear();
        up.process(&frame8, &mut up_out);
        hark::audio::ring::push_slice(&mut ring_tx, &up_out);
        let mut sink = [0f32; 320];
        hark::audio::ring::pop_exact(&mut ring_rx, &mut sink);
        // Send: 20 ms of voice resampled, encoded, written as a packet.
        down.process(&voice, &mut down_out);
        let m = down_out.len().min(160);
        codec.encode(&down_out[..m], &mut codes);
        down_out.copy_within(m.., 0);
        down_out.truncate(down_out.len() - m);
        RtpHeader {
            sequence: k as u16,
            ..h
        }
        .write(&codes, &mut packet)
        .unwrap();
    };
    for k in 0..100 {
        step(k);
    }
    alloc::start();
    for k in 100..1100 {
        step(k);
    }
    assert_eq!(alloc::stop(), 0, "allocations in 1000 packets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reports_flow_both_ways_on_port_plus_one() {
    use std::sync::atomic::Ordering::Relaxed;
    // Two adjacent port pairs (RTP even, RTCP = RTP + 1), as SDP implies.
    async fn pair_of_ports() -> (UdpSocket, UdpSocket) {
        for _ in 0..50 {
            let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = rtp.local_addr().unwrap().port();
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
                return (rtp, rtcp);
            }
        }
        panic!("no adjacent ports free");
    }
    let (a, a_rtcp) = pair_of_ports().await;
    let (b, b_rtcp) = pair_of_ports().await;
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let mut cfg_a = MediaConfig::new(ba, G711::Pcmu);
    cfg_a.telephone_event = None;
    let (sa, _a) = RtpSession::start_with_rtcp(a, Some(a_rtcp), cfg_a).unwrap();
    let (sb, b) =
        RtpSession::start_with_rtcp(b, Some(b_rtcp), MediaConfig::new(aa, G711::Pcmu)).unwrap();
    assert!(
        matches!(
            sa.send_dtmf("1").await,
            Err(hark::transport::sip::media::MediaError::NoTelephoneEvent)
        ),
        "no telephone-event negotiated: DTMF is refused"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
    while sa.stats().rtcp_received.load(Relaxed) == 0 || sb.stats().rtcp_received.load(Relaxed) == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RTCP within 9 s: a {:?} b {:?}",
            sa.stats(),
            sb.stats()
        );
        b.inbound_notify.notified().await;
    }
    assert_eq!(sa.stats().rtcp_malformed.load(Relaxed), 0);
    assert!(sa.stats().rtcp_sent.load(Relaxed) >= 1 && sb.stats().rtcp_sent.load(Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_tones_inside_the_rtp_audio_are_reported_by_the_session() {
    let dir = std::env::temp_dir().join(format!("hark-dtmf-rtp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tones = sox_tones(&dir, "42#", None);
    let _ = std::fs::remove_dir_all(&dir);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = MediaConfig::new(peer.local_addr().unwrap(), G711::Pcma);
    let (s, mut streams) = RtpSession::start(sock, cfg).unwrap();
    let to = s.local_addr();
    let send = async {
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        let mut codes = [0u8; 160];
        let mut padded = tones.samples.clone();
        padded.resize(padded.len().div_ceil(160) * 160 + 160 * 10, 0.0);
        for (k, f) in padded.chunks(160).enumerate() {
            clock.tick().await;
            G711::Pcma.encode(f, &mut codes);
            let p = rtp(G711::Pcma, k as u16, k as u32 * 160, 0x77, &codes);
            peer.send_to(&p, to).await.unwrap();
        }
    };
    let receive = async {
        let mut got = String::new();
        while got.len() < 3 {
            let e = tokio::time::timeout(Duration::from_secs(5), streams.events.recv())
                .await
                .expect("digits within 5 s")
                .unwrap();
            if let MediaEvent::Dtmf { digit, source, .. } = e {
                assert_eq!(source, DtmfSource::Inband);
                got.push(digit.to_char());
            }
        }
        got
    };
    let (_, got) = tokio::join!(send, receive);
    assert_eq!(got, "42#");
}
