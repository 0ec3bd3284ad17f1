//! ONNX files as skl2onnx and onnxmltools write them: a scikit-learn pipeline (scalers, imputers,
//! encoders, column selection) ending in a linear model or a tree ensemble. Rather than interpret
//! the graph at each batch, [`parse`] compiles the part of it the probabilities (or the value)
//! depend on into a fixed list of steps over typed column blocks, and the tree operators into
//! nightshift's [`Ensemble`](super::Ensemble). Each step reproduces what onnxruntime's CPU kernel
//! computes, float rounding included, so that scores equal onnxruntime's; anything outside the
//! supported operators, or that onnxruntime would reject at run time, is refused at import.

mod ops;
pub mod proto;
mod trees;

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{Format, InputColumn, InputFeature, InputKind, Label, Parsed, Task};
use ops::{Buf, Step};
use proto::{attribute_type, data_type, AttributeProto, NodeProto, TensorProto, ValueInfoProto};

/// The operators [`parse`] compiles, as `domain:op_type` (an empty domain is `ai.onnx`).
pub const SUPPORTED_OPS: &[&str] = &[
    "ai.onnx:Add",
    "ai.onnx:Cast",
    "ai.onnx:Concat",
    "ai.onnx:Div",
    "ai.onnx:Flatten",
    "ai.onnx:Gather",
    "ai.onnx:Identity",
    "ai.onnx:Mul",
    "ai.onnx:Reshape",
    "ai.onnx:Sub",
    "ai.onnx.ml:ArrayFeatureExtractor",
    "ai.onnx.ml:Binarizer",
    "ai.onnx.ml:Imputer",
    "ai.onnx.ml:LabelEncoder",
    "ai.onnx.ml:LinearClassifier",
    "ai.onnx.ml:LinearRegressor",
    "ai.onnx.ml:Normalizer",
    "ai.onnx.ml:OneHotEncoder",
    "ai.onnx.ml:Scaler",
    "ai.onnx.ml:TreeEnsemble",
    "ai.onnx.ml:TreeEnsembleClassifier",
    "ai.onnx.ml:TreeEnsembleRegressor",
    "ai.onnx.ml:ZipMap",
];

/// Most values a tensor may hold per row: a forged shape must not size an allocation.
const MAX_ROW_WIDTH: usize = 1 << 24;

/// A compiled ONNX graph: the inputs, the steps in order, and the slot holding the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    inputs: Inputs,
    steps: Vec<Step>,
    /// Slots to drop after each step (their last reader has run).
    drops: Vec<Vec<usize>>,
    n_slots: usize,
    output: usize,
    width: usize,
}

/// How the batch's columns become the graph's input tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Inputs {
    /// One graph input per feature (skl2onnx from a DataFrame), each `[N, 1]`.
    Columns(Vec<(usize, Elem)>),
    /// One graph input `[N, k]` taking the `k` features in order.
    Tensor { slot: usize, elem: Elem, k: usize },
}

/// The element types the steps handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Elem {
    F32,
    F64,
    I64,
    Str,
}

impl Elem {
    fn from_onnx(t: i32) -> Option<Elem> {
        match t {
            data_type::FLOAT => Some(Elem::F32),
            data_type::DOUBLE => Some(Elem::F64),
            data_type::INT64 => Some(Elem::I64),
            data_type::STRING => Some(Elem::Str),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Elem::F32 => "float",
            Elem::F64 => "double",
            Elem::I64 => "int64",
            Elem::Str => "string",
        }
    }
}

