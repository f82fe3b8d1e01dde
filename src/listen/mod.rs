//! The on-device listening front end: denoise → resample to 16 kHz → VAD → turn detection.
//!
//! [`FrontEnd`] is push-style: feed it audio at any rate, get [`ListenEvent`]s back. It keeps the
//! last 8 s of 16 kHz audio in a fixed ring, so when speech ends Smart Turn sees the user's turn
//! (from its start, minus the VAD padding) without any allocation per frame.

pub mod denoise;
pub mod echo;
pub mod engine;
pub mod live;
pub mod models;
pub mod plot;
pub mod timeline;
pub mod turn;
pub mod vad;

use std::time::{Duration, Instant};

use crate::audio::{Audio, Resampler};
use crate::config::ListenConfig;
use denoise::Denoiser;
use engine::{EngineError, EngineKind, LoadOptions};
use models::{ModelError, ModelId, ModelSource, ModelStore};
use turn::{mel::N_SAMPLES, Eou, SmartTurn};
use vad::{Segmenter, SileroVad, VadEvent, VadEventType};

/// The front end's working rate.
pub const SAMPLE_RATE: u32 = vad::SAMPLE_RATE;

/// Something the front end noticed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ListenEvent {
    /// Speech started or ended.
    Vad(VadEvent),
    /// Smart Turn's verdict at a pause.
    Turn(TurnEvent),
}

/// Smart Turn's verdict at the end of a stretch of speech.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TurnEvent {
    /// Stream time (s) of the verdict (the end-of-speech event's time).
    pub timestamp: f64,
    /// Probability the user has finished.
    pub probability: f32,
    /// `probability >= threshold`: the turn is over and the next speech starts a new one.
    pub complete: bool,
    /// Seconds of turn audio the model saw (at most 8).
    pub audio_seconds: f64,
}

/// Why the front end cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A model file is missing or corrupt.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A model failed to load or run.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The input rate is not one hark takes.
    #[error("input rate {0} Hz is not supported; expected 8000 to 48000 Hz")]
    Rate(u32),
    /// The echo canceller refused its options.
    #[error(transparent)]
    Echo(#[from] echo::EchoError),
    /// The front end's thread could not be started.
    #[error("cannot start the front end thread: {0}")]
    Thread(std::io::Error),
}

/// How a model was loaded, for `hark check` and `hark bench`.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// Which model.
    pub id: ModelId,
    /// Where its bytes came from.
    pub source: ModelSource,
    /// The engine running it.
    pub engine: EngineKind,
    /// Time to read, verify, load and optimise it.
    pub load_time: Duration,
}

/// The loaded models, ready to be given to any number of front ends in turn.
pub struct Models {
    vad: SileroVad,
    turn: Option<SmartTurn>,
    report: Vec<LoadedModel>,
}

impl Models {
    /// Loads what `config` needs from `store`.
    pub fn load(config: &ListenConfig, store: &ModelStore) -> Result<Models, ListenError> {
        let ort_lib = store.onnxruntime_library();
        let mut report = Vec::new();
        let vad = load_timed(store, ModelId::SileroVad, &mut report, |bytes| {
            let options = LoadOptions {
                choice: config.vad.engine,
                threads: 1,
                onnxruntime: ort_lib.as_deref(),
            };
            let vad = SileroVad::new(bytes, options)?;
            Ok((vad.engine(), vad))
        })?;
        let turn = config
            .turn
            .enabled
            .then(|| {
                load_timed(store, ModelId::SmartTurn, &mut report, |bytes| {
                    let options = LoadOptions {
                        choice: config.turn.engine,
                        threads: config.turn.threads,
                        onnxruntime: ort_lib.as_deref(),
                    };
                    let turn = SmartTurn::new(bytes, options, config.turn.threshold)?;
                    Ok((turn.engine(), turn))
                })
            })
            .transpose()?;
        Ok(Models { vad, turn, report })
    }

    /// What was loaded, from where, on which engine, in how long.
    pub fn report(&self) -> &[LoadedModel] {
        &self.report
    }

    /// Silero, for benchmarks.
    pub fn vad_mut(&mut self) -> &mut SileroVad {
        &mut self.vad
    }

    /// Smart Turn, when enabled.
    pub fn turn_mut(&mut self) -> Option<&mut SmartTurn> {
        self.turn.as_mut()
    }
}

