//! Echo cancellation on real speech in a simulated room: the far end (what the kiosk's
//! loudspeaker plays) is one real recording, the person in front of it another. The speaker's
//! sound reaches the microphone through a room impulse response made here (a pure delay, then
//! an exponentially decaying noise tail with RT60 0.25 s), as loud there as the person, over a
//! low noise floor. The canceller must remove the echo (ERLE), and Silero on its output must still
//! hear the person, including when they start talking over the agent (barge-in), and not hear
//! the agent's echo as speech.

mod common;
mod support;

use common::{energy_regions, speech, store};
use hark::audio::Audio;
use hark::config::ListenConfig;
use hark::listen::echo::{EchoCanceller, EchoOptions};
use hark::listen::vad::{VadEvent, VadEventType};
use hark::listen::{listen_to, ListenEvent, Models};
use support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const RATE: u32 = 16_000;
const FRAME: usize = RATE as usize / 100;
/// Seconds the canceller may take to converge before ERLE is measured.
const CONVERGENCE: f64 = 2.0;
/// Seconds the far end plays; the scene ends with the person talking alone.
const FAR_SECONDS: f64 = 20.0;
const SCENE_SECONDS: f64 = 25.0;
/// Where the person starts each utterance: two over the agent (double talk), one alone.
const NEAR_STARTS: [f64; 3] = [6.0, 13.0, 21.0];
/// Share of the person's speech (as the VAD hears it without echo) that must be heard while the
/// agent talks over them. AEC3's residual suppressor ducks the near end in double talk (up to a
/// third of it here); barge-in only needs the onset, after which the agent stops.
const DOUBLE_TALK_SHARE: f64 = 0.5;

/// xorshift64: deterministic noise for the room and the microphone.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Speaker-to-microphone impulse response: silence for `delay_ms`, a direct path, then a noise
/// tail decaying by 60 dB over `rt60` seconds.
fn room(delay_ms: f64, rt60: f64, seed: u64) -> Vec<f32> {
    let d = (delay_ms / 1e3 * RATE as f64) as usize;
    let tail = (rt60 * RATE as f64) as usize;
    let mut rng = Rng(seed);
    let mut h = vec![0.0; d + tail];
    h[d] = 0.7;
    for i in 1..tail {
        let t = i as f64 / RATE as f64;
        h[d + i] = 0.1 * rng.uniform() * 10f32.powf((-3.0 * t / rt60) as f32);
    }
    h
}

fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for (k, &g) in h.iter().enumerate() {
        for (y, &x) in y[k..].iter_mut().zip(x) {
            *y += g * x;
        }
    }
    y
}

/// RMS (dBFS) of the active frames of `x`: those within 40 dB of its loudest.
fn level(x: &[f32]) -> f32 {
    let power: Vec<f32> = x
        .chunks(FRAME)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
        .collect();
    let loudest = power.iter().cloned().fold(0.0, f32::max);
    let active: Vec<f32> = power.into_iter().filter(|&p| p > loudest * 1e-4).collect();
    10.0 * (active.iter().sum::<f32>() / active.len() as f32).log10()
}

/// Scales `x` so that its [`level`] is `target_db` dBFS.
fn normalise(x: &mut [f32], target_db: f32) {
    let gain = 10f32.powf((target_db - level(x)) / 20.0);
    x.iter_mut().for_each(|s| *s *= gain);
}

fn secs(t: f64) -> usize {
    (t * RATE as f64) as usize
}

/// The microphone's view of one scene, and what is known about it.
struct Scene {
    /// What the loudspeaker played.
    far: Vec<f32>,
    /// The echo alone, as it reaches the microphone.
    echo: Vec<f32>,
    /// The microphone: echo + the person + noise.
    mic: Vec<f32>,
    /// The person alone with the noise: what a perfect canceller would leave.
    ideal: Vec<f32>,
    /// The person's utterances (start, end) in seconds.
    near: Vec<(f64, f64)>,
}

