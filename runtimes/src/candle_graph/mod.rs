//! candle running the model's ONNX graph: the very `model.onnx` ONNX Runtime and tract run,
//! evaluated node by node on candle tensors.
//!
//! The operators come from `candle-onnx` (its `simple_eval`, one node at a time) except those
//! it lacks or mis-handles, which are evaluated here ([`ops`]): LayerNormalization,
//! GlobalAveragePool/GlobalMaxPool, MaxPool with padding, Gemm without a bias or in half
//! precision, the reductions with axes given either way (attribute before opset 13/18, input
//! after), Shape with start/end, multi-axis Unsqueeze/Squeeze, Gather with any index rank,
//! Flatten with a negative axis, Cast to every integer type, HardSigmoid, Constant in all its
//! forms. A graph with an operator neither side has is "unsupported by candle", naming the
//! operators; so is a node candle cannot evaluate at the scenario's shape (found by the trial
//! run in `prepare`).
//!
//! Once at load: initializers and Constant nodes become candle tensors, every node whose
//! inputs are all constant is evaluated (constant folding, as ONNX Runtime and tract do), and
//! each value gets a slot and the node after which it is dropped. A run clones the constant
//! slots (reference counts), evaluates the remaining nodes in order and frees each
//! intermediate after its last use.
//!
//! Integers are computed as i64 (int8/16/32 and uint16/32 widened, as candle-onnx does for
//! int32), booleans as u8. Threads: as the native engine's ([`CandleThreads`]).

mod ops;
mod proto;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx;

use crate::candle_rt::CandleThreads;
use crate::model::{ModelFiles, ModelInfo};
use crate::tensor::{DType as HostDType, HostTensor, TensorData};
use crate::{Availability, LoadOptions, Loaded, Runtime, RuntimeError};

pub(crate) const NAME: &str = "candle";

/// The operators candle-onnx 0.11.1's `simple_eval` evaluates (its match arms), less those
/// [`ops`] evaluates instead.
const CANDLE_ONNX_OPS: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Exp",
    "Equal",
    "Not",
    "MatMul",
    "Reshape",
    "LogSoftmax",
    "Softmax",
    "Transpose",
    "Dropout",
    "AveragePool",
    "BatchNormalization",
    "ConstantOfShape",
    "Clip",
    "GatherElements",
    "Size",
    "Sqrt",
    "Range",
    "Greater",
    "Less",
    "LessOrEqual",
    "GreaterOrEqual",
    "Log",
    "Min",
    "Where",
    "Conv",
    "Concat",
    "Abs",
    "Cos",
    "Sin",
    "Neg",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Gelu",
    "Relu",
    "PRelu",
    "Ceil",
    "Floor",
    "Identity",
    "If",
    "Pad",
    "Slice",
    "Split",
    "Expand",
    "Tile",
    "ArgMin",
    "ArgMax",
    "LeakyRelu",
    "LSTM",
    "RNN",
    "Xor",
    "And",
    "Or",
    "Sign",
    "Selu",
    "OneHot",
    "HardSwish",
    "Resize",
    "Trilu",
    "ScatterND",
];

pub struct CandleGraphRuntime;

fn unsupported(why: String) -> RuntimeError {
    RuntimeError::Unsupported { runtime: NAME, why }
}