/// Parses an ONNX model and compiles the graph behind its probabilities (classifiers) or its
/// value (regressors). `features` names the columns of a model that takes one `[N, k]` tensor.
pub fn parse(bytes: &[u8], features: Option<&[String]>) -> Result<Parsed> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| anyhow!("not a readable ONNX model (protobuf: {e})"))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the ONNX model has no graph"))?;
    let producer = match (model.producer_name.trim(), model.producer_version.trim()) {
        ("", _) => None,
        (n, "") => Some(n.to_string()),
        (n, v) => Some(format!("{n} {v}")),
    };
    let mut c = Compiler::default();
    for t in &graph.initializer {
        let value = Const::from_tensor(t).with_context(|| format!("initializer `{}`", t.name))?;
        c.consts.insert(t.name.clone(), value);
    }
    let features = c.inputs(&graph.input, features)?;
    let (out_name, zipmap_labels) = pick_output(graph)?;

    // The nodes the output depends on, producers first.
    let mut producer_of: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer_of.insert(o.as_str(), i).is_some() {
                bail!("the ONNX graph defines `{o}` twice");
            }
        }
    }
    let order = needed_nodes(graph, &producer_of, &out_name, &c)?;
    c.read = order
        .iter()
        .flat_map(|&i| graph.node[i].input.iter().cloned())
        .collect();
    for &i in &order {
        let node = &graph.node[i];
        c.node(node).with_context(|| {
            format!(
                "{} node `{}`",
                if node.op_type.is_empty() {
                    "?"
                } else {
                    &node.op_type
                },
                node.name
            )
        })?;
    }
    let out = c
        .values
        .get(&out_name)
        .cloned()
        .ok_or_else(|| anyhow!("the ONNX graph never computes its output `{out_name}`"))?;
    if out.elem == Elem::Str || out.elem == Elem::I64 {
        bail!(
            "the ONNX model's output `{out_name}` is {}, not scores",
            out.elem.name()
        );
    }
    let width = out.width();
    let (task, objective) = match c.model.take() {
        Some(m) => m,
        None => bail!("the ONNX graph has no classifier or regressor operator behind `{out_name}`"),
    };
    match &task {
        Task::Classification { labels } => {
            if labels.len() != width {
                bail!(
                    "the classifier has {} labels but its probabilities have {width} columns",
                    labels.len()
                );
            }
            if let Some(z) = zipmap_labels {
                if z != *labels {
                    bail!("ZipMap's labels differ from the classifier's");
                }
            }
        }
        Task::Regression => {
            if width != 1 {
                bail!("the regressor gives {width} values per row; only one is supported");
            }
        }
    }
    let drops = c.drops(out.slot);
    let pipeline = Pipeline {
        inputs: c.pipeline_inputs.take().expect("inputs are set first"),
        steps: c.steps,
        drops,
        n_slots: c.n_slots,
        output: out.slot,
        width,
    };
    Ok(Parsed {
        format: Format::Onnx,
        producer,
        objective,
        features,
        task,
        model: super::Compiled::Onnx(pipeline),
    })
}

impl Pipeline {
    /// Trees, leaves, depth and compiled bytes of the tree operators (zero for a linear model).
    pub fn shape(&self) -> super::Shape {
        let mut shape = super::Shape::default();
        for step in &self.steps {
            if let Step::Trees(t) = step {
                let s = t.ensemble.shape();
                shape.trees += s.trees;
                shape.leaves += s.leaves;
                shape.max_depth = shape.max_depth.max(s.max_depth);
                shape.compiled_bytes += s.compiled_bytes;
            }
        }
        shape
    }

    /// The output for `n_rows` rows, row-major: each label's probability (classifiers) or the
    /// value (regressors), as onnxruntime computes them (in float, widened to double).
    pub fn predict(&self, inputs: &[InputColumn], n_rows: usize) -> Vec<f64> {
        let mut slots: Vec<Option<Buf>> = vec![None; self.n_slots];
        match &self.inputs {
            Inputs::Columns(cols) => {
                for (i, &(slot, elem)) in cols.iter().enumerate() {
                    slots[slot] = Some(Buf::from_columns(&[inputs.get(i)], elem, n_rows));
                }
            }
            Inputs::Tensor { slot, elem, k } => {
                let cols: Vec<Option<&InputColumn>> = (0..*k).map(|i| inputs.get(i)).collect();
                slots[*slot] = Some(Buf::from_columns(&cols, *elem, n_rows));
            }
        }
        for (step, drops) in self.steps.iter().zip(&self.drops) {
            let (out, buf) = step.run(&slots, n_rows);
            slots[out] = Some(buf);
            for &d in drops {
                slots[d] = None;
            }
        }
        match slots[self.output].take() {
            Some(b) => b.into_f64(n_rows * self.width),
            None => vec![f64::NAN; n_rows * self.width],
        }
    }
}

/// A compile-time tensor: where it lives and its shape after the batch dimension.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub slot: usize,
    pub elem: Elem,
    /// Dimensions after the batch (row) dimension; empty for a `[N]` tensor.
    pub dims: Vec<usize>,
}