/// Agent speech (two_cities.wav, at -20 dBFS) through a room with `delay_ms` of delay, the
/// person (endgame_nagg_nell.wav, a different voice and recording) as loud as the echo at the
/// microphone, white noise at -60 dBFS.
fn scene(delay_ms: f64) -> Scene {
    let n = secs(SCENE_SECONDS);
    let mut far = speech("two_cities.wav").resampled(RATE).samples;
    far.truncate(secs(FAR_SECONDS));
    normalise(&mut far, -20.0);
    far.resize(n, 0.0);
    let echo = convolve(&far, &room(delay_ms, 0.25, 7));

    let person = speech("endgame_nagg_nell.wav").resampled(RATE);
    let utterances: Vec<(usize, usize)> = energy_regions(&person)
        .into_iter()
        .filter(|(s, e)| e - s >= secs(1.5))
        .take(NEAR_STARTS.len())
        .collect();
    assert_eq!(utterances.len(), NEAR_STARTS.len(), "too few utterances");
    let mut near = vec![0.0f32; n];
    let mut known = Vec::new();
    for (&(s, e), &start) in utterances.iter().zip(&NEAR_STARTS) {
        let len = (e - s).min(secs(3.5));
        let at = secs(start);
        near[at..at + len].copy_from_slice(&person.samples[s..s + len]);
        known.push((start, start + len as f64 / RATE as f64));
    }
    normalise(&mut near, level(&echo));

    let mut rng = Rng(99);
    let noise = 10f32.powf(-60.0 / 20.0) * 3f32.sqrt(); // uniform with RMS -60 dBFS
    let ideal: Vec<f32> = (0..n).map(|i| near[i] + noise * rng.uniform()).collect();
    let mic = (0..n).map(|i| echo[i] + ideal[i]).collect();
    Scene {
        far,
        echo,
        mic,
        ideal,
        near: known,
    }
}

/// Runs far end and microphone at `rate` through a fresh canceller, 10 ms at a time as the
/// sound card would deliver them.
fn cancel(rate: u32, far: &[f32], mic: &[f32]) -> (Vec<f32>, EchoCanceller) {
    let mut aec = EchoCanceller::new(&EchoOptions {
        rate,
        ..Default::default()
    })
    .unwrap();
    let frame = aec.frame_len();
    assert_eq!(frame, rate as usize / 100);
    let mut out = mic.to_vec();
    for (far, near) in far.chunks_exact(frame).zip(out.chunks_exact_mut(frame)) {
        aec.render(far);
        aec.capture(near);
    }
    (out, aec)
}

/// Whether sample time `t` is within `margin` seconds of the person talking.
fn near_talk(scene: &Scene, t: f64, margin: f64) -> bool {
    scene
        .near
        .iter()
        .any(|&(s, e)| t >= s - margin && t < e + margin)
}

/// ERLE (dB) over the echo-only stretches after convergence: 10 ms frames where the far end is
/// audible at the microphone (echo above -50 dBFS) and the person is not talking. `mic` and
/// `out` are 10 ms frames at any rate, in step with the scene's.
fn erle(scene: &Scene, mic: &[f32], out: &[f32]) -> f64 {
    let frame = mic.len() * FRAME / scene.mic.len();
    let (mut before, mut after) = (0.0f64, 0.0f64);
    let energy = |x: &[f32]| x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
    for (i, echo) in scene.echo.chunks_exact(FRAME).enumerate() {
        let t = (i * FRAME) as f64 / RATE as f64;
        if t < CONVERGENCE || near_talk(scene, t, 0.5) || energy(echo) / (FRAME as f64) < 1e-5 {
            continue;
        }
        let range = i * frame..((i + 1) * frame).min(mic.len());
        before += energy(&mic[range.clone()]);
        after += energy(&out[range]);
    }
    assert!(before > 0.0, "no echo-only stretch to measure");
    10.0 * (before / after).log10()
}

