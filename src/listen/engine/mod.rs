//! ONNX inference behind one small trait, so each model can run on tract (pure Rust, everywhere,
//! the only choice on armv7) or onnxruntime (a C library loaded at run time where it exists).

#[cfg(feature = "onnxruntime")]
mod exact_int8;
mod tract;
mod tract_patch;

#[cfg(feature = "onnxruntime")]
mod ort;

use std::path::Path;

use serde::Deserialize;

/// Which engine a model should run on, as written in `hark.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// onnxruntime where its library is found and loads, tract otherwise.
    #[default]
    Auto,
    /// tract-onnx, always available.
    Tract,
    /// onnxruntime through `ort` (feature `onnxruntime`), loaded with dlopen.
    Onnxruntime,
}

/// The engine a model actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// tract-onnx.
    Tract,
    /// onnxruntime.
    Onnxruntime,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
        })
    }
}

/// One input of a model, in the model's input order.
#[derive(Debug, Clone, Copy)]
pub enum InputSpec {
    /// An `f32` tensor given on every run, with a fixed shape.
    F32 {
        /// ONNX input name.
        name: &'static str,
        /// Concrete shape (batch 1).
        shape: &'static [usize],
    },
    /// An `i64` scalar that never changes (Silero's `sr`): folded into the graph on tract.
    ConstI64 {
        /// ONNX input name.
        name: &'static str,
        /// The value.
        value: i64,
    },
}

/// What an engine needs to know to load a model: its inputs and how many outputs to return.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Human name for messages.
    pub name: &'static str,
    /// Inputs in ONNX order.
    pub inputs: &'static [InputSpec],
    /// Element count of each output, in ONNX order.
    pub outputs: &'static [usize],
}

/// A loaded model, ready to run. One per stream: it is not shared between threads.
pub trait Inference: Send {
    /// Runs once. `inputs` are the model's `F32` inputs in order; each output is copied into
    /// the matching slice of `outputs`, whose lengths are the spec's.
    fn run(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), EngineError>;

    /// Which engine this is.
    fn kind(&self) -> EngineKind;
}

/// Inference failed to load or to run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model bytes could not be turned into a runnable graph.
    #[error("{model}: cannot load on {engine}: {reason}")]
    Load {
        /// Model name.
        model: &'static str,
        /// Engine.
        engine: EngineKind,
        /// The engine's message.
        reason: String,
    },
    /// A run failed.
    #[error("{model}: inference failed on {engine}: {reason}")]
    Run {
        /// Model name.
        model: &'static str,
        /// Engine.
        engine: EngineKind,
        /// The engine's message.
        reason: String,
    },
    /// `engine = "onnxruntime"` was asked for but cannot be had.
    #[error("{model}: onnxruntime is not available: {reason}")]
    Unavailable {
        /// Model name.
        model: &'static str,
        /// Why.
        reason: String,
    },
}

/// Options shared by all engines.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions<'a> {
    /// Requested engine.
    pub choice: EngineChoice,
    /// Intra-op threads (onnxruntime; tract runs single-threaded).
    pub threads: usize,
    /// `libonnxruntime.so` to load, if one was found.
    pub onnxruntime: Option<&'a Path>,
}

/// Loads `bytes` (an ONNX file) on the engine `options` ask for.
pub fn load(
    spec: &ModelSpec,
    bytes: &[u8],
    options: LoadOptions<'_>,
) -> Result<Box<dyn Inference>, EngineError> {
    match options.choice {
        EngineChoice::Tract => Ok(Box::new(tract::TractModel::load(spec, bytes)?)),
        EngineChoice::Onnxruntime => load_ort(spec, bytes, options),
        EngineChoice::Auto => match load_ort(spec, bytes, options) {
            Ok(m) => Ok(m),
            Err(EngineError::Unavailable { reason, .. }) => {
                tracing::debug!(model = spec.name, %reason, "onnxruntime unavailable, using tract");
                Ok(Box::new(tract::TractModel::load(spec, bytes)?))
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(feature = "onnxruntime")]
fn load_ort(
    spec: &ModelSpec,
    bytes: &[u8],
    options: LoadOptions<'_>,
) -> Result<Box<dyn Inference>, EngineError> {
    let lib = options
        .onnxruntime
        .ok_or_else(|| EngineError::Unavailable {
            model: spec.name,
            reason: "libonnxruntime.so not found (fetch it with `python3 models/fetch.py`, or set \
                 [models] onnxruntime)"
                .into(),
        })?;
    let env = ort::init(lib).map_err(|reason| EngineError::Unavailable {
        model: spec.name,
        reason,
    })?;
    Ok(Box::new(ort::OrtModel::load(
        env,
        spec,
        bytes,
        options.threads,
    )?))
}

#[cfg(not(feature = "onnxruntime"))]
fn load_ort(
    spec: &ModelSpec,
    _bytes: &[u8],
    _options: LoadOptions<'_>,
) -> Result<Box<dyn Inference>, EngineError> {
    Err(EngineError::Unavailable {
        model: spec.name,
        reason: "this build has no onnxruntime support (feature `onnxruntime`)".into(),
    })
}
