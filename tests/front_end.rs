//! The listening front end on real human speech: where it hears speech, where it does not,
//! and what Smart Turn makes of finished sentences versus cuts in the middle of a word.

mod common;

use common::{energy_regions, speech, store};
use hark::audio::Audio;
use hark::config::ListenConfig;
use hark::listen::timeline::{Segment, Timeline};
use hark::listen::{listen_to, Models};

const RATE: u32 = 16_000;

/// The recordings whose pauses are clean enough for energy to say exactly where speech is:
/// beckett.wav breathes at -45 dBFS between phrases, so it is left out of boundary tests.
const CLEAN: [&str; 3] = ["endgame_nagg_nell.wav", "two_cities.wav", "clone-test.wav"];

/// Real utterances (cut at energy boundaries) joined by `gap` seconds of digital silence.
/// Returns the recording and each utterance's (start, end) in seconds.
fn utterances_with_silences(gap: f64) -> (Audio, Vec<(f64, f64)>) {
    let mut samples = vec![0.0f32; (gap * RATE as f64) as usize];
    let mut known = Vec::new();
    for name in CLEAN {
        let audio = speech(name).resampled(RATE);
        for (s, e) in energy_regions(&audio) {
            let start = samples.len() as f64 / RATE as f64;
            samples.extend_from_slice(&audio.samples[s..e]);
            known.push((start, samples.len() as f64 / RATE as f64));
            samples.extend(std::iter::repeat_n(0.0, (gap * RATE as f64) as usize));
        }
    }
    (
        Audio {
            rate: RATE,
            samples,
        },
        known,
    )
}

fn segments(config: &ListenConfig, audio: &Audio) -> Vec<Segment> {
    let mut models = Models::load(config, &store()).unwrap();
    let (events, _) = listen_to(config, &mut models, audio, false).unwrap();
    Timeline::new("test".into(), audio.rate, audio.duration(), vec![], events).segments
}

#[test]
fn vad_finds_each_real_speech_region_within_150_ms() {
    let (audio, known) = utterances_with_silences(1.5);
    assert!(
        known.len() >= 12,
        "only {} utterances found in the speech files",
        known.len()
    );
    let found = segments(&ListenConfig::default(), &audio);
    let mut worst: f64 = 0.0;
    for (i, (&(start, end), seg)) in known.iter().zip(&found).enumerate() {
        let (ds, de) = ((seg.start - start).abs(), (seg.end - end).abs());
        worst = worst.max(ds).max(de);
        assert!(
            ds <= 0.150 && de <= 0.150,
            "utterance {i}: known {start:.3}-{end:.3} s, VAD {:.3}-{:.3} s",
            seg.start,
            seg.end
        );
    }
    assert_eq!(found.len(), known.len(), "known {known:?}\nfound {found:?}");
    eprintln!(
        "{} utterances, worst boundary error {:.0} ms",
        known.len(),
        worst * 1e3
    );
}

#[test]
fn silence_and_white_noise_at_minus_30_dbfs_are_not_speech() {
    let silence = Audio {
        rate: RATE,
        samples: vec![0.0; RATE as usize * 10],
    };
    // Uniform white noise with RMS at -30 dBFS (xorshift; deterministic).
    let rms = 10f32.powf(-30.0 / 20.0);
    let amp = rms * 3f32.sqrt();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise = (0..RATE as usize * 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect();
    let noise = Audio {
        rate: RATE,
        samples: noise,
    };
    for denoise in [true, false] {
        let mut config = ListenConfig::default();
        config.denoise.enabled = denoise;
        assert_eq!(
            segments(&config, &silence),
            vec![],
            "silence, denoise {denoise}"
        );
        assert_eq!(
            segments(&config, &noise),
            vec![],
            "noise, denoise {denoise}"
        );
    }
}

#[test]
fn resampling_and_denoise_keep_speech_detectable() {
    let (audio, known) = utterances_with_silences(1.2);
    for rate in [8_000, 44_100, 48_000] {
        let resampled = audio.resampled(rate);
        for denoise in [true, false] {
            let mut config = ListenConfig::default();
            config.denoise.enabled = denoise;
            let found = segments(&config, &resampled);
            assert_eq!(
                found.len(),
                known.len(),
                "{rate} Hz, denoise {denoise}: {found:?}"
            );
            for (&(start, end), seg) in known.iter().zip(&found) {
                assert!(
                    (seg.start - start).abs() <= 0.2 && (seg.end - end).abs() <= 0.2,
                    "{rate} Hz, denoise {denoise}: known {start:.3}-{end:.3}, VAD {:.3}-{:.3}",
                    seg.start,
                    seg.end
                );
            }
        }
    }
}
