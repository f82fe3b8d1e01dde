//! Work-around for a tract 0.23 mis-optimisation of quantised Softmax (Smart Turn v3).
//!
//! During declutter, tract 0.23's `DequantizeLinearF32` walks from each dequantize node along
//! single successors whose axes mapping looks element-wise up to the next `QuantizeLinear`, and
//! replaces the whole `DequantizeLinear -> ... -> QuantizeLinear` chain by a 256-entry u8
//! lookup table. Softmax declares an identity axes mapping, so the QDQ-wrapped attention
//! Softmax (`DequantizeLinear -> Softmax -> QuantizeLinear`) is folded too, although softmax
//! is not element-wise: each attention weight then depends on its own logit only, and Smart
//! Turn's output is wrong (0.28 instead of 0.94 on the Beckett reference window).
//!
//! [`unfold_softmax_dequantize`] rewrites the dequantize node that opens such a chain as plain
//! arithmetic, `(cast::<f32>(x) - zero_point) * scale`, which tract does not fold, so Softmax
//! runs in f32 on the dequantized values as in onnxruntime.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::math::{Mul, Sub};
use tract_onnx::tract_hir::infer::{Factoid, InferenceModelPatch, InferenceNode};
use tract_onnx::tract_hir::internal::BinIntoHir;

/// Rewrites each per-tensor `DequantizeLinear` whose output reaches a Softmax before the next
/// `QuantizeLinear` (the chain tract 0.23 would fold into a per-element lookup table) as
/// `(cast::<f32>(x) - zero_point) * scale`. Returns how many nodes were rewritten; a model
/// without the pattern (e.g. Silero VAD) is left untouched and 0 is returned.
///
/// Call it on the inference model before any typing or optimisation:
/// `onnx().with_ignore_value_info(true).model_for_path(..)` -> `set_input_fact(..)` (optional)
/// -> `unfold_softmax_dequantize(&mut model)` -> `model.into_optimized()` -> `into_runnable()`.
/// (The fold happens in declutter, which `into_optimized` and `into_decluttered` run.)
pub(crate) fn unfold_softmax_dequantize(model: &mut InferenceModel) -> TractResult<usize> {
    let mut targets = vec![];
    for node in model.nodes() {
        if node.op.name() == "DequantizeLinear"
            && per_tensor_params(model, node)?.is_some()
            && feeds_softmax_before_quantize(model, node.id)?
        {
            targets.push(node.id);
        }
    }
    for &id in &targets {
        let node = model.node(id);
        let (scale, zero_point) = per_tensor_params(model, node)?.unwrap();
        let name = node.name.clone();
        let mut patch = InferenceModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let x = patch.wire_node(format!("{name}.unfold.cast"), cast(f32::datum_type()), &[x])?[0];
        let zp = patch.add_const(format!("{name}.unfold.zero_point"), tensor0(zero_point))?;
        let x = patch.wire_node(format!("{name}.unfold.sub"), Sub.into_hir(), &[x, zp])?[0];
        let sc = patch.add_const(format!("{name}.unfold.scale"), tensor0(scale))?;
        let x = patch.wire_node(format!("{name}.unfold.mul"), Mul.into_hir(), &[x, sc])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), x)?;
        patch.apply(model)?;
    }
    if !targets.is_empty() {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(targets.len())
}

/// `(scale, zero_point)` of a `DequantizeLinear` node with constant, single-valued parameters.
/// Per-axis ones are skipped: tract already lowers those to cast/sub/mul, never a lookup table.
fn per_tensor_params(
    model: &InferenceModel,
    node: &InferenceNode,
) -> TractResult<Option<(f32, f32)>> {
    let konst = |ix: usize| -> TractResult<Option<Arc<Tensor>>> {
        Ok(model
            .outlet_fact(node.inputs[ix])?
            .value
            .concretize()
            .filter(|t| t.len() == 1))
    };
    let Some(scale) = konst(1)? else {
        return Ok(None);
    };
    let zero_point = match node.inputs.len() {
        2 => 0.0,
        _ => match konst(2)? {
            Some(zp) => zp.cast_to_scalar::<f32>()?,
            None => return Ok(None),
        },
    };
    Ok(Some((scale.cast_to_scalar::<f32>()?, zero_point)))
}

/// Walks single successors from a dequantize node to the next `QuantizeLinear`, reporting
/// whether a Softmax (or LogSoftmax) lies in between. Over-matching is harmless: the rewrite is
/// exact, it only forgoes a lookup table.
fn feeds_softmax_before_quantize(model: &InferenceModel, dequant: usize) -> TractResult<bool> {
    let mut seen_softmax = false;
    let mut current = dequant;
    while let Some(next) = model.single_succ(current)? {
        let name = next.op.name();
        if name == "QuantizeLinear" {
            return Ok(seen_softmax);
        }
        seen_softmax |= name.contains("Softmax");
        current = next.id;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(file: &str) -> TractResult<InferenceModel> {
        let path = format!("{}/models/{file}", env!("CARGO_MANIFEST_DIR"));
        tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(path)
    }

    #[test]
    fn smart_turn_matches_onnxruntime() -> TractResult<()> {
        let mut model = model("smart-turn-v3.2-cpu.onnx")?;
        model.set_input_fact(0, f32::fact([1, 80, 800]).into())?;
        let rewritten = unfold_softmax_dequantize(&mut model)?;
        assert!(rewritten >= 1, "no DequantizeLinear -> Softmax chain found");
        let plan = model.into_optimized()?.into_runnable()?;

        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/reference/mel-beckett.f32"
        ))?;
        let mel: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let out = plan.run(tvec!(Tensor::from_shape(&[1, 80, 800], &mel)?.into()))?;
        let p = out[0].try_as_plain_ram()?.as_slice::<f32>()?[0];
        // onnxruntime on the same features: tests/data/reference/reference.json, "mel".
        let reference = 0.944_584_f32;
        assert!(
            (p - reference).abs() <= 0.03,
            "tract {p} vs onnxruntime {reference}"
        );
        Ok(())
    }

    #[test]
    fn no_op_on_silero() -> TractResult<()> {
        let mut model = model("silero_vad_op18_ifless.onnx")?;
        let before = model.nodes().len();
        assert_eq!(unfold_softmax_dequantize(&mut model)?, 0);
        assert_eq!(model.nodes().len(), before);
        Ok(())
    }
}