impl Value {
    pub fn width(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A constant tensor (an initializer or a tensor attribute).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub data: ConstData,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConstData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

impl Const {
    /// Decodes a tensor, checking that its data holds exactly the product of its dimensions.
    pub fn from_tensor(t: &TensorProto) -> Result<Const> {
        if t.data_location == proto::DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
            bail!(
                "tensor `{}` keeps its data in an external file, which is not supported yet \
                 (save the model with its data inside: onnx.save(model, path, save_as_external_data=False))",
                t.name
            );
        }
        let mut n: usize = 1;
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            let d = usize::try_from(d).map_err(|_| anyhow!("negative dimension {d}"))?;
            n = n
                .checked_mul(d)
                .ok_or_else(|| anyhow!("dimensions overflow"))?;
            dims.push(d);
        }
        let raw = &t.raw_data;
        let check = |len: usize| -> Result<()> {
            if len != n {
                bail!(
                    "tensor `{}` has {len} values for dimensions {:?}",
                    t.name,
                    t.dims
                );
            }
            Ok(())
        };
        let raw_len = |size: usize| -> Result<()> {
            if !raw.len().is_multiple_of(size) {
                bail!("tensor `{}` has raw data of {} bytes", t.name, raw.len());
            }
            check(raw.len() / size)
        };
        let data = match t.data_type {
            data_type::FLOAT if !raw.is_empty() => {
                raw_len(4)?;
                ConstData::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }
            data_type::FLOAT => {
                check(t.float_data.len())?;
                ConstData::F32(t.float_data.clone())
            }
            data_type::DOUBLE if !raw.is_empty() => {
                raw_len(8)?;
                ConstData::F64(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                )
            }
            data_type::DOUBLE => {
                check(t.double_data.len())?;
                ConstData::F64(t.double_data.clone())
            }
            data_type::INT64 if !raw.is_empty() => {
                raw_len(8)?;
                ConstData::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                )
            }
            data_type::INT64 => {
                check(t.int64_data.len())?;
                ConstData::I64(t.int64_data.clone())
            }
            data_type::UINT8 if !raw.is_empty() => {
                check(raw.len())?;
                ConstData::I64(raw.iter().map(|&b| b as i64).collect())
            }
            data_type::UINT8 => {
                check(t.int32_data.len())?;
                ConstData::I64(t.int32_data.iter().map(|&v| v as i64).collect())
            }
            data_type::INT32 if !raw.is_empty() => {
                raw_len(4)?;
                ConstData::I64(
                    raw.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                        .collect(),
                )
            }
            data_type::INT32 => {
                check(t.int32_data.len())?;
                ConstData::I64(t.int32_data.iter().map(|&v| v as i64).collect())
            }
            data_type::STRING => {
                check(t.string_data.len())?;
                ConstData::Str(
                    t.string_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                )
            }
            other => bail!(
                "tensor `{}` has data type {other}, which is not supported",
                t.name
            ),
        };
        Ok(Const { dims, data })
    }

    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::F64(v) => v.len(),
            ConstData::I64(v) => v.len(),
            ConstData::Str(v) => v.len(),
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Numbers widened to double (exact for float and for integers up to 2^53).
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        match &self.data {
            ConstData::F32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            ConstData::F64(v) => Some(v.clone()),
            ConstData::I64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            ConstData::Str(_) => None,
        }
    }

    pub fn elem(&self) -> Elem {
        match &self.data {
            ConstData::F32(_) => Elem::F32,
            ConstData::F64(_) => Elem::F64,
            ConstData::I64(_) => Elem::I64,
            ConstData::Str(_) => Elem::Str,
        }
    }
}

