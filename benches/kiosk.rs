//! The kiosk's own costs on real ALSA PCMs (ALSA's `file` plugin over `null`, FIFOs kept in
//! real time; see `tests/support/card.rs`): the microphone-to-front-end latency, and the idle
//! CPU of `hark run` with nobody speaking. `cargo bench --bench kiosk`

#[path = "../tests/support/card.rs"]
mod card;

use std::time::{Duration, Instant};

use hark::transport::local::{LocalAudio, LocalAudioConfig, StreamRequest};

fn request(device: &str) -> StreamRequest {
    StreamRequest {
        device: device.into(),
        rate: 16_000,
        channels: 1,
        period_ms: 10,
        periods: 4,
    }
}

/// Seconds of CPU (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// From a loud 10 ms chunk written to the card's microphone to its first sample in the ring the
/// front end reads, over `n` onsets.
fn capture_latency(n: usize) -> Vec<Duration> {
    let (mic_in, tap, spk) = (
        card::fifo("l-mic"),
        card::fifo("l-tap"),
        card::fifo("l-spk"),
    );
    card::define("l_mic", &card::capture_body(&mic_in, &tap));
    card::define("l_spk", &card::playback_body(&spk));
    let _tap = card::Speaker::start(tap, 16_000, 1, None);
    let _spk = card::Speaker::start(spk, 16_000, 1, None);
    // One loud chunk every 300 ms; the writer keeps real time, so chunk k leaves at k × 10 ms.
    let mut signal = vec![0i16; 16_000 * (n + 2) * 3 / 10];
    let onsets: Vec<usize> = (1..=n).map(|k| k * 30).collect();
    for &chunk in &onsets {
        signal[chunk * 160..(chunk + 1) * 160].fill(16_000);
    }
    let (_audio, mut streams) = LocalAudio::start(&LocalAudioConfig {
        capture: request("l_mic"),
        playback: request("l_spk"),
        prefill: Duration::from_millis(60),
    })
    .unwrap();
    streams.mic_wake.register();
    let start = Instant::now();
    let _mic = card::Mic::start(mic_in, 16_000, 1, signal);
    let (mut seen, mut index, mut loud) = (Vec::new(), 0usize, false);
    // Sample `index` of the signal left the writer at start + index / 16 kHz, give or take
    // the writer's own 10 ms step.
    while seen.len() < n && start.elapsed() < Duration::from_secs(n as u64) {
        while let Ok(s) = streams.mic.pop() {
            if s > 0.3 && !loud {
                let sent = Duration::from_secs_f64(index as f64 / 16_000.0);
                seen.push(start.elapsed().saturating_sub(sent));
            }
            loud = s > 0.3;
            index += 1;
        }
        std::thread::park_timeout(Duration::from_millis(5));
    }
    seen
}

/// `hark run` with nobody speaking: the cards, the front end (RNNoise, Silero every 32 ms, the
/// echo canceller) and an idle session.
fn idle_cpu(seconds: u64) -> f64 {
    let (mic_in, tap, spk) = (
        card::fifo("i-mic"),
        card::fifo("i-tap"),
        card::fifo("i-spk"),
    );
    card::define("i_mic", &card::capture_body(&mic_in, &tap));
    card::define("i_spk", &card::playback_body(&spk));
    let dir = std::env::temp_dir().join(format!("hark-kiosk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hark.toml");
    // The LLM is never asked (nobody speaks), so its address need not answer.
    std::fs::write(
        &config,
        "[agent]\ninstructions = \"You are a kiosk.\"\n\
         [llm]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [audio]\ncapture = \"i_mic\"\nplayback = \"i_spk\"\n",
    )
    .unwrap();
    let _tap = card::Speaker::start(tap, 16_000, 1, None);
    let _spk = card::Speaker::start(spk, 16_000, 1, None);
    let _mic = card::Mic::start(mic_in, 16_000, 1, Vec::new());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(["--config", config.to_str().unwrap(), "--models-dir"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/models"))
        .arg("run")
        .spawn()
        .unwrap();
    // Past start-up (model loading), then one measured stretch.
    std::thread::sleep(Duration::from_secs(3));
    let (t0, c0) = (Instant::now(), cpu_seconds(child.id()));
    std::thread::sleep(Duration::from_secs(seconds));
    let used = cpu_seconds(child.id()) - c0;
    let wall = t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    used / wall
}

fn main() {
    let mut latency = capture_latency(20);
    latency.sort();
    if latency.is_empty() {
        println!("microphone -> front-end ring: no onset arrived");
    } else {
        println!(
            "microphone -> front-end ring (10 ms periods)   median {:6.2} ms   max {:6.2} ms   ({} onsets)",
            latency[latency.len() / 2].as_secs_f64() * 1e3,
            latency.last().unwrap().as_secs_f64() * 1e3,
            latency.len()
        );
    }
    let cpu = idle_cpu(10);
    println!(
        "hark run, idle (nobody speaking), CPU           {:6.2} % of one core",
        cpu * 100.0
    );
}
