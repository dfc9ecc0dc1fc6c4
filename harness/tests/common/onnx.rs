//! Small ONNX models written in the tests themselves, for signatures no exporter makes.
#![allow(dead_code)]

use std::path::Path;

use candle_onnx::onnx::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use prost::Message;

fn value(name: &str, elem: DataType, dims: &[&str]) -> onnx::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(n) => tensor_shape_proto::dimension::Value::DimValue(n),
                Err(_) => tensor_shape_proto::dimension::Value::DimParam(d.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    onnx::ValueInfoProto {
        name: name.into(),
        r#type: Some(onnx::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(onnx::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<onnx::AttributeProto>,
) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], v: &[f32]) -> onnx::TensorProto {
    onnx::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn int64s(name: &str, v: &[i64]) -> onnx::TensorProto {
    onnx::TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// Four inputs of four types and two outputs of two types (opset 17):
/// `ids` int32 [batch, 6], `mask` bool [batch, 6], `x` float32 [batch, 4], `h` float16
/// [batch, 4]; `scores` float32 [batch, 3] = (x + h) @ W + sum(ids * mask), `positive` int64
/// [batch, 4] = x > 0.
pub fn write_mixed_model(path: &Path) {
    let to = |t: DataType| int_attr("to", t as i32 as i64);
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 7.0).collect();
    let graph = onnx::GraphProto {
        name: "mixed".into(),
        node: vec![
            node("Cast", &["ids"], "ids_f", vec![to(DataType::Float)]),
            node("Cast", &["mask"], "mask_f", vec![to(DataType::Float)]),
            node("Mul", &["ids_f", "mask_f"], "masked", vec![]),
            node(
                "ReduceSum",
                &["masked", "axis1"],
                "total",
                vec![int_attr("keepdims", 1)],
            ),
            node("Cast", &["h"], "h_f", vec![to(DataType::Float)]),
            node("Add", &["x", "h_f"], "xh", vec![]),
            node("MatMul", &["xh", "w"], "proj", vec![]),
            node("Add", &["proj", "total"], "scores", vec![]),
            node("Greater", &["x", "zero"], "gt", vec![]),
            node("Cast", &["gt"], "positive", vec![to(DataType::Int64)]),
        ],
        initializer: vec![
            floats("w", &[4, 3], &w),
            floats("zero", &[], &[0.0]),
            int64s("axis1", &[1]),
        ],
        input: vec![
            value("ids", DataType::Int32, &["batch", "6"]),
            value("mask", DataType::Bool, &["batch", "6"]),
            value("x", DataType::Float, &["batch", "4"]),
            value("h", DataType::Float16, &["batch", "4"]),
        ],
        output: vec![
            value("scores", DataType::Float, &["batch", "3"]),
            value("positive", DataType::Int64, &["batch", "4"]),
        ],
        ..Default::default()
    };
    let model = onnx::ModelProto {
        ir_version: 8,
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "harness tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).expect("writing the test model");
}

/// A model file decoded for a test to change.
pub fn read_model(path: &Path) -> onnx::ModelProto {
    onnx::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// Writes a (possibly changed) model.
pub fn write_model(m: &onnx::ModelProto, path: &Path) {
    std::fs::write(path, m.encode_to_vec()).unwrap();
}
