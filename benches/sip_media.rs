//! One phone call's media cost, per second of audio: the synchronous path a packet takes
//! (receive: parse, G.711 decode, jitter buffer, in-band DTMF detection, 8 → 16 kHz; send:
//! 16 → 8 kHz, encode, packetise), and whole `RtpSession`s exchanging real speech over
//! loopback, measured as the process's CPU time (tokio, sockets and system calls included).
//! The front end is not part of this figure. `cargo bench --bench sip_media`

use std::time::{Duration, Instant};

use hark::audio::{read_wav, Resampler};
use hark::transport::sip::media::g711::G711;
use hark::transport::sip::media::inband::InbandDetector;
use hark::transport::sip::media::jitter::{Arrival, JitterBuffer, JitterConfig, Payload};
use hark::transport::sip::media::rtp::{RtpHeader, RtpPacket};
use hark::transport::sip::media::session::{MediaConfig, RtpSession};

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn speech_16k() -> Vec<f32> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/speech/two_cities.wav");
    read_wav(std::path::Path::new(path))
        .expect("run python3 models/fetch.py")
        .resampled(16_000)
        .samples
}

/// The synchronous media path for `secs` seconds of audio each way; returns CPU seconds per
/// second of audio.
fn sync_path(speech: &[f32], secs: usize) -> f64 {
    let codec = G711::Pcmu;
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut det = InbandDetector::default();
    let (mut up, mut down) = (Resampler::new(8000, 16_000), Resampler::new(16_000, 8000));
    let (mut up_out, mut down_out) = (Vec::with_capacity(1280), Vec::with_capacity(640));
    let (mut codes, mut wire, mut frame8) = ([0u8; 160], [0u8; 1500], [0f32; 160]);
    let mut decoded = [0f32; 160];
    // The peer's packets: the speech at 8 kHz, encoded once up front.
    let narrow = hark::audio::Audio {
        rate: 16_000,
        samples: speech.to_vec(),
    }
    .resampled(8000)
    .samples;
    let frames = secs * 50;
    let start = cpu_seconds();
    for k in 0..frames {
        let at = (k * 160) % (narrow.len() - 160);
        // Receive one packet, play one frame.
        codec.encode(&narrow[at..at + 160], &mut codes);
        let h = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: k as u16,
            timestamp: (k * 160) as u32,
            ssrc: 1,
        };
        let n = h.write(&codes, &mut wire).unwrap();
        let p = RtpPacket::parse(std::hint::black_box(&wire[..n])).unwrap();
        codec.decode(p.payload, &mut decoded);
        jb.insert(
            Arrival {
                sequence: p.header.sequence,
                timestamp: p.header.timestamp,
                marker: false,
                ssrc: 1,
                arrival: (k * 160) as u64,
            },
            Payload::Audio(&decoded),
        );
        jb.pop(&mut frame8);
        det.push(&frame8, |_| {});
        up_out.clear();
        up.process(&frame8, &mut up_out);
        std::hint::black_box(&up_out);
        // Send one packet of the agent's voice.
        let at = (k * 320) % (speech.len() - 320);
        down.process(&speech[at..at + 320], &mut down_out);
        let m = down_out.len().min(160);
        codec.encode(&down_out[..m], &mut codes);
        down_out.drain(..m);
        std::hint::black_box(h.write(&codes, &mut wire).unwrap());
    }
    (cpu_seconds() - start) / secs as f64
}

/// Two sessions talking to each other over loopback for `secs`, both directions carrying
/// speech; returns CPU seconds per second per session (one call's media in a hark that serves
/// it) and the receiving side's counters.
fn sessions(speech: &[f32], secs: u64) -> (f64, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (sa, mut a) = RtpSession::start(a, MediaConfig::new(ba, G711::Pcma)).unwrap();
        let (sb, mut b) = RtpSession::start(b, MediaConfig::new(aa, G711::Pcma)).unwrap();
        let mut clock = tokio::time::interval(Duration::from_millis(20));
        let mut sink = vec![0f32; 16_000];
        let start = (cpu_seconds(), Instant::now());
        for k in 0..secs as usize * 50 {
            clock.tick().await;
            let at = (k * 320) % (speech.len() - 320);
            a.outbound.push(&speech[at..at + 320]);
            b.outbound.push(&speech[at..at + 320]);
            for s in [&mut a, &mut b] {
                let n = s.inbound.slots();
                if let Ok(c) = s.inbound.read_chunk(n) {
                    let (x, _) = c.as_slices();
                    sink[..x.len().min(16_000)].copy_from_slice(&x[..x.len().min(16_000)]);
                    c.commit_all();
                }
            }
        }
        let wall = start.1.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - start.0;
        use std::sync::atomic::Ordering::Relaxed;
        let st = sb.stats();
        let counters = format!(
            "received {} lost {} late {} concealed {} jitter {:.2} ms late ticks {}",
            st.received.load(Relaxed),
            st.lost.load(Relaxed),
            st.late.load(Relaxed),
            st.concealed.load(Relaxed),
            st.jitter_ms(),
            st.late_ticks.load(Relaxed) + sa.stats().late_ticks.load(Relaxed),
        );
        (cpu / wall / 2.0, counters)
    })
}

fn main() {
    let speech = speech_16k();
    let sync = sync_path(&speech, 120);
    println!(
        "SIP media, packet path (rx parse+decode+jitter+DTMF+8->16k, tx 16->8k+encode), per call  {:6.3} % of one core",
        sync * 100.0
    );
    let (per_call, counters) = sessions(&speech, 10);
    println!(
        "SIP media, RtpSession over loopback UDP (tokio, sockets, both directions), per call      {:6.3} % of one core",
        per_call * 100.0
    );
    println!("  receiver counters: {counters}");
}
