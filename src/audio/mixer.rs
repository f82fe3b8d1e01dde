//! The output mixer between TTS and the transport: agent speech plus optional "thinking" and
//! background sounds, one frame at a time.
//!
//! The reference (spec 10 §3.14, spec 20 §8) adds background bytes to the outgoing track; here the
//! sum is `speech + thinking * volume + background * volume`, saturated to [-1, 1]. Clips are
//! decoded and resampled once, when loaded; [`Mixer::mix`] only adds and never allocates.
//!
//! Which sounds play follows the reference session:
//! - thinking plays from [`Mixer::start_thinking`] (the user stopped talking) until
//!   [`Mixer::stop_thinking`] or the first frame of agent speech, looping;
//! - a background started with `override_thinking = false` is exclusive: thinking is silenced
//!   while it plays and starts again from its beginning when it stops, if the agent is still
//!   thinking; with `override_thinking = true` thinking layers over it.
//!
//! Deliberate differences from the Python, each a bug there:
//! - a new background replaces the old one (Python starts a second player and loses the first);
//! - thinking asked for while an exclusive background plays starts when the background stops
//!   (Python drops the request, so a long LLM turn after music ends is silent);
//! - thinking is not resumed after a background if speech stopped it meanwhile (Python resumes it
//!   over the agent's answer);
//! - a short last speech frame is padded with silence and played (the Python track keeps a tail
//!   under 20 ms buffered forever).

use std::path::Path;
use std::sync::Arc;

use super::{read_wav, read_wav_bytes, Audio, WavError};

/// Reference volume of the thinking sound (`set_thinking_audio`).
pub const DEFAULT_THINKING_VOLUME: f32 = 0.3;

/// Why a clip cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The WAV file could not be read.
    #[error(transparent)]
    Wav(#[from] WavError),
    /// A clip without samples cannot play or loop.
    #[error("clip has no samples")]
    Empty,
}

/// Why the mixer refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    /// The mixer needs a sample rate and a frame length above zero.
    #[error("mixer needs a rate and frame length above zero (got {rate} Hz, {frame_len} samples)")]
    ZeroSize {
        /// Requested rate.
        rate: u32,
        /// Requested frame length.
        frame_len: usize,
    },
    /// A clip at another rate would play at the wrong pitch and speed.
    #[error("clip is at {clip} Hz but the mixer runs at {mixer} Hz")]
    RateMismatch {
        /// The clip's rate.
        clip: u32,
        /// The mixer's rate.
        mixer: u32,
    },
    /// Volumes are finite gains of zero or more.
    #[error("volume {0} is not a finite gain >= 0")]
    Volume(f32),
    /// The output buffer is not one frame.
    #[error("output frame has {got} samples, expected {expected}")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// The mixer's frame length.
        expected: usize,
    },
    /// More speech than fits in one frame would be cut off.
    #[error("speech has {got} samples, more than a frame of {max}")]
    SpeechLength {
        /// Samples given.
        got: usize,
        /// The mixer's frame length.
        max: usize,
    },
}

/// Mono samples at a known rate, shared: loaded once, played by any number of mixers.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    rate: u32,
    samples: Arc<[f32]>,
}

impl Clip {
    /// A clip of these samples at `rate`, or [`ClipError::Empty`].
    pub fn new(rate: u32, samples: impl Into<Arc<[f32]>>) -> Result<Self, ClipError> {
        let samples = samples.into();
        if samples.is_empty() {
            return Err(ClipError::Empty);
        }
        Ok(Self { rate, samples })
    }

    /// A recording resampled (once, here) to the mixer's `rate`.
    pub fn from_audio(audio: &Audio, rate: u32) -> Result<Self, ClipError> {
        let audio = audio.resampled(rate);
        Self::new(rate, audio.samples)
    }

    /// A WAV file, resampled to `rate`.
    pub fn load(path: &Path, rate: u32) -> Result<Self, ClipError> {
        Self::from_audio(&read_wav(path)?, rate)
    }

    /// WAV bytes (an embedded sound), resampled to `rate`.
    pub fn load_bytes(bytes: &[u8], rate: u32) -> Result<Self, ClipError> {
        Self::from_audio(&read_wav_bytes(bytes)?, rate)
    }

    /// Samples per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The samples, never empty.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }
}

/// How a background sound plays; the defaults are `Agent.play_background_audio`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackgroundOptions {
    /// Gain applied to the clip.
    pub volume: f32,
    /// Start again from the beginning at the end, until stopped.
    pub looping: bool,
    /// Let thinking play over this background; `false` makes the background exclusive.
    pub override_thinking: bool,
}

