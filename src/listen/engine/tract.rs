//! tract-onnx: pure Rust, cross-compiles anywhere, and the fastest engine for Silero.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::plan::SimpleState;

use super::{EngineError, EngineKind, Inference, InputSpec, ModelSpec};

/// A model optimised for fixed input shapes, with its run state kept between calls.
pub(super) struct TractModel {
    name: &'static str,
    shapes: Vec<&'static [usize]>,
    state: SimpleState<TypedFact, Box<dyn TypedOp>>,
}

impl TractModel {
    pub(super) fn load(spec: &ModelSpec, bytes: &[u8]) -> Result<Self, EngineError> {
        let err = |e: TractError| EngineError::Load {
            model: spec.name,
            engine: EngineKind::Tract,
            reason: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(err)?;
        let mut inputs = model.input_outlets().map_err(err)?.to_vec();
        let mut shapes = Vec::new();
        // Walk from the back so removing a constant input keeps earlier indices valid.
        for (ix, input) in spec.inputs.iter().enumerate().rev() {
            match *input {
                InputSpec::F32 { shape, .. } => {
                    model
                        .set_input_fact(ix, f32::fact(shape).into())
                        .map_err(err)?;
                    shapes.push(shape);
                }
                InputSpec::ConstI64 { value, .. } => {
                    let outlet = inputs.remove(ix);
                    let t = tensor0(value).into_arc_tensor();
                    model.nodes[outlet.node].op = Box::new(Const::new(t.clone()).map_err(err)?);
                    model
                        .set_outlet_fact(outlet, InferenceFact::from(t.into_tensor()))
                        .map_err(err)?;
                }
            }
        }
        shapes.reverse();
        model.set_input_outlets(&inputs).map_err(err)?;
        super::tract_patch::unfold_softmax_dequantize(&mut model).map_err(err)?;
        let plan = model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        let state = plan.spawn().map_err(err)?;
        Ok(Self {
            name: spec.name,
            shapes,
            state,
        })
    }
}

impl Inference for TractModel {
    fn run(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), EngineError> {
        let err = |e: TractError| EngineError::Run {
            model: self.name,
            engine: EngineKind::Tract,
            reason: format!("{e:#}"),
        };
        let values = inputs
            .iter()
            .zip(&self.shapes)
            .map(|(data, shape)| Tensor::from_shape(shape, data).map(TValue::from))
            .collect::<TractResult<TVec<_>>>()
            .map_err(err)?;
        let result = self.state.run(values).map_err(err)?;
        for (out, value) in outputs.iter_mut().zip(result.iter()) {
            let plain = value.try_as_plain_ram().map_err(err)?;
            out.copy_from_slice(plain.as_slice::<f32>().map_err(err)?);
        }
        Ok(())
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }
}
