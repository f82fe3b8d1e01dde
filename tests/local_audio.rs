//! The kiosk's ALSA audio, against real ALSA PCMs (ALSA's `file`, `null` and `plug` plugins;
//! see `support/card.rs`): rates and formats the plugin must convert, devices that fail and
//! come back, and the device list.

mod common;
mod support;

use support::card;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hark::transport::local::{
    LocalAudio, LocalAudioConfig, LocalStreams, StreamRequest, PIPELINE_RATE,
};

/// The card's threads keep real time; run these tests one at a time so they do not starve
/// each other on a small machine.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn request(device: &str, rate: u32, channels: u32) -> StreamRequest {
    StreamRequest {
        device: device.into(),
        rate,
        channels,
        period_ms: 10,
        periods: 4,
    }
}

fn config(capture: StreamRequest, playback: StreamRequest) -> LocalAudioConfig {
    LocalAudioConfig {
        capture,
        playback,
        prefill: Duration::from_millis(60),
    }
}

/// Two seconds of real speech at the pipeline rate.
fn speech() -> Vec<f32> {
    let s = common::speech("two_cities.wav").resampled(PIPELINE_RATE);
    s.samples[..2 * PIPELINE_RATE as usize].to_vec()
}

/// Reads the microphone ring until `n` samples arrived (or a generous bound passes).
fn record(streams: &mut LocalStreams, n: usize) -> Vec<f32> {
    streams.mic_wake.register();
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        while let Ok(s) = streams.mic.pop() {
            out.push(s);
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    out
}

/// `got` holds `want`'s speech, window by window (see [`card::windowed_match`]).
fn assert_similar(what: &str, want: &[f32], got: &[f32]) {
    let windows = card::windowed_match(
        card::from_onset(want, PIPELINE_RATE),
        card::from_onset(got, PIPELINE_RATE),
        PIPELINE_RATE,
        8_000,
    );
    assert!(windows.len() >= 4, "{what}: too little speech to compare");
    let median = card::median(windows.clone());
    assert!(median > 0.9, "{what}: window correlations {windows:.2?}");
}

/// Waits for a device flag, bounded (the flag is the event; nothing else signals it).
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Feeds the speaker as a session would: no faster than it plays.
fn play(streams: &mut LocalStreams, samples: &[f32]) {
    use hark::session::AudioSink;
    for frame in samples.chunks(320) {
        streams.speaker.write(frame);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rates_and_channels_the_plugin_must_convert_reach_the_pipeline_as_16k_mono() {
    let _real_time = one_at_a_time();
    // The card runs at 44.1 kHz stereo; hark asks 48 kHz mono (ALSA's plug converts) and
    // resamples 48 kHz to 16 kHz itself.
    let (mic_in, tap, spk_out) = (
        card::fifo("a-mic"),
        card::fifo("a-tap"),
        card::fifo("a-spk"),
    );
    card::define(
        "a_mic",
        &card::plug_body(&card::capture_body(&mic_in, &tap), 44_100, 2),
    );
    card::define(
        "a_spk",
        &card::plug_body(&card::playback_body(&spk_out), 44_100, 2),
    );
    let speech = speech();
    let at_card = hark::audio::Audio {
        rate: PIPELINE_RATE,
        samples: speech.clone(),
    }
    .resampled(44_100);
    let _tap = card::Speaker::start(tap, 44_100, 2, None);
    let _mic = card::Mic::start(mic_in, 44_100, 2, card::interleave(&at_card.samples, 2));
    let speaker = card::Speaker::start(spk_out, 44_100, 2, None);
    let (audio, mut streams) = LocalAudio::start(&config(
        request("a_mic", 48_000, 1),
        request("a_spk", 48_000, 1),
    ))
    .unwrap();

    let heard = record(&mut streams, speech.len() + PIPELINE_RATE as usize / 2);
    let (_, lag) = card::best_match(&speech, &heard, PIPELINE_RATE as usize / 2);
    assert!(
        lag < PIPELINE_RATE as usize / 5,
        "capture latency {lag} samples"
    );
    assert_similar(
        "the recording should be the speech the card played in",
        &speech,
        &heard,
    );
    let stats = audio.stats().clone();
    assert_eq!(
        stats.capture.dropped.load(Ordering::Relaxed),
        0,
        "read in time, nothing lost"
    );

    play(&mut streams, &speech);
    until("the speaker played it all", || {
        let heard = card::first_channel(&speaker.heard(), 2);
        card::from_onset(&heard, 44_100).len() >= at_card.samples.len() + 44_100 / 2
    });
    let played = hark::audio::Audio {
        rate: 44_100,
        samples: card::first_channel(&speaker.heard(), 2),
    }
    .resampled(PIPELINE_RATE);
    assert_similar(
        "the card should play the speech hark was given",
        &speech,
        &played.samples,
    );
    assert_eq!(stats.playback.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.capture.reopens.load(Ordering::Relaxed), 0);
}

#[test]
fn a_speaker_that_is_unplugged_is_retried_and_plays_again_when_it_returns() {
    let _real_time = one_at_a_time();
    let out = card::fifo("b-spk");
    card::define("b_spk", &card::playback_body(&out));
    let (mic_in, tap) = (card::fifo("b-mic"), card::fifo("b-tap"));
    card::define("b_mic", &card::capture_body(&mic_in, &tap));
    let _mic = card::Mic::start(mic_in, 16_000, 1, Vec::new());
    let _tap = card::Speaker::start(tap, 16_000, 1, None);
    // The first speaker stops reading after 0.3 s of audio: the device fails mid-stream.
    let first = card::Speaker::start(out.clone(), 16_000, 1, Some(4_800));
    let (audio, mut streams) = LocalAudio::start(&config(
        request("b_mic", 16_000, 1),
        request("b_spk", 16_000, 1),
    ))
    .unwrap();
    let stats = audio.stats().clone();
    until("the speaker is open", || {
        stats.playback.up.load(Ordering::Relaxed)
    });
    // Unplugged: the device disappears from ALSA's configuration as its reader goes away.
    card::remove("b_spk");
    until("the first reader is gone", || first.closed());
    until("hark notices the failure", || {
        !stats.playback.up.load(Ordering::Relaxed)
    });
    assert_eq!(stats.playback.reopens.load(Ordering::Relaxed), 0);
    // The microphone keeps running meanwhile.
    let before = stats.capture.frames.load(Ordering::Relaxed);
    until("capture goes on", || {
        stats.capture.frames.load(Ordering::Relaxed) > before + 1_600
    });
    assert!(stats.capture.up.load(Ordering::Relaxed));

    // Plugged back in.
    let out = card::fifo("b-spk");
    card::define("b_spk", &card::playback_body(&out));
    let second = card::Speaker::start(out, 16_000, 1, None);
    until("the speaker is reopened", || {
        stats.playback.reopens.load(Ordering::Relaxed) == 1
            && stats.playback.up.load(Ordering::Relaxed)
    });
    let speech = speech();
    play(&mut streams, &speech);
    until("the reopened speaker played the speech", || {
        let heard = card::first_channel(&second.heard(), 1);
        card::from_onset(&heard, PIPELINE_RATE).len() >= speech.len() + 8_000
    });
    assert_similar(
        "the reopened speaker should play the speech",
        &speech,
        &card::first_channel(&second.heard(), 1),
    );
}

#[test]
fn a_microphone_that_fails_mid_stream_is_reopened_and_records_again() {
    let _real_time = one_at_a_time();
    let (mic_in, tap) = (card::fifo("c-mic"), card::fifo("c-tap"));
    card::define("c_mic", &card::capture_body(&mic_in, &tap));
    let out = card::fifo("c-spk");
    card::define("c_spk", &card::playback_body(&out));
    let _speaker = card::Speaker::start(out, 16_000, 1, None);
    let _mic = card::Mic::start(mic_in.clone(), 16_000, 1, Vec::new());
    // The recording tap stops after 0.2 s: the next read fails with an I/O error.
    let _tap = card::Speaker::start(tap.clone(), 16_000, 1, Some(3_200));
    let (audio, mut streams) = LocalAudio::start(&config(
        request("c_mic", 16_000, 1),
        request("c_spk", 16_000, 1),
    ))
    .unwrap();
    let stats = audio.stats().clone();
    until("the microphone failed", || {
        stats.capture.frames.load(Ordering::Relaxed) > 0
            && !stats.capture.up.load(Ordering::Relaxed)
    });
    // The device is back: the reopened PCM records what is said now.
    drop(_mic);
    let speech = speech();
    let _tap = card::Speaker::start(tap, 16_000, 1, None);
    // Half a second of silence first: what the device read before the new microphone was
    // connected is dropped, and the speech must not be.
    let mut said = vec![0.0; PIPELINE_RATE as usize / 2];
    said.extend_from_slice(&speech);
    let mic = card::Mic::start(mic_in, 16_000, 1, card::interleave(&said, 1));
    until("the microphone is reopened", || {
        stats.capture.reopens.load(Ordering::Relaxed) == 1
            && stats.capture.up.load(Ordering::Relaxed)
            && mic.connected()
    });
    while streams.mic.pop().is_ok() {}
    let heard = record(&mut streams, speech.len() + PIPELINE_RATE as usize);
    assert_similar(
        "the reopened microphone should record the speech",
        &speech,
        &heard,
    );
}

#[test]
fn hark_devices_lists_each_pcm_with_the_rates_it_takes() {
    // Its own configuration, in its own process: listing opens every PCM, and the other
    // tests' PCMs wait on FIFOs.
    let dir = std::env::temp_dir().join(format!("hark-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("asoundrc");
    let body = card::plug_body(&card::playback_body(&dir.join("out.raw")), 44_100, 2)
        + "\nhint { show on description \"test speaker\" }";
    std::fs::write(&conf, format!("pcm.speaker_44k {{\n{body}\n}}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(["devices", "--json"])
        .env("ALSA_CONFIG_PATH", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "speaker_44k")
        .unwrap_or_else(|| panic!("speaker_44k not in {listed}"));
    assert_eq!(d["description"], "test speaker");
    // plug converts: every usual rate is accepted, and up to many channels.
    let rates: Vec<u64> = d["playback"]["common_rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    assert!(
        rates.contains(&16_000) && rates.contains(&48_000),
        "{rates:?}"
    );
}

/// A signal for the whole process (a child's SIGCHLD, here from baresip or a shell) must not
/// land in a device thread: it cuts a blocked `write` to the card short, and alsa-lib's `file`
/// plugin then aborts the process when the PCM is closed (seen once in CI).
#[test]
fn device_threads_leave_process_signals_to_other_threads() {
    // No such PCMs: the threads run, retrying the open, which is all this needs.
    let (audio, _streams) = LocalAudio::start(&config(
        request("no_such_mic", 16_000, 1),
        request("no_such_spk", 16_000, 1),
    ))
    .unwrap();
    let blocked = |name: &str| -> Option<u64> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let mask = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
            return u64::from_str_radix(mask.trim(), 16).ok();
        }
        None
    };
    let bit = |sig: i32| 1u64 << (sig - 1);
    for name in ["hark-capture", "hark-playback"] {
        until(&format!("{name} blocks SIGCHLD"), || {
            blocked(name).is_some_and(|m| m & bit(libc::SIGCHLD) != 0)
        });
        let mask = blocked(name).unwrap();
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGPIPE] {
            assert_ne!(mask & bit(sig), 0, "{name} should block signal {sig}");
        }
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE] {
            assert_eq!(mask & bit(sig), 0, "{name} must still take fault {sig}");
        }
    }
    // Only theirs: this thread still takes them.
    let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap();
    assert_eq!(
        u64::from_str_radix(own.trim(), 16).unwrap() & bit(libc::SIGCHLD),
        0
    );
    drop(audio);
}
