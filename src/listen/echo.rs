//! Acoustic echo cancellation: removes what the speaker played from what the microphone heard.
//!
//! A kiosk talks through its own loudspeaker while its microphone stays open, so without this
//! the VAD would hear the agent's voice as the user barging in. [`EchoCanceller`] wraps sonora,
//! a pure-Rust port of WebRTC's AEC3 (adaptive linear filter, delay estimator and residual echo
//! suppressor), behind a two-call, 10 ms-frame API: [`EchoCanceller::render`] with what was
//! played, [`EchoCanceller::capture`] with what was recorded. AEC3 finds the speaker-to-mic
//! delay itself (up to about half a second), so the caller only has to feed both streams in
//! step, frame for frame: one `render` per `capture`, silence when nothing plays, and each
//! played frame no later than the microphone frame that hears it.
//!
//! Cost: about 60 µs per 10 ms frame at 16 kHz on a desktop core (`hark bench`). Nothing is
//! allocated per frame (sonora is vendored with a patch for that, see vendor/README.md), except
//! with `agc`: sonora's AGC2 still builds channel copies per frame.

use sonora::config::{AdaptiveDigital, EchoCanceller as Aec3, GainController2, NoiseSuppression};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::config::EchoConfig;

/// The rates AEC3 runs at natively; anything else must be resampled first.
pub const RATES: [u32; 3] = [16_000, 32_000, 48_000];

/// How to build an [`EchoCanceller`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoOptions {
    /// Sample rate (Hz) of both the far-end and the microphone stream, one of [`RATES`]; the
    /// canceller does not resample, so that it can sit right at the sound card.
    pub rate: u32,
    /// WebRTC's own noise suppressor after the echo canceller. Off by default: hark's RNNoise
    /// stage already follows, and two suppressors in a row thin out speech.
    pub noise_suppression: bool,
    /// WebRTC's AGC2 (adaptive digital gain and limiter) after echo cancellation. Off by
    /// default: it changes levels the VAD thresholds were tuned on, and sonora's AGC2 allocates
    /// per frame (about 11 small allocations).
    pub agc: bool,
}

impl Default for EchoOptions {
    /// 16 kHz, the front end's working rate, with echo cancellation only.
    fn default() -> Self {
        Self {
            rate: 16_000,
            noise_suppression: false,
            agc: false,
        }
    }
}

impl EchoOptions {
    /// The options `[listen.echo]` asks for, at `rate`. Whether to cancel at all
    /// (`enabled`) is the caller's choice: it builds no canceller when it is off.
    pub fn from_config(config: &EchoConfig, rate: u32) -> Self {
        Self {
            rate,
            noise_suppression: config.noise_suppression,
            agc: config.agc,
        }
    }
}

/// Why an echo canceller cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    /// AEC3 runs on 10 ms frames at a few fixed rates; resample to one of them first.
    #[error("echo cancellation runs at 16, 32 or 48 kHz, not {0} Hz")]
    Rate(u32),
}

/// What the canceller reports about itself, for logs and `hark bench`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct EchoMetrics {
    /// Frames of microphone audio processed so far.
    pub frames: u64,
    /// AEC3's own estimate of its echo return loss enhancement (dB): how much the linear filter
    /// removes. It leaves out the residual suppressor, so the real reduction is larger.
    pub erle_db: Option<f32>,
    /// Echo return loss (dB): how much quieter the echo is than the far end at the microphone.
    pub erl_db: Option<f32>,
    /// The speaker-to-microphone delay AEC3 has locked on to (ms), once it has found one; a
    /// changing value means the sound card's buffering drifts.
    pub delay_ms: Option<u32>,
}

/// One echo canceller for one microphone and the speaker it hears. Not shared between streams:
/// its filter has learnt one room.
pub struct EchoCanceller {
    apm: AudioProcessing,
    frame: usize,
    frames: u64,
    /// The microphone frame as it came in (sonora reads one buffer and writes another).
    near_in: Vec<f32>,
    /// Where sonora writes the far-end frame back (unchanged, and unused).
    far_out: Vec<f32>,
}

