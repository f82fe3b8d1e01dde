//! End-of-turn detection: is the user done, or only pausing?
//!
//! [`Eou`] is the seam the session uses (the spec's `EOU`: a probability and an inclusive
//! threshold); [`SmartTurn`] is the on-device audio model behind it. Text-based detectors
//! implement the same trait from the transcript.

pub mod mel;

use std::time::{Duration, Instant};

use super::engine::{self, EngineError, EngineKind, Inference, InputSpec, LoadOptions, ModelSpec};
use mel::{LogMel, N_FRAMES, N_MELS, N_SAMPLES};

/// What a turn detector may look at: the user's audio for this turn and, when an STT runs, the
/// transcript so far.
#[derive(Debug, Clone, Copy)]
pub struct TurnContext<'a> {
    /// The user's audio since the turn began, 16 kHz mono, oldest first.
    pub audio: &'a [f32],
    /// The transcript of the turn, if any.
    pub transcript: Option<&'a str>,
}

/// A turn detector (the spec's `EOU`).
pub trait Eou: Send {
    /// A short name for logs and metrics.
    fn label(&self) -> &'static str;

    /// Probability in [0, 1] that the user has finished their turn.
    fn end_of_turn_probability(&mut self, ctx: &TurnContext<'_>) -> Result<f32, EngineError>;

    /// The detector's own threshold.
    fn threshold(&self) -> f32;

    /// `probability >= threshold` (inclusive, as the spec has it); `threshold` overrides the
    /// detector's own.
    fn detect_end_of_utterance(
        &mut self,
        ctx: &TurnContext<'_>,
        threshold: Option<f32>,
    ) -> Result<bool, EngineError> {
        let t = threshold.unwrap_or(self.threshold());
        Ok(self.end_of_turn_probability(ctx)? >= t)
    }
}

/// Smart Turn's single input and output.
pub const SPEC: ModelSpec = ModelSpec {
    name: "smart-turn",
    inputs: &[InputSpec::F32 {
        name: "input_features",
        shape: &[1, N_MELS, N_FRAMES],
    }],
    outputs: &[1],
};

/// How long each part of one prediction took.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnTiming {
    /// Log-mel features.
    pub features: Duration,
    /// The model.
    pub inference: Duration,
}

/// Smart Turn v3.2 on the last 8 s of the user's audio.
pub struct SmartTurn {
    model: Box<dyn Inference>,
    mel: LogMel,
    window: Vec<f32>,
    features: Vec<f32>,
    threshold: f32,
    last: TurnTiming,
}

impl SmartTurn {
    /// Loads the model; `threshold` decides `detect_end_of_utterance`.
    pub fn new(
        bytes: &[u8],
        options: LoadOptions<'_>,
        threshold: f32,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            model: engine::load(&SPEC, bytes, options)?,
            mel: LogMel::new(),
            window: vec![0.0; N_SAMPLES],
            features: vec![0.0; N_MELS * N_FRAMES],
            threshold,
            last: TurnTiming::default(),
        })
    }

    /// The engine running the model.
    pub fn engine(&self) -> EngineKind {
        self.model.kind()
    }

    /// Timing of the last prediction.
    pub fn last_timing(&self) -> TurnTiming {
        self.last
    }

    /// Probability that `audio` (16 kHz, the turn so far) ends a finished turn. Uses the last
    /// 8 s, zero-padded in front when shorter, as Smart Turn was trained.
    pub fn predict(&mut self, audio: &[f32]) -> Result<f32, EngineError> {
        let t = Instant::now();
        let take = audio.len().min(N_SAMPLES);
        let pad = N_SAMPLES - take;
        self.window[..pad].fill(0.0);
        self.window[pad..].copy_from_slice(&audio[audio.len() - take..]);
        self.mel.compute(&self.window, &mut self.features);
        self.last.features = t.elapsed();
        let features = std::mem::take(&mut self.features); // no allocation: moves the buffer
        let p = self.infer(&features);
        self.features = features;
        p
    }

    /// Runs the model on precomputed features (`N_MELS * N_FRAMES`, mel-major).
    pub fn infer(&mut self, features: &[f32]) -> Result<f32, EngineError> {
        let t = Instant::now();
        let mut p = [0.0f32];
        self.model.run(&[features], &mut [&mut p])?;
        self.last.inference = t.elapsed();
        Ok(p[0])
    }
}

impl Eou for SmartTurn {
    fn label(&self) -> &'static str {
        "smart-turn-v3.2"
    }

    fn end_of_turn_probability(&mut self, ctx: &TurnContext<'_>) -> Result<f32, EngineError> {
        self.predict(ctx.audio)
    }

    fn threshold(&self) -> f32 {
        self.threshold
    }
}