impl Runtime for CandleGraphRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "candle running the model's ONNX graph (candle-onnx operators, the missing ones supplied), CPU"
    }

    fn check(&self, opts: &LoadOptions) -> Availability {
        match device_problem(opts.device) {
            Err(reason) => Availability::Unavailable { reason },
            Ok(()) => Availability::Ready {
                version: crate::CANDLE_VERSION.to_string(),
                detail: format!(
                    "candle {} + candle-onnx, CPU; runs model.onnx and its fp16 variant ({} operators)",
                    crate::CANDLE_VERSION,
                    CANDLE_ONNX_OPS.len() + ops::OWN.len()
                ),
            },
        }
    }

    fn load(
        &self,
        model: &ModelFiles,
        _info: &ModelInfo,
        opts: &LoadOptions,
    ) -> Result<Box<dyn Loaded>, RuntimeError> {
        device_problem(opts.device).map_err(unsupported)?;
        let path = crate::onnx_file(NAME, model, opts.variant)?;
        let graph = Graph::load(&path)?;
        Ok(Box::new(GraphLoaded {
            graph: Arc::new(graph),
            threads: CandleThreads::new(NAME, opts.threads, opts.cpus.clone())?,
            variant: opts.variant,
            prepared: None,
        }))
    }
}

/// Why the graph engine cannot run on `device`, if it cannot.
fn device_problem(device: crate::Device) -> Result<(), String> {
    match device {
        crate::Device::Cpu => Ok(()),
        _ => Err(format!(
            "{}: candle's ONNX graph engine runs on the CPU (candle-onnx builds its shape tensors there); candle-native runs BERT on cuda",
            device.as_str()
        )),
    }
}

/// How one node is evaluated.
enum Eval {
    /// By candle-onnx: a one-node model handed to `simple_eval`.
    CandleOnnx(Box<onnx::ModelProto>),
    /// Here, in [`ops`].
    Own,
}

struct Node {
    proto: onnx::NodeProto,
    eval: Eval,
    /// The slot of each input (None: an omitted optional input).
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// Slots that no later node reads: dropped once this node has run.
    free_after: Vec<usize>,
}

/// A graph input: its slot and the element type the graph declares.
struct GraphInput {
    name: String,
    slot: usize,
    declared: HostDType,
    rank: Option<usize>,
}

struct GraphOutput {
    name: String,
    slot: usize,
    declared: HostDType,
}

/// The graph, ready to evaluate: constants in their slots, the nodes left to run in order.
struct Graph {
    path: PathBuf,
    constants: Vec<Option<Tensor>>,
    nodes: Vec<Node>,
    inputs: Vec<GraphInput>,
    outputs: Vec<GraphOutput>,
    folded: usize,
    delegated: usize,
    own: usize,
    opset: i64,
}

