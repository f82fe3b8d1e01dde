//! Voice activity: Silero VAD probabilities turned into `start_of_speech` / `end_of_speech`.
//!
//! Two parts: [`SileroVad`] runs the model on 32 ms windows (512 samples at 16 kHz plus the
//! previous window's last 64 samples as context, recurrent state carried between calls), and
//! [`Segmenter`] turns probabilities into events with the VideoSDK Silero plugin's rules:
//! exponential smoothing, start/end hysteresis, minimum speech and silence durations.

use crate::config::VadConfig;

use super::engine::{self, EngineError, Inference, InputSpec, LoadOptions, ModelSpec};

/// Model rate.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per window (32 ms).
pub const WINDOW: usize = 512;
/// Samples of the previous window prepended as context.
pub const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

/// Silero's inputs: audio with context, the sample rate (constant), and the recurrent state.
pub const SPEC: ModelSpec = ModelSpec {
    name: "silero-vad",
    inputs: &[
        InputSpec::F32 {
            name: "input",
            shape: &[1, CONTEXT + WINDOW],
        },
        InputSpec::ConstI64 {
            name: "sr",
            value: SAMPLE_RATE as i64,
        },
        InputSpec::F32 {
            name: "state",
            shape: &[2, 1, 128],
        },
    ],
    outputs: &[1, STATE],
};

/// Silero VAD on one stream. Keeps its context and state; `reset` starts a new stream.
pub struct SileroVad {
    model: Box<dyn Inference>,
    input: [f32; CONTEXT + WINDOW],
    state: [f32; STATE],
    next_state: [f32; STATE],
}

impl SileroVad {
    /// Loads the model on the chosen engine.
    pub fn new(bytes: &[u8], options: LoadOptions<'_>) -> Result<Self, EngineError> {
        Ok(Self {
            model: engine::load(
                &SPEC,
                bytes,
                LoadOptions {
                    threads: 1,
                    ..options
                },
            )?,
            input: [0.0; CONTEXT + WINDOW],
            state: [0.0; STATE],
            next_state: [0.0; STATE],
        })
    }

    /// The engine running the model.
    pub fn engine(&self) -> engine::EngineKind {
        self.model.kind()
    }

    /// Forgets the stream: zero context and state.
    pub fn reset(&mut self) {
        self.input = [0.0; CONTEXT + WINDOW];
        self.state = [0.0; STATE];
    }

    /// Speech probability of the next 512-sample window (16 kHz, [-1, 1]). Does not allocate
    /// on the Rust side; the engine may.
    pub fn probability(&mut self, window: &[f32]) -> Result<f32, EngineError> {
        assert_eq!(window.len(), WINDOW, "Silero takes 512-sample windows");
        self.input[CONTEXT..].copy_from_slice(window);
        let mut prob = [0.0f32];
        self.model.run(
            &[&self.input, &self.state],
            &mut [&mut prob, &mut self.next_state],
        )?;
        std::mem::swap(&mut self.state, &mut self.next_state);
        self.input.copy_within(WINDOW.., 0);
        Ok(prob[0])
    }
}

/// Which VAD event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VadEventType {
    /// Speech began (reported once `min_speech` of it has been heard).
    StartOfSpeech,
    /// Speech ended (reported once `min_silence` of silence has followed it).
    EndOfSpeech,
}

/// The spec's `VADData`, with the segment boundary the event refers to.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct VadEvent {
    /// Start or end.
    pub event_type: VadEventType,
    /// Whether the user is speaking after this event.
    pub is_speech: bool,
    /// Smoothed probability at the window that triggered the event.
    pub confidence: f32,
    /// Stream time (s) when the event is emitted.
    pub timestamp: f64,
    /// Stream time (s) the speech began (start) or was last heard (end), from the raw
    /// probability so that smoothing does not shift it.
    pub boundary: f64,
    /// Speech heard so far in this segment (s).
    pub speech_duration: f64,
    /// Silence since the speech was last heard (s); 0 on start.
    pub silence_duration: f64,
}

/// The plugin's segmentation rules, free of any model, so they can be tested on their own.
#[derive(Debug, Clone)]
pub struct Segmenter {
    threshold: f32,
    start: f32,
    end: f32,
    alpha: f32,
    min_speech: f64,
    min_silence: f64,
    window: f64,
    smoothed: f32,
    speaking: bool,
    /// Time the current candidate or confirmed speech began.
    speech_start: f64,
    speech_run: f64,
    /// Start of the current run of raw probabilities at or above the nominal threshold.
    raw_rise: Option<f64>,
    /// End of the last window whose raw probability was at or above the nominal threshold.
    last_voiced: f64,
    silence_run: f64,
    windows: u64,
}

impl Segmenter {
    /// Rules from `[listen.vad]`, for `window` seconds per probability.
    pub fn new(config: &VadConfig, window: f64) -> Self {
        Self {
            threshold: config.threshold,
            start: config.start_threshold(),
            end: config.end_threshold(),
            alpha: config.smoothing,
            min_speech: config.min_speech as f64,
            min_silence: config.min_silence as f64,
            window,
            smoothed: 0.0,
            speaking: false,
            speech_start: 0.0,
            speech_run: 0.0,
            raw_rise: None,
            last_voiced: 0.0,
            silence_run: 0.0,
            windows: 0,
        }
    }