/// A node's attributes, looked up by name.
pub(crate) struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// Whether the attribute is set and of `ty` (files before IR 2 leave the type at 0).
    fn typed(&self, name: &str, ty: i32) -> Option<&'a AttributeProto> {
        self.get(name).filter(|a| a.r#type == ty || a.r#type == 0)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.typed(name, attribute_type::FLOAT).map(|a| a.f)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.typed(name, attribute_type::INT).map(|a| a.i)
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.typed(name, attribute_type::STRING)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub fn floats(&self, name: &str) -> &'a [f32] {
        self.typed(name, attribute_type::FLOATS)
            .map(|a| a.floats.as_slice())
            .unwrap_or(&[])
    }

    pub fn ints(&self, name: &str) -> &'a [i64] {
        self.typed(name, attribute_type::INTS)
            .map(|a| a.ints.as_slice())
            .unwrap_or(&[])
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.typed(name, attribute_type::STRINGS)
            .map(|a| {
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Const>> {
        match self
            .typed(name, attribute_type::TENSOR)
            .and_then(|a| a.t.as_ref())
        {
            Some(t) => Ok(Some(
                Const::from_tensor(t).with_context(|| format!("attribute `{name}`"))?,
            )),
            None => Ok(None),
        }
    }
}

/// The graph's state while nodes compile in order.
#[derive(Default)]
pub(crate) struct Compiler {
    consts: HashMap<String, Const>,
    values: HashMap<String, Value>,
    steps: Vec<Step>,
    n_slots: usize,
    pipeline_inputs: Option<Inputs>,
    /// The last classifier or regressor: its task and `objective`.
    model: Option<(Task, String)>,
    /// Every tensor name the compiled nodes read.
    read: std::collections::HashSet<String>,
}

impl Compiler {
    fn slot(&mut self) -> usize {
        self.n_slots += 1;
        self.n_slots - 1
    }

    /// Reads the graph inputs: one per column, or a single `[N, k]` tensor.
    fn inputs(
        &mut self,
        inputs: &[ValueInfoProto],
        features: Option<&[String]>,
    ) -> Result<Vec<InputFeature>> {
        let mut real = Vec::new();
        for vi in inputs {
            if self.consts.contains_key(&vi.name) {
                continue; // IR < 4 lists initializers among the inputs
            }
            let (elem, dims) = tensor_type(vi).with_context(|| format!("input `{}`", vi.name))?;
            let elem = elem.ok_or_else(|| {
                anyhow!(
                    "input `{}` is not a float, double, int64 or string tensor",
                    vi.name
                )
            })?;
            real.push((vi.name.clone(), elem, dims));
        }
        if real.is_empty() {
            bail!("the ONNX graph has no input");
        }
        let kind = |e: Elem| {
            if e == Elem::Str {
                InputKind::Text
            } else {
                InputKind::Numeric
            }
        };
        let single_wide = real.len() == 1 && {
            let d = &real[0].2;
            d.len() > 2 || (d.len() == 2 && d[1] != Some(1))
        };
        if single_wide {
            let (name, elem, dims) = real.pop().expect("one input");
            if dims.len() != 2 {
                bail!(
                    "input `{name}` has {} dimensions; a [N, features] tensor is expected",
                    dims.len()
                );
            }
            let names = features.ok_or_else(|| {
                anyhow!(
                    "the model takes one tensor `{name}` of {} features; name them with --features",
                    dims[1].map(|d| d.to_string()).unwrap_or_else(|| "?".into())
                )
            })?;
            if let Some(k) = dims[1] {
                if k != names.len() {
                    bail!(
                        "the model takes {k} features; --features names {}",
                        names.len()
                    );
                }
            }
            let k = names.len();
            if k == 0 || k > MAX_ROW_WIDTH {
                bail!("--features names {k} features");
            }
            let slot = self.slot();
            self.values.insert(
                name,
                Value {
                    slot,
                    elem,
                    dims: vec![k],
                },
            );
            self.pipeline_inputs = Some(Inputs::Tensor { slot, elem, k });
            return Ok(names
                .iter()
                .map(|n| InputFeature {
                    name: n.clone(),
                    kind: kind(elem),
                })
                .collect());
        }
        if let Some(f) = features {
            if f.len() != real.len() {
                bail!(
                    "the model takes {} features; --features names {}",
                    real.len(),
                    f.len()
                );
            }
        }
        let mut cols = Vec::new();
        let mut out = Vec::new();
        for (i, (name, elem, dims)) in real.into_iter().enumerate() {
            let ok = matches!(dims.as_slice(), [_] | [_, Some(1)]);
            if !ok {
                bail!(
                    "input `{name}` is not a column: the model must take one [N, 1] input per \
                     column or a single [N, features] tensor"
                );
            }
            let slot = self.slot();
            let value_dims = if dims.len() == 1 { vec![] } else { vec![1] };
            self.values.insert(
                name.clone(),
                Value {
                    slot,
                    elem,
                    dims: value_dims,
                },
            );
            cols.push((slot, elem));
            let fname = features.map(|f| f[i].clone()).unwrap_or(name);
            out.push(InputFeature {
                name: fname,
                kind: kind(elem),
            });
        }
        self.pipeline_inputs = Some(Inputs::Columns(cols));
        Ok(out)
    }

    /// The compile-time value of a node input, which must be a computed tensor.
    pub fn value(&self, name: &str) -> Result<Value> {
        if self.consts.contains_key(name) {
            bail!("input `{name}` is a constant where a computed tensor is expected");
        }
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("input `{name}` is not computed before this node"))
    }

    pub fn constant(&self, name: &str) -> Option<&Const> {
        self.consts.get(name)
    }

    /// Adds a step writing a new slot, and names its output.
    pub fn emit(
        &mut self,
        output: &str,
        elem: Elem,
        dims: Vec<usize>,
        step: impl FnOnce(usize) -> Step,
    ) -> Result<()> {
        let width: usize = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        if width > MAX_ROW_WIDTH {
            bail!("output `{output}` would hold {width} values per row");
        }
        let slot = self.slot();
        self.steps.push(step(slot));
        self.values
            .insert(output.to_string(), Value { slot, elem, dims });
        Ok(())
    }

    /// Names `output` as the same data as `value`, with new dimensions (Identity, Reshape).
    pub fn alias(&mut self, output: &str, value: &Value, dims: Vec<usize>) {
        self.values.insert(
            output.to_string(),
            Value {
                slot: value.slot,
                elem: value.elem,
                dims,
            },
        );
    }

    /// Whether a compiled node reads the tensor `name`.
    pub fn needed(&self, name: &str) -> bool {
        self.read.contains(name)
    }

    /// The output a model operator's scores go to: a classifier's second output (its
    /// probabilities; its label output must not be read by the graph: nightshift derives the
    /// label from the probabilities), a regressor's first.
    pub fn scores_output(&self, node: &NodeProto, classifier: bool) -> Result<String> {
        let (index, what) = if classifier {
            if node
                .output
                .first()
                .is_some_and(|o| !o.is_empty() && self.needed(o))
            {
                bail!("the graph reads the classifier's label output");
            }
            (1, "probabilities")
        } else {
            (0, "scores")
        };
        node.output
            .get(index)
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| anyhow!("{} has no {what} output", node.op_type))
    }

    pub fn set_model(&mut self, task: Task, objective: String) {
        self.model = Some((task, objective));
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let domain = match node.domain.as_str() {
            "" | "ai.onnx" => "ai.onnx",
            d => d,
        };
        let key = format!("{domain}:{}", node.op_type);
        if !SUPPORTED_OPS.contains(&key.as_str()) {
            bail!(
                "operator {} (domain {domain}) is not supported; supported: {}",
                node.op_type,
                SUPPORTED_OPS.join(", ")
            );
        }
        let a = Attrs { node };
        ops::compile(self, node, &a)
    }

    /// For each step, the slots whose last reader it is (never the output).
    fn drops(&self, output: usize) -> Vec<Vec<usize>> {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            for r in s.reads() {
                last.insert(r, i);
            }
        }
        let mut drops = vec![Vec::new(); self.steps.len()];
        for (slot, i) in last {
            if slot != output {
                drops[i].push(slot);
            }
        }
        drops
    }
}

