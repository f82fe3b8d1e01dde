//! Makes onnxruntime's int8 arithmetic exact on x86 CPUs without VNNI.
//!
//! Smart Turn is a QDQ int8 model: u8 activations times s8 weights. On x86 without VNNI,
//! onnxruntime multiplies u8 by s8 with `VPMADDUBSW`, which saturates its 16-bit pair sums (a
//! limitation onnxruntime documents). Measured on an AVX2-only EPYC: 7 of 49 end-of-turn
//! decisions on real speech flipped and the probability moved by 0.13 on average (up to
//! 0.89), both in Python's onnxruntime and in hark. The same weights stored as u8 with the zero
//! point moved by 128 are the same numbers, and onnxruntime's u8×u8 kernel widens to 16 bits
//! before multiplying, so it cannot saturate: the output then equals a VNNI CPU's (to 1e-7
//! here), at about 15 % more time per inference. CPUs with VNNI, and ARM, are exact already
//! and keep the model as shipped.

use prost::Message;
use std::collections::HashSet;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto, TensorProto};

/// Whether this CPU's onnxruntime int8 kernel saturates (x86 without AVX-512 VNNI or AVX-VNNI).
pub(super) fn kernel_saturates() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `model` (ONNX bytes) with every int8 weight that only feeds `DequantizeLinear` (with an
/// int8 zero point) stored as u8 instead; `None` when there is none, or the bytes do not
/// decode (onnxruntime then reports the model as it is).
pub(super) fn unsigned_weights(model: &[u8]) -> Option<Vec<u8>> {
    let mut proto = ModelProto::decode(model).ok()?;
    let graph = proto.graph.as_mut()?;
    let int8: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == DataType::Int8 as i32 && t.segment.is_none())
        .map(|t| t.name.clone())
        .collect();
    // Weight and zero point of each dequantize whose both are int8 initializers.
    let pairs: Vec<(String, String)> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .filter_map(|n| Some((n.input.first()?.clone(), n.input.get(2)?.clone())))
        .filter(|(x, zp)| int8.contains(x) && int8.contains(zp))
        .collect();
    let mut convert: HashSet<String> = pairs.iter().flat_map(|(x, zp)| [x, zp]).cloned().collect();
    // A tensor any other node (or another input slot) reads stays as it is...
    for node in &graph.node {
        for (slot, name) in node.input.iter().enumerate() {
            let dequantized = node.op_type == "DequantizeLinear" && (slot == 0 || slot == 2);
            if !dequantized {
                convert.remove(name);
            }
        }
    }
    // ...and so does its partner, and theirs: a dequantize's two must agree in type.
    loop {
        let before = convert.len();
        for (x, zp) in &pairs {
            if !(convert.contains(x) && convert.contains(zp)) {
                convert.remove(x);
                convert.remove(zp);
            }
        }
        if convert.len() == before {
            break;
        }
    }
    if convert.is_empty() {
        return None;
    }
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| convert.contains(&t.name))
    {
        to_unsigned(t);
    }
    for info in graph.input.iter_mut().chain(graph.value_info.iter_mut()) {
        if convert.contains(&info.name) {
            if let Some(type_proto::Value::TensorType(t)) =
                info.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.elem_type = DataType::Uint8 as i32;
            }
        }
    }
    Some(proto.encode_to_vec())
}

/// s8 → u8 by adding 128, in whichever field the values are stored.
fn to_unsigned(t: &mut TensorProto) {
    for b in &mut t.raw_data {
        *b ^= 0x80; // (b as i8 + 128) as u8
    }
    for v in &mut t.int32_data {
        *v += 128;
    }
    t.data_type = DataType::Uint8 as i32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{GraphProto, NodeProto};

    fn int8(name: &str, raw: Vec<u8>, int32: Vec<i32>) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type: DataType::Int8 as i32,
            dims: vec![(raw.len() + int32.len()) as i64],
            raw_data: raw,
            int32_data: int32,
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![format!("{op}-out")],
            ..Default::default()
        }
    }

    fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> Vec<u8> {
        ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn dequantized_int8_weights_become_u8_with_the_zero_point_moved_by_128() {
        let bytes = model(
            vec![node("DequantizeLinear", &["w", "scale", "zp"])],
            vec![
                int8("w", vec![0x80, 0xff, 0x00, 0x7f], vec![]), // -128, -1, 0, 127
                int8("zp", vec![], vec![0]),
            ],
        );
        let patched = ModelProto::decode(&unsigned_weights(&bytes).unwrap()[..]).unwrap();
        let g = patched.graph.unwrap();
        let w = g.initializer.iter().find(|t| t.name == "w").unwrap();
        let zp = g.initializer.iter().find(|t| t.name == "zp").unwrap();
        assert_eq!(w.data_type, DataType::Uint8 as i32);
        assert_eq!(w.raw_data, vec![0, 127, 128, 255]);
        assert_eq!(zp.data_type, DataType::Uint8 as i32);
        assert_eq!(zp.int32_data, vec![128]);
        // (w - zp) is unchanged for every value: -128-0 = 0-128, ..., 127-0 = 255-128.
    }

    #[test]
    fn a_weight_another_op_also_reads_is_left_as_it_is() {
        let bytes = model(
            vec![
                node("DequantizeLinear", &["w", "scale", "zp"]),
                node("Identity", &["w"]),
            ],
            vec![int8("w", vec![1, 2], vec![]), int8("zp", vec![], vec![0])],
        );
        // Nor its zero point, which must keep the weight's type: nothing is left to rewrite.
        assert!(unsigned_weights(&bytes).is_none());
    }

    #[test]
    fn a_model_without_int8_weights_or_that_does_not_decode_is_not_rewritten() {
        let bytes = model(vec![node("Relu", &["x"])], vec![]);
        assert!(unsigned_weights(&bytes).is_none());
        assert!(unsigned_weights(b"\xff\xff not onnx").is_none());
    }
}