impl Default for BackgroundOptions {
    fn default() -> Self {
        Self {
            volume: 1.0,
            looping: false,
            override_thinking: true,
        }
    }
}

/// What one [`Mixer::mix`] call played, for metrics and state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MixReport {
    /// Thinking audio was in this frame.
    pub thinking: bool,
    /// Background audio was in this frame.
    pub background: bool,
    /// A non-looping background reached its end in this frame (the reference's "stop" event).
    pub background_ended: bool,
}

/// A clip being played: where it is, how loud.
#[derive(Debug)]
struct Voice {
    clip: Clip,
    pos: usize,
    volume: f32,
    looping: bool,
}

impl Voice {
    fn new(clip: Clip, volume: f32, looping: bool) -> Self {
        Self {
            clip,
            pos: 0,
            volume,
            looping,
        }
    }

    /// Adds the next `out.len()` samples into `out`; false once a non-looping clip has ended.
    fn add_into(&mut self, out: &mut [f32]) -> bool {
        let samples = &self.clip.samples[..];
        let mut i = 0;
        while i < out.len() {
            let n = (out.len() - i).min(samples.len() - self.pos);
            for (o, s) in out[i..i + n]
                .iter_mut()
                .zip(&samples[self.pos..self.pos + n])
            {
                *o += s * self.volume;
            }
            i += n;
            self.pos += n;
            if self.pos == samples.len() {
                if !self.looping {
                    return false;
                }
                self.pos = 0;
            }
        }
        true
    }
}

/// Mixes one output frame at a time from agent speech, thinking and background sounds.
#[derive(Debug)]
pub struct Mixer {
    rate: u32,
    frame_len: usize,
    /// The configured thinking sound and its volume.
    thinking_clip: Option<(Clip, f32)>,
    /// The agent is thinking: between `start_thinking` and `stop_thinking` or speech.
    thinking_wanted: bool,
    thinking: Option<Voice>,
    background: Option<Voice>,
    /// The playing background lets thinking layer over it.
    override_thinking: bool,
}

impl Mixer {
    /// A silent mixer producing frames of `frame_len` samples at `rate`.
    pub fn new(rate: u32, frame_len: usize) -> Result<Self, MixError> {
        if rate == 0 || frame_len == 0 {
            return Err(MixError::ZeroSize { rate, frame_len });
        }
        Ok(Self {
            rate,
            frame_len,
            thinking_clip: None,
            thinking_wanted: false,
            thinking: None,
            background: None,
            override_thinking: false,
        })
    }

    /// Output rate; clips must be at this rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples per output frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Sets (or with `None` removes) the looping thinking sound; applies at once, from its start.
    pub fn set_thinking(&mut self, clip: Option<Clip>, volume: f32) -> Result<(), MixError> {
        if let Some(clip) = &clip {
            self.check(clip, volume)?;
        }
        self.thinking_clip = clip.map(|c| (c, volume));
        self.thinking = None;
        self.update_thinking();
        Ok(())
    }

    /// The agent started thinking: play the thinking sound unless an exclusive background is on
    /// (then it starts when that stops). Already playing: carries on, not restarted.
    pub fn start_thinking(&mut self) {
        self.thinking_wanted = true;
        self.update_thinking();
    }

    /// The agent stopped thinking: silence the thinking sound.
    pub fn stop_thinking(&mut self) {
        self.thinking_wanted = false;
        self.thinking = None;
    }

    /// Plays `clip` as the background, replacing any current one.
    pub fn play_background(&mut self, clip: Clip, opts: BackgroundOptions) -> Result<(), MixError> {
        self.check(&clip, opts.volume)?;
        self.background = Some(Voice::new(clip, opts.volume, opts.looping));
        self.override_thinking = opts.override_thinking;
        self.update_thinking();
        Ok(())
    }

    /// Stops the background; thinking silenced by it comes back if the agent is still thinking.
    pub fn stop_background(&mut self) {
        self.background = None;
        self.override_thinking = false;
        self.update_thinking();
    }

    /// The thinking sound is playing.
    pub fn is_thinking_playing(&self) -> bool {
        self.thinking.is_some()
    }

    /// A background sound is playing.
    pub fn is_background_playing(&self) -> bool {
        self.background.is_some()
    }