/// The external data files an ONNX model's initializers name (`onnx.save_model(...,
/// save_as_external_data=True)`, as `mlflow.onnx` saves large models), in order, each once.
pub fn external_files(bytes: &[u8]) -> Result<Vec<String>> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| anyhow!("not a readable ONNX model (protobuf: {e})"))?;
    let mut files: Vec<String> = Vec::new();
    for t in model.graph.iter().flat_map(|g| &g.initializer) {
        let location = t.external_data.iter().find(|e| e.key == "location");
        if let Some(l) = location.filter(|l| !files.contains(&l.value)) {
            files.push(l.value.clone());
        }
    }
    Ok(files)
}

/// The model with each initializer's external data read into it from `files` (by the
/// `location` it names), so that [`parse`] reads one self-contained model.
pub fn inline_external_data(
    bytes: &[u8],
    files: &std::collections::BTreeMap<String, bytes::Bytes>,
) -> Result<Vec<u8>> {
    let mut model = proto::ModelProto::decode(bytes)
        .map_err(|e| anyhow!("not a readable ONNX model (protobuf: {e})"))?;
    for t in model.graph.iter_mut().flat_map(|g| &mut g.initializer) {
        if t.external_data.is_empty() {
            continue;
        }
        let field = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let location = field("location")
            .with_context(|| format!("initializer `{}` names no external data file", t.name))?;
        let data = files.get(&location).with_context(|| {
            format!(
                "initializer `{}`: external data file '{location}' is missing",
                t.name
            )
        })?;
        let number = |key: &str| -> Result<Option<usize>> {
            field(key)
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        anyhow!("initializer `{}`: {key} '{v}' is not a number", t.name)
                    })
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let end = match number("length")? {
            Some(length) => offset.checked_add(length),
            None => Some(data.len()),
        };
        let Some(range) = end
            .filter(|&e| offset <= e && e <= data.len())
            .map(|e| offset..e)
        else {
            bail!(
                "initializer `{}`: its data lies outside '{location}' ({} bytes)",
                t.name,
                data.len()
            );
        };
        t.raw_data = data[range].to_vec();
        t.external_data.clear();
        t.data_location = 0;
    }
    Ok(model.encode_to_vec())
}