fn load_err(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Load {
        runtime: NAME,
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// `node 'name' (Op)` for messages.
fn describe(node: &onnx::NodeProto) -> String {
    if node.name.is_empty() {
        format!("a {} node", node.op_type)
    } else {
        format!("node '{}' ({})", node.name, node.op_type)
    }
}

impl Graph {
    fn load(path: &Path) -> Result<Graph, RuntimeError> {
        let model = candle_onnx::read_file(path).map_err(|e| {
            load_err(
                path,
                format!("not a readable ONNX model ({e}); re-export it with models/export.py"),
            )
        })?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0);
        let graph = model
            .graph
            .ok_or_else(|| load_err(path, "the file holds no graph"))?;

        // Operators neither candle-onnx nor this module evaluates: the model is unsupported.
        let mut missing = BTreeSet::new();
        for n in &graph.node {
            let standard = n.domain.is_empty() || n.domain == "ai.onnx";
            if !standard {
                missing.insert(format!("{}.{}", n.domain, n.op_type));
            } else if !ops::OWN.contains(&n.op_type.as_str())
                && !CANDLE_ONNX_OPS.contains(&n.op_type.as_str())
            {
                missing.insert(n.op_type.clone());
            }
        }
        if !missing.is_empty() {
            return Err(unsupported(format!(
                "candle has no ONNX operator {} (in {})",
                missing.into_iter().collect::<Vec<_>>().join(", "),
                path.display()
            )));
        }

        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut slot_of = |name: &str| -> usize {
            let next = slots.len();
            *slots.entry(name.to_string()).or_insert(next)
        };
        let mut constants: Vec<Option<Tensor>> = Vec::new();
        let set_const = |constants: &mut Vec<Option<Tensor>>, slot: usize, t: Tensor| {
            if constants.len() <= slot {
                constants.resize(slot + 1, None);
            }
            constants[slot] = Some(t);
        };
        for init in &graph.initializer {
            let t = proto::tensor(init, path)
                .map_err(|e| unsupported(format!("initializer '{}': {e}", init.name)))?;
            let s = slot_of(&init.name);
            set_const(&mut constants, s, t);
        }
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut inputs = Vec::new();
        for vi in &graph.input {
            if initializers.contains(vi.name.as_str()) {
                continue;
            }
            let (declared, rank) = proto::value_type(vi);
            inputs.push(GraphInput {
                name: vi.name.clone(),
                slot: slot_of(&vi.name),
                declared,
                rank,
            });
        }

        // Nodes in order; those whose inputs are all known constants are evaluated now.
        let is_const = |constants: &Vec<Option<Tensor>>, s: usize| {
            constants.get(s).is_some_and(|c| c.is_some())
        };
        let mut nodes: Vec<Node> = Vec::new();
        let mut folded = 0;
        for proto in graph.node {
            let node_inputs: Vec<Option<usize>> = proto
                .input
                .iter()
                .map(|n| (!n.is_empty()).then(|| slot_of(n)))
                .collect();
            let outputs: Vec<usize> = proto.output.iter().map(|n| slot_of(n)).collect();
            let eval = if ops::OWN.contains(&proto.op_type.as_str()) {
                Eval::Own
            } else {
                Eval::CandleOnnx(Box::new(single_node_model(&proto)))
            };
            let node = Node {
                proto,
                eval,
                inputs: node_inputs,
                outputs,
                free_after: vec![],
            };
            let foldable = node.proto.op_type != "If"
                && node
                    .inputs
                    .iter()
                    .all(|s| s.is_none_or(|s| is_const(&constants, s)));
            if foldable {
                let values: Vec<Option<Tensor>> = node
                    .inputs
                    .iter()
                    .map(|s| s.and_then(|s| constants[s].clone()))
                    .collect();
                let out = evaluate(&node, &values)
                    .map_err(|e| unsupported(format!("{}: {e}", describe(&node.proto))))?;
                for (slot, t) in node.outputs.iter().zip(out) {
                    if let Some(t) = t {
                        set_const(&mut constants, *slot, t);
                    }
                }
                folded += 1;
            } else {
                nodes.push(node);
            }
        }

        let mut outputs = Vec::new();
        for vi in &graph.output {
            let slot = *slots.get(&vi.name).ok_or_else(|| {
                load_err(path, format!("output '{}' is produced by no node", vi.name))
            })?;
            outputs.push(GraphOutput {
                name: vi.name.clone(),
                slot,
                declared: proto::value_type(vi).0,
            });
        }
        constants.resize(slots.len(), None);

        // Each slot is dropped after the last node that reads it (outputs are kept).
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for s in n.inputs.iter().flatten() {
                last_use.insert(*s, i);
            }
        }
        for o in &outputs {
            last_use.remove(&o.slot);
        }
        for (slot, i) in last_use {
            nodes[i].free_after.push(slot);
        }
        let delegated = nodes
            .iter()
            .filter(|n| matches!(n.eval, Eval::CandleOnnx(_)))
            .count();
        Ok(Graph {
            path: path.to_path_buf(),
            own: nodes.len() - delegated,
            delegated,
            folded,
            constants,
            nodes,
            inputs,
            outputs,
            opset,
        })
    }

    /// Evaluates the graph on `inputs` (one tensor per graph input, in order).
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let mut values = self.constants.clone();
        for (gi, t) in self.inputs.iter().zip(inputs) {
            values[gi.slot] = Some(t.clone());
        }
        for node in &self.nodes {
            let args: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .map(|s| s.and_then(|s| values[s].clone()))
                .collect();
            let out = evaluate(node, &args).map_err(|e| {
                unsupported(format!(
                    "{} in {}: {e}",
                    describe(&node.proto),
                    self.path.display()
                ))
            })?;
            for (slot, t) in node.outputs.iter().zip(out) {
                values[*slot] = t;
            }
            for s in &node.free_after {
                values[*s] = None;
            }
        }
        self.outputs
            .iter()
            .map(|o| {
                values[o.slot].take().ok_or_else(|| {
                    RuntimeError::inference(
                        NAME,
                        format!("the graph did not produce its output '{}'", o.name),
                    )
                })
            })
            .collect()
    }
}