    /// Mixes one frame into `out` (exactly one frame long): `speech` (at most a frame; a shorter
    /// one is padded with silence, `None` is silence) plus the sounds, saturated to [-1, 1].
    /// Speech stops the thinking sound. Never allocates.
    pub fn mix(&mut self, speech: Option<&[f32]>, out: &mut [f32]) -> Result<MixReport, MixError> {
        if out.len() != self.frame_len {
            return Err(MixError::FrameLength {
                got: out.len(),
                expected: self.frame_len,
            });
        }
        let spoken = speech.unwrap_or(&[]);
        if spoken.len() > self.frame_len {
            return Err(MixError::SpeechLength {
                got: spoken.len(),
                max: self.frame_len,
            });
        }
        if speech.is_some() {
            self.stop_thinking();
        }
        out[..spoken.len()].copy_from_slice(spoken);
        out[spoken.len()..].fill(0.0);

        let mut report = MixReport::default();
        // Thinking first: if the background ends in this frame, thinking resumes next frame
        // rather than overlapping the background's tail.
        if let Some(v) = &mut self.thinking {
            report.thinking = true;
            if !v.add_into(out) {
                self.thinking = None;
            }
        }
        if let Some(v) = &mut self.background {
            report.background = true;
            if !v.add_into(out) {
                report.background_ended = true;
                self.stop_background();
            }
        }
        for s in out.iter_mut() {
            *s = s.clamp(-1.0, 1.0);
        }
        Ok(report)
    }

    /// A clip and volume this mixer can play.
    fn check(&self, clip: &Clip, volume: f32) -> Result<(), MixError> {
        if clip.rate != self.rate {
            return Err(MixError::RateMismatch {
                clip: clip.rate,
                mixer: self.rate,
            });
        }
        if !volume.is_finite() || volume < 0.0 {
            return Err(MixError::Volume(volume));
        }
        Ok(())
    }

    /// Makes the thinking voice match the state: playing iff wanted, configured and not
    /// excluded by the background. A voice that starts, starts from the clip's beginning.
    fn update_thinking(&mut self) {
        let excluded = self.background.is_some() && !self.override_thinking;
        if !self.thinking_wanted || excluded {
            self.thinking = None;
        } else if self.thinking.is_none() {
            if let Some((clip, volume)) = &self.thinking_clip {
                self.thinking = Some(Voice::new(clip.clone(), *volume, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 24_000;

    fn clip(samples: &[f32]) -> Clip {
        Clip::new(RATE, samples.to_vec()).unwrap()
    }

    fn frame(m: &mut Mixer, speech: Option<&[f32]>) -> (Vec<f32>, MixReport) {
        let mut out = vec![9.0; m.frame_len()];
        let r = m.mix(speech, &mut out).unwrap();
        (out, r)
    }

    fn bg(volume: f32, looping: bool, override_thinking: bool) -> BackgroundOptions {
        BackgroundOptions {
            volume,
            looping,
            override_thinking,
        }
    }

    /// A mixer of 4-sample frames with thinking = constant 0.5 at volume 0.2 (0.1 per sample).
    fn with_thinking() -> Mixer {
        let mut m = Mixer::new(RATE, 4).unwrap();
        m.set_thinking(Some(clip(&[0.5; 3])), 0.2).unwrap();
        m
    }

    fn approx(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn defaults_are_the_references() {
        assert_eq!(DEFAULT_THINKING_VOLUME, 0.3);
        assert_eq!(BackgroundOptions::default(), bg(1.0, false, true));
    }

    #[test]
    fn speech_alone_passes_through_and_silence_is_zero() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        let speech = [0.1, -0.2, 0.3, -0.4];
        assert_eq!(frame(&mut m, Some(&speech)).0, speech);
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
    }

    #[test]
    fn short_last_speech_frame_is_padded_python_keeps_it_forever() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        assert_eq!(frame(&mut m, Some(&[0.5, 0.5])).0, [0.5, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn wrong_lengths_and_sizes_are_errors() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        let mut out = [0.0; 3];
        assert_eq!(
            m.mix(None, &mut out),
            Err(MixError::FrameLength {
                got: 3,
                expected: 4
            })
        );
        let mut out = [0.0; 4];
        assert_eq!(
            m.mix(Some(&[0.0; 5]), &mut out),
            Err(MixError::SpeechLength { got: 5, max: 4 })
        );
        assert!(matches!(Mixer::new(0, 4), Err(MixError::ZeroSize { .. })));
        assert!(matches!(
            Mixer::new(RATE, 0),
            Err(MixError::ZeroSize { .. })
        ));
    }

    #[test]
    fn clips_at_another_rate_or_bad_volume_are_refused() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        let other = Clip::new(16_000, vec![0.1]).unwrap();
        assert_eq!(
            m.play_background(other.clone(), BackgroundOptions::default()),
            Err(MixError::RateMismatch {
                clip: 16_000,
                mixer: RATE
            })
        );
        assert!(m.set_thinking(Some(other), 0.3).is_err());
        for v in [-0.1, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                m.play_background(clip(&[0.1]), bg(v, false, true)),
                Err(MixError::Volume(_))
            ));
        }
        assert!(!m.is_background_playing());
        assert!(matches!(Clip::new(RATE, Vec::new()), Err(ClipError::Empty)));
    }

    #[test]
    fn background_volume_is_exact_and_adds_to_speech() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        m.play_background(clip(&[0.5, -0.5, 0.25, 1.0]), bg(0.5, false, true))
            .unwrap();
        let (out, r) = frame(&mut m, Some(&[0.1; 4]));
        approx(&out, &[0.35, -0.15, 0.225, 0.6]);
        assert!(r.background && r.background_ended);
    }

    #[test]
    fn looping_background_wraps_exactly_across_frames() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        m.play_background(clip(&[0.1, 0.2, 0.3]), bg(1.0, true, true))
            .unwrap();
        let mut all = Vec::new();
        for _ in 0..3 {
            let (out, r) = frame(&mut m, None);
            assert!(r.background && !r.background_ended);
            all.extend(out);
        }
        approx(&all, &[0.1, 0.2, 0.3].repeat(4));
        assert!(m.is_background_playing());
    }

    #[test]
    fn clip_shorter_than_a_frame_loops_within_the_frame() {
        let mut m = Mixer::new(RATE, 5).unwrap();
        m.play_background(clip(&[0.1, 0.2]), bg(1.0, true, true))
            .unwrap();
        approx(&frame(&mut m, None).0, &[0.1, 0.2, 0.1, 0.2, 0.1]);
        approx(&frame(&mut m, None).0, &[0.2, 0.1, 0.2, 0.1, 0.2]);
    }

    #[test]
    fn non_looping_background_ends_once_and_stops() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        m.play_background(clip(&[0.1; 6]), bg(1.0, false, true))
            .unwrap();
        let (out, r) = frame(&mut m, None);
        approx(&out, &[0.1; 4]);
        assert!(!r.background_ended);
        let (out, r) = frame(&mut m, None);
        approx(&out, &[0.1, 0.1, 0.0, 0.0]);
        assert!(r.background_ended);
        assert!(!m.is_background_playing());
        let (out, r) = frame(&mut m, None);
        assert_eq!(out, [0.0; 4]);
        assert_eq!(r, MixReport::default());
    }