/// An input's element type and dimensions (`None` where symbolic).
fn tensor_type(vi: &ValueInfoProto) -> Result<(Option<Elem>, Vec<Option<usize>>)> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .ok_or_else(|| anyhow!("the tensor has no shape"))?;
            let dims = shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(D::DimValue(v)) if v >= 0 => usize::try_from(v).ok(),
                    _ => None,
                })
                .collect();
            Ok((Elem::from_onnx(t.elem_type), dims))
        }
        _ => bail!("not a tensor"),
    }
}

/// The graph output to score: the one float (or double) tensor, or ZipMap's map sequence (then
/// ZipMap's labels are returned too, to check against the classifier's).
fn pick_output(graph: &proto::GraphProto) -> Result<(String, Option<Vec<Label>>)> {
    use proto::type_proto::Value as T;
    let mut found = Vec::new();
    for o in &graph.output {
        let scores = match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(T::TensorType(t)) => {
                matches!(t.elem_type, data_type::FLOAT | data_type::DOUBLE)
            }
            Some(T::SequenceType(s)) => matches!(
                s.elem_type.as_ref().and_then(|t| t.value.as_ref()),
                Some(T::MapType(_))
            ),
            _ => false,
        };
        if scores {
            found.push(o.name.clone());
        }
    }
    let name = match found.len() {
        1 => found.pop().expect("one"),
        0 => bail!("the ONNX model has no float output (probabilities or value)"),
        _ => bail!(
            "the ONNX model has several float outputs ({}); one is expected",
            found.join(", ")
        ),
    };
    // ZipMap's labels, if the output comes from one.
    let zip = graph
        .node
        .iter()
        .find(|n| n.op_type == "ZipMap" && n.output.first() == Some(&name));
    let labels = zip.map(|n| {
        let a = Attrs { node: n };
        let s = a.strings("classlabels_strings");
        if !s.is_empty() {
            s.into_iter().map(Label::Text).collect()
        } else {
            a.ints("classlabels_int64s")
                .iter()
                .map(|&i| Label::Int(i))
                .collect()
        }
    });
    Ok((name, labels))
}

/// The nodes `out` depends on, each after its producers; refuses a cycle.
fn needed_nodes(
    graph: &proto::GraphProto,
    producer_of: &HashMap<&str, usize>,
    out: &str,
    c: &Compiler,
) -> Result<Vec<usize>> {
    let n = graph.node.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on the stack, 2 done
    let mut order = Vec::new();
    let Some(&root) = producer_of.get(out) else {
        if c.values.contains_key(out) {
            return Ok(order);
        }
        bail!("no node computes the output `{out}`");
    };
    // Iterative depth-first search: (node, index of the next input to visit).
    let mut stack = vec![(root, 0usize)];
    state[root] = 1;
    while let Some(&mut (i, ref mut next)) = stack.last_mut() {
        let inputs = &graph.node[i].input;
        if *next < inputs.len() {
            let name = inputs[*next].as_str();
            *next += 1;
            if name.is_empty() || c.values.contains_key(name) || c.consts.contains_key(name) {
                continue;
            }
            let Some(&p) = producer_of.get(name) else {
                bail!(
                    "`{name}`, read by node `{}`, is never defined",
                    graph.node[i].name
                );
            };
            match state[p] {
                0 => {
                    state[p] = 1;
                    stack.push((p, 0));
                }
                1 => bail!(
                    "the ONNX graph has a cycle through node `{}`",
                    graph.node[p].name
                ),
                _ => {}
            }
        } else {
            state[i] = 2;
            order.push(i);
            stack.pop();
        }
    }
    Ok(order)
}

/// Converts a double to int64 as x86's `cvttsd2si` does (C++ `static_cast` in onnxruntime, and
/// numpy's `astype`): truncation, and the minimum for NaN or out of range.
pub(crate) fn f64_to_i64(x: f64) -> i64 {
    // 2^63: the first double above i64::MAX.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if !(-TWO_63..TWO_63).contains(&x) {
        i64::MIN
    } else {
        x as i64
    }
}

#[cfg(test)]
mod tests;