/// Silero's events on a 16 kHz recording, as the front end would see it (without RNNoise, so
/// the canceller alone answers for the echo).
fn vad_events(samples: &[f32]) -> Vec<VadEvent> {
    let mut config = ListenConfig::default();
    config.denoise.enabled = false;
    config.turn.enabled = false;
    let mut models = Models::load(&config, &store()).unwrap();
    let audio = Audio {
        rate: RATE,
        samples: samples.to_vec(),
    };
    let (events, _) = listen_to(&config, &mut models, &audio, false).unwrap();
    events
        .into_iter()
        .filter_map(|e| match e {
            ListenEvent::Vad(v) => Some(v),
            ListenEvent::Turn(_) => None,
        })
        .collect()
}

/// Speech segments (start, end) in seconds from the VAD's events.
fn segments(events: &[VadEvent], duration: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut open = None;
    for e in events {
        match e.event_type {
            VadEventType::StartOfSpeech => open = Some(e.boundary),
            VadEventType::EndOfSpeech => {
                if let Some(s) = open.take() {
                    out.push((s, e.boundary));
                }
            }
        }
    }
    if let Some(s) = open {
        out.push((s, duration));
    }
    out
}

/// Seconds of VAD speech outside the person's utterances (with 0.5 s either side for the VAD's
/// own hangover), while the far end was playing: the echo heard as a barge-in.
fn speech_in_echo_only(scene: &Scene, segments: &[(f64, f64)]) -> f64 {
    let step = 0.01;
    let mut total = 0.0;
    let mut t = CONVERGENCE;
    while t < FAR_SECONDS {
        if !near_talk(scene, t, 0.5) && segments.iter().any(|&(s, e)| t >= s && t < e) {
            total += step;
        }
        t += step;
    }
    total
}