/// Reads, verifies and loads one model, recording where it came from and how long it took.
fn load_timed<T>(
    store: &ModelStore,
    id: ModelId,
    report: &mut Vec<LoadedModel>,
    load: impl FnOnce(&[u8]) -> Result<(EngineKind, T), EngineError>,
) -> Result<T, ListenError> {
    let t = Instant::now();
    let (bytes, source) = store.load(id)?;
    let (engine, model) = load(&bytes)?;
    report.push(LoadedModel {
        id,
        source,
        engine,
        load_time: t.elapsed(),
    });
    Ok(model)
}

/// The last 8 s of 16 kHz audio, and where the current turn began.
struct History {
    ring: Vec<f32>,
    /// Samples written so far (stream position).
    written: u64,
    /// Stream position where the current turn began, if one is open.
    turn_start: Option<u64>,
    /// A contiguous copy of the turn for the model.
    scratch: Vec<f32>,
}

impl History {
    fn new() -> Self {
        Self {
            ring: vec![0.0; N_SAMPLES],
            written: 0,
            turn_start: None,
            scratch: Vec::with_capacity(N_SAMPLES),
        }
    }

    fn push(&mut self, samples: &[f32]) {
        for &s in samples {
            let i = (self.written % N_SAMPLES as u64) as usize;
            self.ring[i] = s;
            self.written += 1;
        }
    }

    /// The turn's audio (at most the last 8 s), oldest first.
    fn turn(&mut self) -> &[f32] {
        let start = self.turn_start.unwrap_or(self.written);
        let n = (self.written - start).min(N_SAMPLES as u64) as usize;
        self.scratch.clear();
        for pos in self.written - n as u64..self.written {
            self.scratch
                .push(self.ring[(pos % N_SAMPLES as u64) as usize]);
        }
        &self.scratch
    }
}

/// Input conditioning: audio at any rate in, 16 kHz (denoised or not) out.
enum Conditioner {
    /// Straight to 16 kHz.
    Direct(Box<Resampler>),
    /// Up to RNNoise's 48 kHz, denoise, down to 16 kHz.
    Denoise(Box<DenoiseChain>),
}

/// The denoising path, with its two intermediate buffers reused on every push.
struct DenoiseChain {
    up: Resampler,
    rnnoise: Denoiser,
    down: Resampler,
    at_48k: Vec<f32>,
    clean: Vec<f32>,
}

impl Conditioner {
    fn new(input_rate: u32, denoise: bool) -> Self {
        if !denoise {
            return Conditioner::Direct(Box::new(Resampler::new(input_rate, SAMPLE_RATE)));
        }
        Conditioner::Denoise(Box::new(DenoiseChain {
            up: Resampler::new(input_rate, denoise::SAMPLE_RATE),
            rnnoise: Denoiser::new(),
            down: Resampler::new(denoise::SAMPLE_RATE, SAMPLE_RATE),
            at_48k: Vec::with_capacity(8192),
            clean: Vec::with_capacity(8192),
        }))
    }

    /// Conditions `input`, appending 16 kHz audio to `out`.
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        match self {
            Conditioner::Direct(r) => r.process(input, out),
            Conditioner::Denoise(c) => {
                c.at_48k.clear();
                c.up.process(input, &mut c.at_48k);
                c.clean.clear();
                c.rnnoise.process(&c.at_48k, &mut c.clean);
                c.down.process(&c.clean, out);
            }
        }
    }

    /// Flushes every stage at the end of the stream, appending the tail to `out`.
    fn flush(&mut self, out: &mut Vec<f32>) {
        match self {
            Conditioner::Direct(r) => r.flush(out),
            Conditioner::Denoise(c) => {
                c.at_48k.clear();
                c.up.flush(&mut c.at_48k);
                c.clean.clear();
                c.rnnoise.process(&c.at_48k, &mut c.clean);
                c.rnnoise.flush(&mut c.clean);
                c.down.process(&c.clean, out);
                c.down.flush(out);
            }
        }
    }
}

/// One stream's front end. Build one per microphone, call, or file.
pub struct FrontEnd<'m> {
    models: &'m mut Models,
    input: Conditioner,
    segmenter: Segmenter,
    padding: u64,
    history: History,
    /// 16 kHz audio waiting for a whole VAD window.
    pending: Vec<f32>,
    trace: Option<Vec<WindowTrace>>,
}

/// Per-window VAD probabilities, kept when tracing (plots).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WindowTrace {
    /// Window start (s).
    pub t: f64,
    /// Silero's raw probability.
    pub raw: f32,
    /// After smoothing.
    pub smoothed: f32,
}