/// A model holding only `node`, for candle-onnx's `simple_eval`.
fn single_node_model(node: &onnx::NodeProto) -> onnx::ModelProto {
    onnx::ModelProto {
        graph: Some(onnx::GraphProto {
            node: vec![node.clone()],
            output: node
                .output
                .iter()
                .map(|name| onnx::ValueInfoProto {
                    name: name.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One node on `args` (None for omitted optional inputs): its outputs, None for those it
/// does not produce.
fn evaluate(node: &Node, args: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>, String> {
    // candle-onnx has `todo!()`s and unchecked indexing, and candle asserts in places: a panic
    // while evaluating a node is that node's failure, not the process's.
    crate::catch_panic(|| evaluate_unguarded(node, args))
        .unwrap_or_else(|msg| Err(format!("panicked: {msg}")))
}

fn evaluate_unguarded(node: &Node, args: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>, String> {
    match &node.eval {
        Eval::Own => ops::evaluate(&node.proto, args),
        Eval::CandleOnnx(model) => {
            if node.proto.op_type == "Conv" {
                ops::check_conv(&node.proto, args)?;
            }
            let mut map = HashMap::with_capacity(args.len());
            for (name, t) in node.proto.input.iter().zip(args) {
                match t {
                    // Several candle-onnx operators (GatherElements, ...) need contiguous
                    // inputs; Expand and Transpose leave views. A no-op when contiguous.
                    Some(t) => {
                        map.insert(name.clone(), t.contiguous().map_err(ops::e)?);
                    }
                    None if name.is_empty() => {}
                    None => return Err(format!("input '{name}' has no value")),
                }
            }
            let mut out = candle_onnx::simple_eval(model, map).map_err(ops::e)?;
            Ok(node.proto.output.iter().map(|n| out.remove(n)).collect())
        }
    }
}

struct Prepared {
    inputs: Vec<Tensor>,
}

struct GraphLoaded {
    graph: Arc<Graph>,
    threads: CandleThreads,
    variant: crate::Variant,
    prepared: Option<Prepared>,
}

impl GraphLoaded {
    fn forward(&self) -> Result<Vec<Tensor>, RuntimeError> {
        let p = self
            .prepared
            .as_ref()
            .ok_or_else(|| RuntimeError::input(NAME, "run before prepare"))?;
        self.threads.install(|| self.graph.run(&p.inputs))
    }
}

/// A host tensor as the candle tensor the graph computes with (integers as i64, booleans as
/// u8).
fn to_candle(t: &HostTensor, want: HostDType) -> Result<Tensor, RuntimeError> {
    let shape = t.shape.as_slice();
    let r = match (&t.data, want) {
        (TensorData::F32(v), HostDType::Float16) => {
            let v: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        (TensorData::F32(v), HostDType::Float64) => {
            let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        (TensorData::F32(v), _) => Tensor::from_slice(v, shape, &Device::Cpu),
        (TensorData::I64(v), _) => Tensor::from_slice(v, shape, &Device::Cpu),
        (TensorData::I32(v), _) => {
            let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        (TensorData::Bool(v), _) => {
            let v: Vec<u8> = v.iter().map(|&x| x as u8).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
    };
    r.map_err(|e| RuntimeError::input(NAME, format!("input '{}': {e}", t.name)))
}

/// A graph output back on the host, in the element type the graph declares.
fn to_host(name: &str, t: &Tensor, declared: HostDType) -> Result<HostTensor, RuntimeError> {
    let shape = t.dims().to_vec();
    let err =
        |e: candle_core::Error| RuntimeError::inference(NAME, format!("output '{name}': {e}"));
    let flat = t.flatten_all().map_err(err)?;
    let data = match t.dtype() {
        DType::U8 => {
            let v = flat.to_vec1::<u8>().map_err(err)?;
            TensorData::Bool(v.into_iter().map(|x| x != 0).collect())
        }
        DType::I64 | DType::U32 | DType::I32 | DType::I16 => {
            let v = flat
                .to_dtype(DType::I64)
                .and_then(|x| x.to_vec1::<i64>())
                .map_err(err)?;
            if declared == HostDType::Int32 {
                TensorData::I32(v.into_iter().map(|x| x as i32).collect())
            } else {
                TensorData::I64(v)
            }
        }
        _ => TensorData::F32(
            flat.to_dtype(DType::F32)
                .and_then(|x| x.to_vec1::<f32>())
                .map_err(err)?,
        ),
    };
    Ok(HostTensor::new(name, shape, data))
}

impl Loaded for GraphLoaded {
    fn applied(&self) -> Vec<(String, String)> {
        let g = &self.graph;
        let mut applied = vec![
            ("engine".into(), "onnx-graph".into()),
            (
                "graph".into(),
                format!(
                    "{} (opset {}): {} nodes per run ({} by candle-onnx, {} supplied here), {} folded at load",
                    g.path.file_name().unwrap_or_default().to_string_lossy(),
                    g.opset,
                    g.nodes.len(),
                    g.delegated,
                    g.own,
                    g.folded
                ),
            ),
            ("variant".into(), self.variant.as_str().into()),
            ("device".into(), "cpu".into()),
        ];
        applied.extend(self.threads.applied());
        applied
    }

    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        self.threads.enter();
        let mut tensors = Vec::with_capacity(self.graph.inputs.len());
        for gi in &self.graph.inputs {
            let t = inputs.iter().find(|t| t.name == gi.name).ok_or_else(|| {
                RuntimeError::input(
                    NAME,
                    format!(
                        "the graph's input '{}' was not given (given: {})",
                        gi.name,
                        inputs
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            if let Some(r) = gi.rank.filter(|&r| r != t.shape.len()) {
                return Err(RuntimeError::input(
                    NAME,
                    format!(
                        "input '{}' has shape {}, the graph declares rank {r}",
                        t.name,
                        t.shape_string()
                    ),
                ));
            }
            tensors.push(to_candle(t, gi.declared)?);
        }
        if let Some(extra) = inputs
            .iter()
            .find(|t| !self.graph.inputs.iter().any(|g| g.name == t.name))
        {
            return Err(RuntimeError::input(
                NAME,
                format!("the graph has no input '{}'", extra.name),
            ));
        }
        self.prepared = Some(Prepared { inputs: tensors });
        // One trial run at this shape: a node candle cannot evaluate here makes the scenario
        // unsupported now, outside the timed region.
        if let Err(e) = self.forward() {
            self.prepared = None;
            return Err(e);
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), RuntimeError> {
        let out = self.forward()?;
        drop(out);
        Ok(())
    }

    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        let out = self.forward()?;
        self.graph
            .outputs
            .iter()
            .zip(&out)
            .map(|(o, t)| to_host(&o.name, t, o.declared))
            .collect()
    }

    fn share(&self) -> Option<Result<Box<dyn Loaded>, RuntimeError>> {
        Some(self.threads.again().map(|threads| {
            Box::new(GraphLoaded {
                graph: self.graph.clone(),
                threads,
                variant: self.variant,
                prepared: None,
            }) as Box<dyn Loaded>
        }))
    }
}