    /// Whether the user is speaking.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// The smoothed probability after the last window.
    pub fn smoothed(&self) -> f32 {
        self.smoothed
    }

    /// Feeds the next window's raw probability; returns an event when the state changes.
    pub fn push(&mut self, prob: f32) -> Option<VadEvent> {
        let t0 = self.windows as f64 * self.window;
        self.windows += 1;
        let t1 = t0 + self.window;
        self.smoothed = if self.windows == 1 {
            prob
        } else {
            self.alpha * prob + (1.0 - self.alpha) * self.smoothed
        };
        // Decisions use the smoothed probability (robust to blips); boundaries use the raw one,
        // which does not lag, against the nominal threshold (the plugin's "is speech"), so
        // segment times match where speech really starts and stops.
        if prob >= self.threshold {
            self.raw_rise.get_or_insert(t0);
            self.last_voiced = t1;
        } else {
            self.raw_rise = None;
        }
        let p = self.smoothed;
        if !self.speaking {
            if p >= self.start {
                if self.speech_run == 0.0 {
                    self.speech_start = self.raw_rise.unwrap_or(t0).min(t0);
                }
                self.speech_run += self.window;
                if self.speech_run >= self.min_speech - 1e-9 {
                    self.speaking = true;
                    self.silence_run = 0.0;
                    return Some(self.event(VadEventType::StartOfSpeech, t1));
                }
            } else {
                self.speech_run = 0.0;
            }
            return None;
        }
        if p >= self.end {
            self.speech_run += self.silence_run + self.window;
            self.silence_run = 0.0;
            None
        } else {
            self.silence_run += self.window;
            if self.silence_run >= self.min_silence - 1e-9 {
                self.speaking = false;
                let ev = self.event(VadEventType::EndOfSpeech, t1);
                self.speech_run = 0.0;
                self.silence_run = 0.0;
                Some(ev)
            } else {
                None
            }
        }
    }

    fn event(&self, event_type: VadEventType, now: f64) -> VadEvent {
        let start = event_type == VadEventType::StartOfSpeech;
        VadEvent {
            event_type,
            is_speech: start,
            confidence: self.smoothed,
            timestamp: now,
            boundary: if start {
                self.speech_start
            } else {
                self.last_voiced
            },
            speech_duration: self.speech_run,
            silence_duration: if start { 0.0 } else { self.silence_run },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: f64 = 0.032;

    fn run(probs: &[f32]) -> Vec<VadEvent> {
        let mut s = Segmenter::new(&VadConfig::default(), W);
        probs.iter().filter_map(|&p| s.push(p)).collect()
    }

    #[test]
    fn speech_then_silence_gives_one_start_and_one_end_with_durations() {
        let mut probs = vec![0.0; 10];
        probs.extend(vec![0.95; 40]); // 1.28 s of speech from 0.32 s
        probs.extend(vec![0.02; 30]);
        let ev = run(&probs);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0].event_type, VadEventType::StartOfSpeech);
        assert!((ev[0].boundary - 0.32).abs() < 0.05, "{:?}", ev[0]);
        assert!(ev[0].is_speech && ev[0].timestamp < 0.45);
        assert_eq!(ev[1].event_type, VadEventType::EndOfSpeech);
        assert!(!ev[1].is_speech);
        assert!((ev[1].boundary - 1.6).abs() < 0.1, "{:?}", ev[1]);
        assert!(ev[1].silence_duration >= 0.4 - 1e-9);
        assert!(ev[1].timestamp >= ev[1].boundary + 0.4 - 1e-9);
        assert!((ev[1].speech_duration - 1.28).abs() < 0.1, "{:?}", ev[1]);
    }

    #[test]
    fn a_blip_shorter_than_smoothing_allows_is_not_speech() {
        // One loud window: the EMA keeps it below the start threshold.
        let mut probs = vec![0.0; 10];
        probs.push(0.9);
        probs.extend(vec![0.0; 10]);
        assert!(run(&probs).is_empty());
    }

    #[test]
    fn pauses_shorter_than_min_silence_do_not_end_speech() {
        let mut probs = vec![0.9; 20];
        probs.extend(vec![0.0; 8]); // 0.256 s
        probs.extend(vec![0.9; 20]);
        probs.extend(vec![0.0; 20]);
        let ev = run(&probs);
        assert_eq!(
            ev.iter().map(|e| e.event_type).collect::<Vec<_>>(),
            [VadEventType::StartOfSpeech, VadEventType::EndOfSpeech]
        );
    }

    #[test]
    fn hysteresis_keeps_speech_between_the_thresholds() {
        // 0.3 is below start (0.4) but above end (0.25): it cannot start speech, but sustains it.
        let mut probs = vec![0.3; 20];
        assert!(run(&probs).is_empty());
        probs = vec![0.9; 10];
        probs.extend(vec![0.3; 40]);
        let ev = run(&probs);
        assert_eq!(ev.len(), 1, "{ev:?}");
    }
}