impl<'m> FrontEnd<'m> {
    /// A front end for a stream at `input_rate`, using `models` (reset for the new stream).
    pub fn new(
        config: &ListenConfig,
        models: &'m mut Models,
        input_rate: u32,
    ) -> Result<Self, ListenError> {
        if !crate::audio::wav::RATES.contains(&input_rate) {
            return Err(ListenError::Rate(input_rate));
        }
        models.vad.reset();
        Ok(Self {
            models,
            input: Conditioner::new(input_rate, config.denoise.enabled),
            segmenter: Segmenter::new(&config.vad, vad::WINDOW as f64 / SAMPLE_RATE as f64),
            padding: (config.vad.padding * SAMPLE_RATE as f32) as u64,
            history: History::new(),
            pending: Vec::with_capacity(8192),
            trace: None,
        })
    }

    /// Keep every window's probabilities (for plots); costs memory proportional to the stream.
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(Vec::new());
        self
    }

    /// The trace, when enabled.
    pub fn trace(&self) -> Option<&[WindowTrace]> {
        self.trace.as_deref()
    }

    /// Feeds samples at the input rate; appends what happened to `events`.
    pub fn push(
        &mut self,
        samples: &[f32],
        events: &mut Vec<ListenEvent>,
    ) -> Result<(), ListenError> {
        self.input.process(samples, &mut self.pending);
        self.run_windows(events)
    }

    /// Ends the stream: flushes the resamplers and denoiser, pads the last window with silence.
    pub fn finish(&mut self, events: &mut Vec<ListenEvent>) -> Result<(), ListenError> {
        self.input.flush(&mut self.pending);
        let n = self.pending.len().next_multiple_of(vad::WINDOW);
        self.pending.resize(n, 0.0);
        self.run_windows(events)
    }

    fn run_windows(&mut self, events: &mut Vec<ListenEvent>) -> Result<(), ListenError> {
        let mut used = 0;
        while self.pending.len() - used >= vad::WINDOW {
            let window = &self.pending[used..used + vad::WINDOW];
            used += vad::WINDOW;
            self.history.push(window);
            let raw = self.models.vad.probability(window)?;
            let event = self.segmenter.push(raw);
            if let Some(trace) = &mut self.trace {
                trace.push(WindowTrace {
                    t: (self.history.written - vad::WINDOW as u64) as f64 / SAMPLE_RATE as f64,
                    raw,
                    smoothed: self.segmenter.smoothed(),
                });
            }
            let Some(event) = event else { continue };
            events.push(ListenEvent::Vad(event));
            match event.event_type {
                VadEventType::StartOfSpeech => {
                    if self.history.turn_start.is_none() {
                        let start = (event.boundary * SAMPLE_RATE as f64) as u64;
                        self.history.turn_start = Some(start.saturating_sub(self.padding));
                    }
                }
                VadEventType::EndOfSpeech => {
                    if let Some(turn) = self.models.turn.as_mut() {
                        let audio = self.history.turn();
                        let probability = turn.predict(audio)?;
                        let complete = probability >= turn.threshold();
                        events.push(ListenEvent::Turn(TurnEvent {
                            timestamp: event.timestamp,
                            probability,
                            complete,
                            audio_seconds: audio.len() as f64 / SAMPLE_RATE as f64,
                        }));
                        if complete {
                            self.history.turn_start = None;
                        }
                    } else {
                        self.history.turn_start = None;
                    }
                }
            }
        }
        self.pending.drain(..used);
        Ok(())
    }
}

/// Runs a whole recording through a fresh front end, 10 ms at a time as a sound card would
/// deliver it. Returns the events and, when `trace` is set, every window's probabilities.
pub fn listen_to(
    config: &ListenConfig,
    models: &mut Models,
    audio: &Audio,
    trace: bool,
) -> Result<(Vec<ListenEvent>, Vec<WindowTrace>), ListenError> {
    let mut fe = FrontEnd::new(config, models, audio.rate)?;
    if trace {
        fe = fe.with_trace();
    }
    let mut events = Vec::new();
    for chunk in audio.samples.chunks((audio.rate / 100) as usize) {
        fe.push(chunk, &mut events)?;
    }
    fe.finish(&mut events)?;
    let trace = fe.trace.take().unwrap_or_default();
    Ok((events, trace))
}