    #[test]
    fn new_background_replaces_the_old_python_plays_both() {
        let mut m = Mixer::new(RATE, 2).unwrap();
        m.play_background(clip(&[0.1; 2]), bg(1.0, true, true))
            .unwrap();
        m.play_background(clip(&[0.3; 2]), bg(1.0, true, true))
            .unwrap();
        approx(&frame(&mut m, None).0, &[0.3, 0.3]);
    }

    #[test]
    fn thinking_plays_only_after_start_at_its_volume_and_loops() {
        let mut m = with_thinking();
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
        m.start_thinking();
        for _ in 0..5 {
            let (out, r) = frame(&mut m, None);
            approx(&out, &[0.1; 4]);
            assert!(r.thinking);
        }
        m.stop_thinking();
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
    }

    #[test]
    fn thinking_without_a_clip_is_silent() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        m.start_thinking();
        assert!(!m.is_thinking_playing());
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
    }

    #[test]
    fn speech_stops_thinking_and_it_stays_stopped() {
        let mut m = with_thinking();
        m.start_thinking();
        frame(&mut m, None);
        let (out, r) = frame(&mut m, Some(&[0.2; 4]));
        approx(&out, &[0.2; 4]);
        assert!(!r.thinking && !m.is_thinking_playing());
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
    }

    #[test]
    fn start_thinking_while_playing_does_not_restart() {
        let mut m = Mixer::new(RATE, 2).unwrap();
        m.set_thinking(Some(clip(&[0.1, 0.2, 0.3])), 1.0).unwrap();
        m.start_thinking();
        approx(&frame(&mut m, None).0, &[0.1, 0.2]);
        m.start_thinking();
        approx(&frame(&mut m, None).0, &[0.3, 0.1]);
    }

    #[test]
    fn set_thinking_applies_at_once() {
        let mut m = with_thinking();
        m.start_thinking();
        m.set_thinking(None, 0.3).unwrap();
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
        m.set_thinking(Some(clip(&[1.0])), 0.5).unwrap();
        approx(&frame(&mut m, None).0, &[0.5; 4]);
    }

    #[test]
    fn exclusive_background_suppresses_thinking_then_resumes_it_from_the_start() {
        let mut m = Mixer::new(RATE, 2).unwrap();
        m.set_thinking(Some(clip(&[0.1, 0.2, 0.3])), 1.0).unwrap();
        m.start_thinking();
        approx(&frame(&mut m, None).0, &[0.1, 0.2]);
        m.play_background(clip(&[0.5]), bg(1.0, true, false))
            .unwrap();
        assert!(!m.is_thinking_playing());
        let (out, r) = frame(&mut m, None);
        approx(&out, &[0.5, 0.5]);
        assert!(!r.thinking);
        m.start_thinking(); // suppressed, not an error
        approx(&frame(&mut m, None).0, &[0.5, 0.5]);
        m.stop_background();
        approx(&frame(&mut m, None).0, &[0.1, 0.2]);
    }

    #[test]
    fn override_background_lets_thinking_layer_until_speech() {
        let mut m = with_thinking();
        m.start_thinking();
        m.play_background(clip(&[0.5]), bg(1.0, true, true))
            .unwrap();
        let (out, r) = frame(&mut m, None);
        approx(&out, &[0.6; 4]);
        assert!(r.thinking && r.background);
        let (out, _) = frame(&mut m, Some(&[0.1; 4]));
        approx(&out, &[0.6; 4]);
        assert!(!m.is_thinking_playing() && m.is_background_playing());
    }

    #[test]
    fn thinking_asked_during_exclusive_background_starts_after_it_python_drops_it() {
        let mut m = with_thinking();
        m.play_background(clip(&[0.5]), bg(1.0, true, false))
            .unwrap();
        m.start_thinking();
        assert!(!m.is_thinking_playing());
        m.stop_background();
        approx(&frame(&mut m, None).0, &[0.1; 4]);
    }

    #[test]
    fn thinking_not_resumed_after_background_once_speech_began_python_resumes_it() {
        let mut m = with_thinking();
        m.start_thinking();
        m.play_background(clip(&[0.5]), bg(1.0, true, false))
            .unwrap();
        frame(&mut m, Some(&[0.0; 4]));
        m.stop_background();
        assert!(!m.is_thinking_playing());
        assert_eq!(frame(&mut m, None).0, [0.0; 4]);
    }

    #[test]
    fn exclusive_background_ending_by_itself_resumes_thinking_next_frame() {
        let mut m = with_thinking();
        m.start_thinking();
        m.play_background(clip(&[0.5; 3]), bg(1.0, false, false))
            .unwrap();
        let (out, r) = frame(&mut m, None);
        approx(&out, &[0.5, 0.5, 0.5, 0.0]);
        assert!(r.background_ended && !r.thinking);
        let (out, r) = frame(&mut m, None);
        approx(&out, &[0.1; 4]);
        assert!(r.thinking && !r.background);
    }

    #[test]
    fn output_saturates_to_unit_range() {
        let mut m = Mixer::new(RATE, 4).unwrap();
        m.play_background(clip(&[0.8, -0.8, 0.8, -0.8]), bg(1.0, false, true))
            .unwrap();
        let (out, _) = frame(&mut m, Some(&[0.9, -0.9, -0.1, 0.1]));
        approx(&out, &[1.0, -1.0, 0.7, -0.7]);
        let mut m = Mixer::new(RATE, 1).unwrap();
        m.play_background(clip(&[1.0]), bg(5.0, true, true))
            .unwrap();
        assert_eq!(frame(&mut m, None).0, [1.0]);
    }

    #[test]
    fn clip_from_audio_is_resampled_to_the_mixer_rate() {
        let audio = Audio {
            rate: 16_000,
            samples: (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect(),
        };
        let c = Clip::from_audio(&audio, RATE).unwrap();
        assert_eq!(c.rate(), RATE);
        let len = c.samples().len() as i64;
        assert!((len - 24_000).abs() < 240, "{len} samples for 1 s");
        let same = Clip::from_audio(&audio, 16_000).unwrap();
        assert_eq!(same.samples(), &audio.samples[..]);
    }

    #[test]
    fn clip_loads_a_wav_file_and_reports_bad_ones() {
        let dir = std::env::temp_dir().join(format!("hark-mixer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        let audio = Audio {
            rate: 24_000,
            samples: vec![0.25; 480],
        };
        super::super::write_wav(&path, &audio).unwrap();
        let c = Clip::load(&path, RATE).unwrap();
        assert_eq!(c.samples().len(), 480);
        assert!(c.samples().iter().all(|s| (s - 0.25).abs() < 1e-3));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(Clip::load_bytes(&bytes, RATE).unwrap(), c);
        assert!(matches!(
            Clip::load(&dir.join("missing.wav"), RATE),
            Err(ClipError::Wav(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
