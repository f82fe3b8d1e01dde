//! onnxruntime through `ort`, with the C library loaded at run time (no download at build time).
//! The library ships in PyPI's onnxruntime wheels for x86_64 and aarch64; models/fetch.py gets it.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::{builder::GraphOptimizationLevel, Session, SessionInputValue};
use ort::value::TensorRef;

use super::{exact_int8, EngineError, EngineKind, Inference, InputSpec, ModelSpec};

/// Loads the library once per process; later calls report the first outcome.
pub(super) fn init(lib: &Path) -> Result<&'static Environment, String> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        ort::init_from(lib)
            .map_err(|e| format!("{}: {e}", lib.display()))?
            .with_name("hark")
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

pub(super) struct OrtModel {
    name: &'static str,
    session: Session,
    spec: &'static [InputSpec],
}

impl OrtModel {
    pub(super) fn load(
        env: &Environment,
        spec: &ModelSpec,
        bytes: &[u8],
        threads: usize,
    ) -> Result<Self, EngineError> {
        let err = |e: ort::Error| EngineError::Load {
            model: spec.name,
            engine: EngineKind::Onnxruntime,
            reason: e.to_string(),
        };
        let exact = exact_int8::kernel_saturates()
            .then(|| exact_int8::unsigned_weights(bytes))
            .flatten();
        if exact.is_some() {
            tracing::debug!(
                model = spec.name,
                "int8 weights stored as u8: this CPU's u8 x s8 kernel saturates"
            );
        }
        let bytes = exact.as_deref().unwrap_or(bytes);
        let session = Session::builder(env)
            .map_err(err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.into()))?
            .with_intra_threads(threads)
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?
            // No pre-planned memory pattern: measured 88 -> 76 MB peak RSS for `hark listen`
            // at no cost in speed. (Disabling the CPU arena too saves little more and costs
            // ~10% on Smart Turn.)
            .with_memory_pattern(false)
            .map_err(|e| err(e.into()))?
            .commit_from_memory(bytes)
            .map_err(err)?;
        Ok(Self {
            name: spec.name,
            session,
            spec: spec.inputs,
        })
    }
}

impl Inference for OrtModel {
    fn run(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), EngineError> {
        let name = self.name;
        let err = |e: ort::Error| EngineError::Run {
            model: name,
            engine: EngineKind::Onnxruntime,
            reason: e.to_string(),
        };
        let mut data = inputs.iter();
        let mut feed: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(self.spec.len());
        let consts: Vec<i64> = self
            .spec
            .iter()
            .filter_map(|i| match i {
                InputSpec::ConstI64 { value, .. } => Some(*value),
                _ => None,
            })
            .collect();
        let mut consts = consts.iter();
        for input in self.spec {
            match *input {
                InputSpec::F32 { name, shape } => {
                    let d = data.next().expect("one slice per F32 input");
                    let t = TensorRef::from_array_view((shape, *d)).map_err(err)?;
                    feed.push((name, t.into()));
                }
                InputSpec::ConstI64 { name, .. } => {
                    let v = consts.next().expect("counted above");
                    let t = TensorRef::from_array_view(([0usize; 0], std::slice::from_ref(v)))
                        .map_err(err)?;
                    feed.push((name, t.into()));
                }
            }
        }
        let result = self.session.run(feed).map_err(err)?;
        for (i, out) in outputs.iter_mut().enumerate() {
            let (_, values) = result[i].try_extract_tensor::<f32>().map_err(err)?;
            out.copy_from_slice(values);
        }
        Ok(())
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Onnxruntime
    }
}