impl std::fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("frame", &self.frame)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl EchoCanceller {
    /// A canceller that has learnt nothing yet: it converges within a couple of seconds of
    /// far-end audio.
    pub fn new(options: &EchoOptions) -> Result<Self, EchoError> {
        if !RATES.contains(&options.rate) {
            return Err(EchoError::Rate(options.rate));
        }
        let config = Config {
            echo_canceller: Some(Aec3::default()),
            noise_suppression: options.noise_suppression.then(NoiseSuppression::default),
            gain_controller2: options.agc.then(|| GainController2 {
                // No analog microphone volume to steer on a kiosk: digital gain only.
                input_volume_controller: false,
                adaptive_digital: Some(AdaptiveDigital::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stream = StreamConfig::new(options.rate, 1);
        let apm = AudioProcessing::builder()
            .config(config)
            .capture_config(stream)
            .render_config(stream)
            .build();
        let frame = options.rate as usize / 100;
        Ok(Self {
            apm,
            frame,
            frames: 0,
            near_in: vec![0.0; frame],
            far_out: vec![0.0; frame],
        })
    }

    /// Samples in one frame (10 ms at the rate it was built for); `render` and `capture` take
    /// exactly this many, as WebRTC's audio processing does.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Feeds one frame of what the speaker played (the far-end reference), in [-1, 1]. Call it
    /// once per [`capture`](Self::capture), with the frame sent to the sound card at the same
    /// time as the microphone frame was read; AEC3 absorbs the fixed delay between them.
    ///
    /// # Panics
    /// If `far` is not [`frame_len`](Self::frame_len) samples long: a wiring bug, not a
    /// run-time condition.
    pub fn render(&mut self, far: &[f32]) {
        self.check(far.len());
        // Cannot fail: the frame length and format were checked at build time and above.
        let _ = self
            .apm
            .process_render_f32(&[far], &mut [&mut self.far_out]);
    }

    /// Cleans one frame of microphone audio in place, in [-1, 1].
    ///
    /// # Panics
    /// If `near` is not [`frame_len`](Self::frame_len) samples long.
    pub fn capture(&mut self, near: &mut [f32]) {
        self.check(near.len());
        self.near_in.copy_from_slice(near);
        // On the (unreachable) error sonora leaves `near` as it was: raw audio, not silence.
        let _ = self
            .apm
            .process_capture_f32(&[&self.near_in], &mut [&mut *near]);
        self.frames += 1;
    }

    /// What AEC3 reports: its ERLE and ERL estimates and the delay it has found.
    pub fn metrics(&self) -> EchoMetrics {
        let stats = self.apm.statistics();
        EchoMetrics {
            frames: self.frames,
            erle_db: stats.echo_return_loss_enhancement.map(|v| v as f32),
            erl_db: stats.echo_return_loss.map(|v| v as f32),
            delay_ms: stats.delay_ms.and_then(|d| u32::try_from(d).ok()),
        }
    }

    fn check(&self, len: usize) {
        assert_eq!(
            len, self.frame,
            "echo canceller takes 10 ms frames of {} samples, got {len}",
            self.frame
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, f: f32, rate: u32, phase: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (std::f32::consts::TAU * f * (i + phase) as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn rates_other_than_aec3s_are_refused() {
        for rate in [8_000, 22_050, 24_000, 44_100] {
            let options = EchoOptions {
                rate,
                ..Default::default()
            };
            assert_eq!(
                EchoCanceller::new(&options).unwrap_err(),
                EchoError::Rate(rate)
            );
        }
    }

    #[test]
    fn frame_is_10_ms_at_every_rate() {
        for rate in RATES {
            let options = EchoOptions {
                rate,
                noise_suppression: true,
                agc: true,
            };
            let aec = EchoCanceller::new(&options).unwrap();
            assert_eq!(aec.frame_len(), rate as usize / 100);
        }
    }

    #[test]
    #[should_panic(expected = "10 ms frames of 160 samples, got 100")]
    fn a_wrong_frame_length_is_a_wiring_bug() {
        let mut aec = EchoCanceller::new(&EchoOptions::default()).unwrap();
        aec.capture(&mut [0.0; 100]);
    }

    #[test]
    fn near_end_passes_when_the_speaker_is_silent() {
        // With nothing played there is no echo to remove: a tone on the microphone comes out
        // at about its level (the high-pass filter and a settling suppressor aside).
        for rate in [16_000, 48_000] {
            let mut aec = EchoCanceller::new(&EchoOptions {
                rate,
                ..Default::default()
            })
            .unwrap();
            let n = aec.frame_len();
            let silence = vec![0.0; n];
            let (mut e_in, mut e_out) = (0.0f64, 0.0f64);
            for f in 0..300 {
                let mut near = sine(n, 440.0, rate, f * n);
                aec.render(&silence);
                let before: f64 = near.iter().map(|s| (s * s) as f64).sum();
                aec.capture(&mut near);
                if f >= 100 {
                    e_in += before;
                    e_out += near.iter().map(|s| (s * s) as f64).sum::<f64>();
                }
            }
            let db = 10.0 * (e_out / e_in).log10();
            assert!(db.abs() < 1.0, "{rate} Hz: near end changed by {db:.1} dB");
            assert_eq!(aec.metrics().frames, 300);
        }
    }

    #[test]
    fn options_follow_the_config() {
        let config = EchoConfig {
            enabled: true,
            noise_suppression: true,
            agc: false,
        };
        let options = EchoOptions::from_config(&config, 48_000);
        assert_eq!(
            options,
            EchoOptions {
                rate: 48_000,
                noise_suppression: true,
                agc: false
            }
        );
    }

    #[test]
    fn canceller_can_move_to_the_audio_thread() {
        fn send<T: Send>() {}
        send::<EchoCanceller>();
    }
}