/// The whole scene at one room delay: ERLE, the person heard, the echo not, barge-in on time.
fn check_scene(delay_ms: f64) {
    let scene = scene(delay_ms);
    let (out, aec) = cancel(RATE, &scene.far, &scene.mic);
    let erle = erle(&scene, &scene.mic, &out);
    let metrics = aec.metrics();
    eprintln!(
        "delay {delay_ms} ms: ERLE {erle:.1} dB after {CONVERGENCE} s; AEC3 reports {metrics:?}"
    );
    assert!(erle >= 20.0, "ERLE {erle:.1} dB at {delay_ms} ms delay");
    // AEC3 found the room's delay (its estimate is in whole blocks of 4 ms).
    let found = metrics.delay_ms.expect("no delay estimate") as f64;
    assert!(
        (found - delay_ms).abs() <= 8.0,
        "AEC3 locked on to {found} ms, the room has {delay_ms} ms"
    );

    // Without the canceller the VAD takes the agent's echo for a person: the scene is hard
    // enough for the checks below to mean something.
    let raw = segments(&vad_events(&scene.mic), SCENE_SECONDS);
    let raw_false = speech_in_echo_only(&scene, &raw);
    assert!(
        raw_false > 5.0,
        "only {raw_false:.1} s of echo taken for speech without cancellation"
    );

    let events = vad_events(&out);
    let found = segments(&events, SCENE_SECONDS);
    let false_speech = speech_in_echo_only(&scene, &found);
    eprintln!(
        "  VAD speech in echo-only stretches: {raw_false:.1} s raw, {false_speech:.2} s cancelled; segments {found:.2?}"
    );
    assert!(
        false_speech <= 0.3,
        "{false_speech:.2} s of echo taken for speech after cancellation: {found:.2?}"
    );

    let ideal = segments(&vad_events(&scene.ideal), SCENE_SECONDS);
    let overlap = |segs: &[(f64, f64)], start: f64, end: f64| -> f64 {
        segs.iter()
            .map(|&(s, e)| (e.min(end) - s.max(start)).max(0.0))
            .sum()
    };
    let mut failures = Vec::new();
    for &(start, end) in &scene.near {
        let alone = start >= FAR_SECONDS;
        // The person is heard for most of each utterance, compared with no echo at all...
        let heard = overlap(&found, start, end);
        let clean = overlap(&ideal, start, end);
        // ...and the VAD says so within 300 ms of them starting, over the agent or not.
        let latency = events
            .iter()
            .find(|e| {
                e.event_type == VadEventType::StartOfSpeech
                    && e.timestamp >= start - 0.1
                    && e.timestamp <= end
            })
            .map(|e| e.timestamp - start);
        eprintln!(
            "  utterance {start:.2}-{end:.2} s ({}): {heard:.2} s heard of {clean:.2} s heard without echo; start of speech after {:?} ms",
            if alone { "alone" } else { "double talk" },
            latency.map(|l| (l * 1e3).round())
        );
        let share = if alone { 0.9 } else { DOUBLE_TALK_SHARE };
        if heard < share * clean {
            failures.push(format!(
                "utterance at {start:.2} s: {heard:.2} s heard, {clean:.2} s without echo"
            ));
        }
        match latency {
            Some(l) if l <= 0.3 => {}
            _ => failures.push(format!(
                "utterance at {start:.2} s: start of speech {latency:?} s"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\ncancelled: {found:.2?}\nwithout echo: {ideal:.2?}"
    );
}

#[test]
fn room_with_30_ms_delay_echo_removed_and_person_heard() {
    check_scene(30.0);
}

#[test]
fn room_with_100_ms_delay_echo_removed_and_person_heard() {
    check_scene(100.0);
}

/// A sound card at 48 kHz can feed the canceller directly: the same room (30 ms), the far end
/// and the microphone at 48 kHz.
#[test]
fn at_48_khz_the_echo_is_removed_too() {
    let scene = scene(30.0);
    let up = |x: &[f32]| {
        Audio {
            rate: RATE,
            samples: x.to_vec(),
        }
        .resampled(48_000)
        .samples
    };
    let (far, mic) = (up(&scene.far), up(&scene.mic));
    let (out, aec) = cancel(48_000, &far, &mic);
    let erle = erle(&scene, &mic, &out);
    eprintln!(
        "48 kHz, delay 30 ms: ERLE {erle:.1} dB; AEC3 reports {:?}",
        aec.metrics()
    );
    assert!(erle >= 20.0, "ERLE {erle:.1} dB at 48 kHz");
}

/// Render + capture of `frames`, counting this thread's allocations.
fn count_allocations(frames: &[(&[f32], &[f32])], mut step: impl FnMut(&[f32], &[f32])) -> usize {
    let (warm, counted) = frames.split_at(300);
    // Past every first-time path (delay found, filter converged) before counting.
    for (far, mic) in warm {
        step(far, mic);
    }
    alloc::start();
    for (far, mic) in &counted[..500] {
        step(far, mic);
    }
    alloc::stop()
}

/// The canceller runs on the front-end thread, which must not allocate per frame: sonora's AEC3
/// made about 35 allocations per frame until the vendored patch (vendor/README.md).
#[test]
fn echo_cancellation_allocates_nothing_per_frame_with_or_without_its_noise_suppressor() {
    let scene = scene(30.0);
    let frames: Vec<(&[f32], &[f32])> = scene
        .far
        .chunks_exact(FRAME)
        .zip(scene.mic.chunks_exact(FRAME))
        .collect();
    for noise_suppression in [false, true] {
        let options = EchoOptions {
            noise_suppression,
            ..EchoOptions::default()
        };
        let mut aec = EchoCanceller::new(&options).unwrap();
        let mut near = vec![0.0f32; FRAME];
        let allocations = count_allocations(&frames, |far, mic| {
            near.copy_from_slice(mic);
            aec.render(far);
            aec.capture(&mut near);
        });
        assert_eq!(
            allocations, 0,
            "{allocations} allocations in 500 frames (noise suppression {noise_suppression})"
        );
    }
}
