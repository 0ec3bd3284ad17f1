//! The compiled steps: each operator's attributes checked and laid out at import, and its
//! onnxruntime kernel reproduced over a whole batch at once (row-major blocks, one per tensor).

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::trees::{self, TreeStep};
use super::{f64_to_i64, Attrs, Compiler, Elem, Value};
use crate::model::formats::{InputColumn, Label, Task};

use super::proto::NodeProto;

/// A tensor's data for a batch: `n_rows` rows of its width, row-major.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

impl Buf {
    /// Builds an input tensor from batch columns (one per tensor column), converting as the
    /// caller of onnxruntime would: NaN for a null number, "" for a null string.
    pub fn from_columns(cols: &[Option<&InputColumn>], elem: Elem, n_rows: usize) -> Buf {
        let k = cols.len();
        let num = |r: usize, c: usize| -> f64 {
            match cols[c] {
                Some(InputColumn::Numbers(v)) => v.get(r).copied().unwrap_or(f64::NAN),
                _ => f64::NAN,
            }
        };
        match elem {
            Elem::F32 => Buf::F32((0..n_rows * k).map(|i| num(i / k, i % k) as f32).collect()),
            Elem::F64 => Buf::F64((0..n_rows * k).map(|i| num(i / k, i % k)).collect()),
            Elem::I64 => Buf::I64(
                (0..n_rows * k)
                    .map(|i| f64_to_i64(num(i / k, i % k)))
                    .collect(),
            ),
            Elem::Str => Buf::Str(
                (0..n_rows * k)
                    .map(|i| match cols[i % k] {
                        Some(InputColumn::Text(v)) => {
                            v.get(i / k).cloned().flatten().unwrap_or_default()
                        }
                        _ => String::new(),
                    })
                    .collect(),
            ),
        }
    }

    /// The values widened to double, padded with NaN (or cut) to `len`.
    pub fn into_f64(self, len: usize) -> Vec<f64> {
        let mut v: Vec<f64> = match self {
            Buf::F32(v) => v.into_iter().map(|x| x as f64).collect(),
            Buf::F64(v) => v,
            Buf::I64(v) => v.into_iter().map(|x| x as f64).collect(),
            Buf::Str(_) => Vec::new(),
        };
        v.resize(len, f64::NAN);
        v
    }

    fn len(&self) -> usize {
        match self {
            Buf::F32(v) => v.len(),
            Buf::F64(v) => v.len(),
            Buf::I64(v) => v.len(),
            Buf::Str(v) => v.len(),
        }
    }
}

/// A number read from a buffer in the kernel's input type, for the kernels that convert every
/// input type the same way (to float: Scaler, Normalizer, OneHotEncoder, the linear models).
#[inline]
fn get_f64(b: &Buf, i: usize) -> f64 {
    match b {
        Buf::F32(v) => v[i] as f64,
        Buf::F64(v) => v[i],
        Buf::I64(v) => v[i] as f64,
        Buf::Str(_) => f64::NAN,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Norm {
    Max,
    L1,
    L2,
}

/// onnxruntime's `POST_EVAL_TRANSFORM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl Post {
    pub fn parse(s: Option<String>) -> Result<Post> {
        Ok(match s.as_deref().unwrap_or("NONE") {
            "NONE" => Post::None,
            "LOGISTIC" => Post::Logistic,
            "SOFTMAX" => Post::Softmax,
            "SOFTMAX_ZERO" => Post::SoftmaxZero,
            "PROBIT" => Post::Probit,
            other => bail!("unknown post_transform {other}"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Post::None => "NONE",
            Post::Logistic => "LOGISTIC",
            Post::Softmax => "SOFTMAX",
            Post::SoftmaxZero => "SOFTMAX_ZERO",
            Post::Probit => "PROBIT",
        }
    }
}

/// The categories of a OneHotEncoder or the keys of a LabelEncoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Keys {
    Str(HashMap<String, usize>),
    Int(HashMap<i64, usize>),
}

/// LabelEncoder's values and default, by type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum LabelValues {
    Str(Vec<String>, String),
    Int(Vec<i64>, i64),
    F32(Vec<f32>, f32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Step {
    /// `Cast`.
    Cast {
        input: usize,
        output: usize,
        to: Elem,
    },
    /// `Concat`: per row, for each of `outer` blocks, each input's block in turn.
    Concat {
        inputs: Vec<(usize, usize)>,
        outer: usize,
        output: usize,
        elem: Elem,
    },
    /// Selection of `indices` along the last axis (`ArrayFeatureExtractor`, `Gather`).
    Select {
        input: usize,
        output: usize,
        stride: usize,
        indices: Vec<usize>,
    },
    /// Elementwise arithmetic with a constant broadcast over rows (`c` of length 1 or the width).
    Arith {
        input: usize,
        output: usize,
        op: ArithOp,
        c: Vec<f64>,
        const_first: bool,
        width: usize,
    },
    /// `Scaler`: `(x - offset) * scale`, per column `j % stride`, into float.
    Scaler {
        input: usize,
        output: usize,
        offset: Vec<f32>,
        scale: Vec<f32>,
        stride: usize,
        width: usize,
    },
    /// `Imputer` on floats: NaN (or `replaced`, kept as its bits: JSON has no NaN) becomes the
    /// column's value.
    ImputerF32 {
        input: usize,
        output: usize,
        replaced: u32,
        values: Vec<f32>,
        stride: usize,
        width: usize,
    },
    /// `Imputer` on int64s.
    ImputerI64 {
        input: usize,
        output: usize,
        replaced: i64,
        values: Vec<i64>,
        stride: usize,
        width: usize,
    },
    /// `Normalizer`, per row, into float.
    Normalizer {
        input: usize,
        output: usize,
        norm: Norm,
        width: usize,
    },
    /// `Binarizer`: `x > threshold`, into float (NaN, which onnxruntime rejects, stays NaN).
    Binarizer {
        input: usize,
        output: usize,
        threshold: f32,
    },
    /// `OneHotEncoder`: each value becomes `n` floats. An unknown value with `zeros` unset
    /// (onnxruntime fails the batch) gives NaN.
    OneHot {
        input: usize,
        output: usize,
        keys: Keys,
        n: usize,
        zeros: bool,
    },
    /// `LabelEncoder`.
    LabelEncoder {
        input: usize,
        output: usize,
        keys: Keys,
        values: LabelValues,
    },
    /// `LinearClassifier` and `LinearRegressor`: `x . w + b` in float, then onnxruntime's
    /// post-transform for `n_targets` scores per row.
    Linear {
        input: usize,
        output: usize,
        n_features: usize,
        n_targets: usize,
        coefficients: Vec<f32>,
        intercepts: Option<Vec<f32>>,
        post: Post,
        /// A classifier with one score column and two labels writes `[1 - s, s]`.
        add_second_class: bool,
    },
    Trees(Box<TreeStep>),
}

impl Step {
    /// The slots the step reads.
    pub fn reads(&self) -> Vec<usize> {
        match self {
            Step::Concat { inputs, .. } => inputs.iter().map(|&(s, _)| s).collect(),
            Step::Cast { input, .. }
            | Step::Select { input, .. }
            | Step::Arith { input, .. }
            | Step::Scaler { input, .. }
            | Step::ImputerF32 { input, .. }
            | Step::ImputerI64 { input, .. }
            | Step::Normalizer { input, .. }
            | Step::Binarizer { input, .. }
            | Step::OneHot { input, .. }
            | Step::LabelEncoder { input, .. }
            | Step::Linear { input, .. } => vec![*input],
            Step::Trees(t) => vec![t.input],
        }
    }

    /// Runs the step on the batch: the slot it writes and the data.
    pub fn run(&self, slots: &[Option<Buf>], n_rows: usize) -> (usize, Buf) {
        static EMPTY: Buf = Buf::F32(Vec::new());
        let get = |s: usize| slots.get(s).and_then(|b| b.as_ref()).unwrap_or(&EMPTY);
        match self {
            Step::Cast { input, output, to } => (*output, cast(get(*input), *to)),
            Step::Concat {
                inputs,
                outer,
                output,
                elem,
            } => (
                *output,
                concat(
                    inputs.iter().map(|&(s, b)| (get(s), b)).collect(),
                    *outer,
                    *elem,
                    n_rows,
                ),
            ),
            Step::Select {
                input,
                output,
                stride,
                indices,
            } => (*output, select(get(*input), *stride, indices)),
            Step::Arith {
                input,
                output,
                op,
                c,
                const_first,
                width,
            } => (*output, arith(get(*input), *op, c, *const_first, *width)),
            Step::Scaler {
                input,
                output,
                offset,
                scale,
                stride,
                width,
            } => {
                let x = get(*input);
                let out = (0..x.len())
                    .map(|i| {
                        let j = (i % width) % stride;
                        let (o, s) = (offset[j], scale[j]);
                        match x {
                            Buf::F32(v) => (v[i] - o) * s,
                            Buf::F64(v) => ((v[i] - o as f64) * s as f64) as f32,
                            Buf::I64(v) => (v[i] as f32 - o) * s,
                            Buf::Str(_) => f32::NAN,
                        }
                    })
                    .collect();
                (*output, Buf::F32(out))
            }
            Step::ImputerF32 {
                input,
                output,
                replaced,
                values,
                stride,
                width,
            } => {
                let Buf::F32(x) = get(*input) else {
                    return (*output, Buf::F32(Vec::new()));
                };
                let replaced = &f32::from_bits(*replaced);
                let out = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let hit = (v.is_nan() && replaced.is_nan()) || v == *replaced;
                        if hit {
                            if values.len() == *stride {
                                values[(i % width) % stride]
                            } else {
                                values[0]
                            }
                        } else {
                            v
                        }
                    })
                    .collect();
                (*output, Buf::F32(out))
            }
            Step::ImputerI64 {
                input,
                output,
                replaced,
                values,
                stride,
                width,
            } => {
                let Buf::I64(x) = get(*input) else {
                    return (*output, Buf::I64(Vec::new()));
                };
                let out = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        if v == *replaced {
                            if values.len() == *stride {
                                values[(i % width) % stride]
                            } else {
                                values[0]
                            }
                        } else {
                            v
                        }
                    })
                    .collect();
                (*output, Buf::I64(out))
            }
            Step::Normalizer {
                input,
                output,
                norm,
                width,
            } => (*output, normalize(get(*input), *norm, *width)),
            Step::Binarizer {
                input,
                output,
                threshold,
            } => {
                let x = get(*input);
                let out = (0..x.len())
                    .map(|i| {
                        let v = get_f64(x, i) as f32;
                        if v.is_nan() {
                            f32::NAN
                        } else if v > *threshold {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                (*output, Buf::F32(out))
            }
            Step::OneHot {
                input,
                output,
                keys,
                n,
                zeros,
            } => (*output, one_hot(get(*input), keys, *n, *zeros)),
            Step::LabelEncoder {
                input,
                output,
                keys,
                values,
            } => (*output, label_encode(get(*input), keys, values)),
            Step::Linear {
                input,
                output,
                n_features,
                n_targets,
                coefficients,
                intercepts,
                post,
                add_second_class,
            } => (
                *output,
                linear(
                    get(*input),
                    n_rows,
                    *n_features,
                    *n_targets,
                    coefficients,
                    intercepts.as_deref(),
                    *post,
                    *add_second_class,
                ),
            ),
            Step::Trees(t) => (t.output, t.run(get(t.input), n_rows)),
        }
    }
}

fn cast(x: &Buf, to: Elem) -> Buf {
    match (x, to) {
        (Buf::F32(v), Elem::F32) => Buf::F32(v.clone()),
        (Buf::F32(v), Elem::F64) => Buf::F64(v.iter().map(|&a| a as f64).collect()),
        (Buf::F32(v), Elem::I64) => Buf::I64(v.iter().map(|&a| f64_to_i64(a as f64)).collect()),
        (Buf::F64(v), Elem::F32) => Buf::F32(v.iter().map(|&a| a as f32).collect()),
        (Buf::F64(v), Elem::F64) => Buf::F64(v.clone()),
        (Buf::F64(v), Elem::I64) => Buf::I64(v.iter().map(|&a| f64_to_i64(a)).collect()),
        (Buf::I64(v), Elem::F32) => Buf::F32(v.iter().map(|&a| a as f32).collect()),
        (Buf::I64(v), Elem::F64) => Buf::F64(v.iter().map(|&a| a as f64).collect()),
        (Buf::I64(v), Elem::I64) => Buf::I64(v.clone()),
        (Buf::Str(v), Elem::Str) => Buf::Str(v.clone()),
        // Refused at import.
        (b, _) => Buf::F32(vec![f32::NAN; b.len()]),
    }
}

fn concat(inputs: Vec<(&Buf, usize)>, outer: usize, elem: Elem, n_rows: usize) -> Buf {
    let total: usize = inputs.iter().map(|&(_, b)| b).sum::<usize>() * outer;
    macro_rules! cat {
        ($variant:ident, $fill:expr) => {{
            let mut out = Vec::with_capacity(total * n_rows);
            for r in 0..n_rows {
                for o in 0..outer {
                    for &(b, block) in &inputs {
                        let start = (r * outer + o) * block;
                        match b {
                            Buf::$variant(v) if v.len() >= start + block => {
                                out.extend_from_slice(&v[start..start + block])
                            }
                            _ => out.extend(std::iter::repeat_with(|| $fill).take(block)),
                        }
                    }
                }
            }
            Buf::$variant(out)
        }};
    }
    match elem {
        Elem::F32 => cat!(F32, f32::NAN),
        Elem::F64 => cat!(F64, f64::NAN),
        Elem::I64 => cat!(I64, i64::MIN),
        Elem::Str => cat!(Str, String::new()),
    }
}

fn select(x: &Buf, stride: usize, indices: &[usize]) -> Buf {
    macro_rules! sel {
        ($variant:ident, $v:expr) => {{
            let v = $v;
            let rows = if stride == 0 { 0 } else { v.len() / stride };
            let mut out = Vec::with_capacity(rows * indices.len());
            for r in 0..rows {
                let row = &v[r * stride..(r + 1) * stride];
                out.extend(indices.iter().map(|&j| row[j].clone()));
            }
            Buf::$variant(out)
        }};
    }
    match x {
        Buf::F32(v) => sel!(F32, v),
        Buf::F64(v) => sel!(F64, v),
        Buf::I64(v) => sel!(I64, v),
        Buf::Str(v) => sel!(Str, v),
    }
}

fn arith(x: &Buf, op: ArithOp, c: &[f64], const_first: bool, width: usize) -> Buf {
    let cj = |i: usize| if c.len() == 1 { c[0] } else { c[i % width] };
    macro_rules! apply {
        ($a:expr, $b:expr) => {{
            let (a, b) = if const_first { ($b, $a) } else { ($a, $b) };
            match op {
                ArithOp::Add => a + b,
                ArithOp::Sub => a - b,
                ArithOp::Mul => a * b,
                ArithOp::Div => a / b,
            }
        }};
    }
    match x {
        Buf::F32(v) => Buf::F32(
            v.iter()
                .enumerate()
                .map(|(i, &a)| apply!(a, cj(i) as f32))
                .collect(),
        ),
        Buf::F64(v) => Buf::F64(
            v.iter()
                .enumerate()
                .map(|(i, &a)| apply!(a, cj(i)))
                .collect(),
        ),
        Buf::I64(v) => Buf::I64(
            v.iter()
                .enumerate()
                .map(|(i, &a)| {
                    let b = cj(i) as i64;
                    let (a, b) = if const_first { (b, a) } else { (a, b) };
                    match op {
                        ArithOp::Add => a.wrapping_add(b),
                        ArithOp::Sub => a.wrapping_sub(b),
                        ArithOp::Mul => a.wrapping_mul(b),
                        ArithOp::Div => a.checked_div(b).unwrap_or(0),
                    }
                })
                .collect(),
        ),
        Buf::Str(v) => Buf::Str(v.clone()),
    }
}

fn normalize(x: &Buf, norm: Norm, width: usize) -> Buf {
    let n = x.len();
    let mut out = vec![0f32; n];
    if width == 0 {
        return Buf::F32(out);
    }
    for (r, o) in out.chunks_mut(width).enumerate() {
        let at = |j: usize| get_f64(x, r * width + j);
        match norm {
            Norm::Max => {
                let mut max = f32::MIN;
                for j in 0..width {
                    max = max.max(at(j) as f32);
                }
                for (j, o) in o.iter_mut().enumerate() {
                    *o = if max != 0.0 {
                        at(j) as f32 / max
                    } else {
                        at(j) as f32
                    };
                }
            }
            Norm::L1 => {
                let mut sum = 0f32;
                for j in 0..width {
                    sum += abs_in_type(x, r * width + j);
                }
                for (j, o) in o.iter_mut().enumerate() {
                    *o = if sum != 0.0 {
                        at(j) as f32 / sum
                    } else {
                        at(j) as f32
                    };
                }
            }
            Norm::L2 => {
                let mut sum = 0f32;
                for (j, o) in o.iter_mut().enumerate() {
                    *o = square_in_type(x, r * width + j);
                    sum += *o;
                }
                for (j, o) in o.iter_mut().enumerate() {
                    let v = at(j);
                    *o = if sum != 0.0 {
                        let s = (*o / sum).sqrt();
                        if v < 0.0 {
                            -s
                        } else {
                            s
                        }
                    } else {
                        v as f32
                    };
                }
            }
        }
    }
    Buf::F32(out)
}

/// `static_cast<float>(std::abs(x))` in the input's type.
fn abs_in_type(x: &Buf, i: usize) -> f32 {
    match x {
        Buf::F32(v) => v[i].abs(),
        Buf::F64(v) => v[i].abs() as f32,
        Buf::I64(v) => v[i].wrapping_abs() as f32,
        Buf::Str(_) => f32::NAN,
    }
}

/// `static_cast<float>(x * x)` in the input's type.
fn square_in_type(x: &Buf, i: usize) -> f32 {
    match x {
        Buf::F32(v) => v[i] * v[i],
        Buf::F64(v) => (v[i] * v[i]) as f32,
        Buf::I64(v) => v[i].wrapping_mul(v[i]) as f32,
        Buf::Str(_) => f32::NAN,
    }
}

fn one_hot(x: &Buf, keys: &Keys, n: usize, zeros: bool) -> Buf {
    let len = x.len();
    let mut out = vec![0f32; len * n];
    for i in 0..len {
        let hit = match (x, keys) {
            (Buf::Str(v), Keys::Str(m)) => m.get(&v[i]).copied(),
            (Buf::I64(v), Keys::Int(m)) => m.get(&v[i]).copied(),
            (Buf::F32(v), Keys::Int(m)) => m.get(&f64_to_i64(v[i] as f64)).copied(),
            (Buf::F64(v), Keys::Int(m)) => m.get(&f64_to_i64(v[i])).copied(),
            _ => None,
        };
        let row = &mut out[i * n..(i + 1) * n];
        match hit {
            Some(j) => row[j] = 1.0,
            None if !zeros => row.fill(f32::NAN),
            None => {}
        }
    }
    Buf::F32(out)
}

fn label_encode(x: &Buf, keys: &Keys, values: &LabelValues) -> Buf {
    let len = x.len();
    let idx = |i: usize| -> Option<usize> {
        match (x, keys) {
            (Buf::Str(v), Keys::Str(m)) => m.get(&v[i]).copied(),
            (Buf::I64(v), Keys::Int(m)) => m.get(&v[i]).copied(),
            _ => None,
        }
    };
    match values {
        LabelValues::Str(v, d) => Buf::Str(
            (0..len)
                .map(|i| idx(i).map(|j| v[j].clone()).unwrap_or_else(|| d.clone()))
                .collect(),
        ),
        LabelValues::Int(v, d) => Buf::I64(
            (0..len)
                .map(|i| idx(i).map(|j| v[j]).unwrap_or(*d))
                .collect(),
        ),
        LabelValues::F32(v, d) => Buf::F32(
            (0..len)
                .map(|i| idx(i).map(|j| v[j]).unwrap_or(*d))
                .collect(),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn linear(
    x: &Buf,
    n_rows: usize,
    n_features: usize,
    n_targets: usize,
    w: &[f32],
    b: Option<&[f32]>,
    post: Post,
    add_second_class: bool,
) -> Buf {
    let width = if add_second_class { 2 } else { n_targets };
    let mut out = Vec::with_capacity(n_rows * width);
    let mut scores = vec![0f32; n_targets];
    for r in 0..n_rows {
        for (t, s) in scores.iter_mut().enumerate() {
            // The input cast to float, as onnxruntime's GEMM reads it; MLAS accumulates the
            // products in float with fused multiply-adds in feature order, then adds the
            // intercept (GEMM's C, beta 1).
            let mut acc = 0f32;
            for j in 0..n_features {
                let i = r * n_features + j;
                let xv = if i < x.len() {
                    get_f64(x, i) as f32
                } else {
                    f32::NAN
                };
                acc = xv.mul_add(w[t * n_features + j], acc);
            }
            *s = acc + b.map(|b| b[t]).unwrap_or(0.0);
        }
        if n_targets == 1 {
            let s = scores[0];
            if post == Post::Probit {
                out.push(trees::probit(s));
            } else if add_second_class && post == Post::Logistic {
                let p = trees::logistic(s);
                out.push(1.0 - p);
                out.push(p);
            } else if add_second_class {
                out.push(1.0 - s);
                out.push(s);
            } else {
                out.push(s);
            }
        } else {
            let start = out.len();
            out.extend_from_slice(&scores);
            if post == Post::Logistic {
                // The linear models' LOGISTIC is MLAS's vectorised approximation.
                out[start..].iter_mut().for_each(|v| *v = mlas_logistic(*v));
            } else {
                trees::post_transform(&mut out[start..], post);
            }
        }
    }
    Buf::F32(out)
}

/// MLAS's logistic (`MlasComputeLogistic`, the FMA3 kernel on x86-64): Eigen's rational
/// approximation on `[-18, 18]`, the result clamped to `[0, 1]`.
#[allow(clippy::excessive_precision)]
pub(crate) fn mlas_logistic(x: f32) -> f32 {
    let v = x.clamp(-18.0, 18.0);
    let v = if x.is_nan() { x } else { v };
    let v2 = v * v;
    let mut p = v2.mul_add(4.370_310_125_798_01e-11, 1.156_273_244_599_42e-7);
    p = p.mul_add(v2, 6.085_748_646_001_43e-5);
    p = p.mul_add(v2, 8.513_771_333_047_01e-3);
    p = p.mul_add(v2, 2.482_879_470_615_29e-1);
    p *= v;
    let mut q = v2.mul_add(6.102_473_897_556_81e-13, 5.761_021_369_934_27e-9);
    q = q.mul_add(v2, 6.291_067_850_170_40e-6);
    q = q.mul_add(v2, 1.701_988_173_740_94e-3);
    q = q.mul_add(v2, 1.168_176_569_044_53e-1);
    q = q.mul_add(v2, 9.931_519_210_231_80e-1);
    (p / q + 0.5).clamp(0.0, 1.0)
}

/// Compiles one node (its op_type is in `SUPPORTED_OPS`).
pub(crate) fn compile(c: &mut Compiler, node: &NodeProto, a: &Attrs) -> Result<()> {
    let input = |i: usize| -> Result<&str> {
        node.input
            .get(i)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("input {i} is missing"))
    };
    let output0 = node
        .output
        .first()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("the node has no output"))?
        .clone();
    match node.op_type.as_str() {
        "Identity" | "ZipMap" => {
            let x = c.value(input(0)?)?;
            if node.op_type == "ZipMap" && x.elem != Elem::F32 {
                bail!("ZipMap reads float probabilities, not {}", x.elem.name());
            }
            let dims = x.dims.clone();
            c.alias(&output0, &x, dims);
        }
        "Cast" => {
            let x = c.value(input(0)?)?;
            let to = a
                .int("to")
                .ok_or_else(|| anyhow!("attribute `to` is missing"))?;
            let to = Elem::from_onnx(to as i32)
                .ok_or_else(|| anyhow!("casting to data type {to} is not supported"))?;
            if (x.elem == Elem::Str) != (to == Elem::Str) {
                bail!(
                    "casting {} to {} is not supported",
                    x.elem.name(),
                    to.name()
                );
            }
            let input = x.slot;
            c.emit(&output0, to, x.dims.clone(), |output| Step::Cast {
                input,
                output,
                to,
            })?;
        }
        "Concat" => {
            let xs = node
                .input
                .iter()
                .map(|n| c.value(n))
                .collect::<Result<Vec<Value>>>()?;
            let first = xs.first().ok_or_else(|| anyhow!("Concat has no input"))?;
            let rank = first.dims.len() + 1;
            let axis = a
                .int("axis")
                .ok_or_else(|| anyhow!("attribute `axis` is missing"))?;
            let axis = if axis < 0 { axis + rank as i64 } else { axis };
            if axis < 1 || axis >= rank as i64 {
                bail!("Concat along axis {axis} of a rank-{rank} tensor is not supported (only after the rows)");
            }
            let ax = axis as usize - 1; // index into dims
            let elem = first.elem;
            let mut dims = first.dims.clone();
            dims[ax] = 0;
            for x in &xs {
                if x.elem != elem || x.dims.len() != first.dims.len() {
                    bail!("Concat of tensors of different types or ranks");
                }
                for (d, (&a1, &a2)) in x.dims.iter().zip(&first.dims).enumerate() {
                    if d != ax && a1 != a2 {
                        bail!("Concat of tensors of different shapes");
                    }
                }
                dims[ax] += x.dims[ax];
            }
            let outer: usize = first.dims[..ax].iter().product();
            let inputs = xs
                .iter()
                .map(|x| (x.slot, x.dims[ax..].iter().product()))
                .collect();
            c.emit(&output0, elem, dims, |output| Step::Concat {
                inputs,
                outer,
                output,
                elem,
            })?;
        }
        "Reshape" => {
            let x = c.value(input(0)?)?;
            let shape = c
                .constant(input(1)?)
                .and_then(|k| k.as_i64())
                .ok_or_else(|| anyhow!("the shape must be a constant int64 tensor"))?
                .to_vec();
            let allowzero = a.int("allowzero").unwrap_or(0) != 0;
            let width = x.width();
            let (first, rest) = shape
                .split_first()
                .ok_or_else(|| anyhow!("reshaping to a scalar is not supported"))?;
            if !(*first == -1 || (*first == 0 && !allowzero)) {
                bail!("Reshape must keep the rows as the first dimension (got {first})");
            }
            let mut dims = Vec::new();
            let mut infer = None;
            for (i, &d) in rest.iter().enumerate() {
                match d {
                    -1 if *first != -1 && infer.is_none() => {
                        infer = Some(i);
                        dims.push(1);
                    }
                    0 if !allowzero => dims.push(
                        *x.dims
                            .get(i)
                            .ok_or_else(|| anyhow!("Reshape copies a missing dimension"))?,
                    ),
                    d if d >= 1 => dims.push(usize::try_from(d)?),
                    _ => bail!("Reshape to {shape:?} is not supported"),
                }
            }
            let known: usize = dims
                .iter()
                .try_fold(1usize, |p, &d| p.checked_mul(d))
                .ok_or_else(|| anyhow!("Reshape overflows"))?;
            if let Some(i) = infer {
                if known == 0 || width % known != 0 {
                    bail!("Reshape to {shape:?} does not fit {width} values per row");
                }
                dims[i] = width / known;
            } else if known != width {
                bail!("Reshape to {shape:?} does not fit {width} values per row");
            }
            c.alias(&output0, &x, dims);
        }
        "Flatten" => {
            let x = c.value(input(0)?)?;
            let rank = x.dims.len() as i64 + 1;
            let axis = a.int("axis").unwrap_or(1);
            let axis = if axis < 0 { axis + rank } else { axis };
            if axis != 1 {
                bail!("Flatten along axis {axis} is not supported (only 1)");
            }
            let w = x.width();
            c.alias(&output0, &x, vec![w]);
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let op = match node.op_type.as_str() {
                "Add" => ArithOp::Add,
                "Sub" => ArithOp::Sub,
                "Mul" => ArithOp::Mul,
                _ => ArithOp::Div,
            };
            let (n0, n1) = (input(0)?, input(1)?);
            let (x, k, const_first) = match (c.constant(n0), c.constant(n1)) {
                (None, Some(k)) => (c.value(n0)?, k.clone(), false),
                (Some(k), None) => (c.value(n1)?, k.clone(), true),
                _ => bail!(
                    "{} is supported only between a computed tensor and a constant",
                    node.op_type
                ),
            };
            if k.elem() != x.elem || x.elem == Elem::Str {
                bail!(
                    "{} of {} and a {} constant",
                    node.op_type,
                    x.elem.name(),
                    k.elem().name()
                );
            }
            if x.elem == Elem::I64 && op == ArithOp::Div {
                bail!("integer Div is not supported");
            }
            let width = x.width();
            // The constant broadcasts along the rows: a scalar, or one value per column.
            let mut kd: &[usize] = &k.dims;
            while kd.first() == Some(&1) && kd.len() > x.dims.len() {
                kd = &kd[1..];
            }
            let fits = k.len() == 1 || (k.len() == width && x.dims.ends_with(kd));
            if !fits || k.dims.len() > x.dims.len() + 1 {
                bail!(
                    "a constant of shape {:?} does not broadcast over rows of shape {:?}",
                    k.dims,
                    x.dims
                );
            }
            let cv = k
                .as_f64()
                .ok_or_else(|| anyhow!("the constant is not numeric"))?;
            let input = x.slot;
            let elem = x.elem;
            c.emit(&output0, elem, x.dims.clone(), |output| Step::Arith {
                input,
                output,
                op,
                c: cv,
                const_first,
                width,
            })?;
        }
        "ArrayFeatureExtractor" | "Gather" => {
            let x = c.value(input(0)?)?;
            let idx = c
                .constant(input(1)?)
                .ok_or_else(|| anyhow!("the indices must be a constant"))?;
            let raw = idx
                .as_i64()
                .ok_or_else(|| anyhow!("the indices must be int64"))?;
            if x.dims.is_empty() {
                bail!("selecting from a [N] tensor is not supported");
            }
            let stride = *x.dims.last().expect("rank >= 1");
            if node.op_type == "Gather" {
                let rank = x.dims.len() as i64 + 1;
                let axis = a.int("axis").unwrap_or(0);
                let axis = if axis < 0 { axis + rank } else { axis };
                if axis != rank - 1 || idx.dims.len() != 1 {
                    bail!("Gather is supported only along the last axis with a 1-D index");
                }
            }
            let mut indices = Vec::with_capacity(raw.len());
            for &i in raw {
                let j = if node.op_type == "Gather" && i < 0 {
                    i + stride as i64
                } else {
                    i
                };
                if j < 0 || j >= stride as i64 {
                    bail!("index {i} is out of range for {stride} columns");
                }
                indices.push(j as usize);
            }
            if indices.is_empty() {
                bail!("no index to select");
            }
            let mut dims = x.dims.clone();
            *dims.last_mut().expect("rank >= 1") = indices.len();
            let input = x.slot;
            c.emit(&output0, x.elem, dims, |output| Step::Select {
                input,
                output,
                stride,
                indices,
            })?;
        }
        "Scaler" => {
            let x = c.value(input(0)?)?;
            if x.elem == Elem::Str {
                bail!("Scaler reads numbers");
            }
            let scale = a.floats("scale").to_vec();
            let offset = a.floats("offset").to_vec();
            if scale.is_empty() || scale.len() != offset.len() {
                bail!(
                    "scale has {} values and offset {}",
                    scale.len(),
                    offset.len()
                );
            }
            let (stride, width) = column_stride(&x, scale.len())?;
            let input = x.slot;
            c.emit(&output0, Elem::F32, x.dims.clone(), |output| Step::Scaler {
                input,
                output,
                offset,
                scale,
                stride,
                width,
            })?;
        }
        "Imputer" => {
            let x = c.value(input(0)?)?;
            let fl = a.floats("imputed_value_floats").to_vec();
            let il = a.ints("imputed_value_int64s").to_vec();
            if fl.is_empty() == il.is_empty() {
                bail!("exactly one of imputed_value_floats and imputed_value_int64s is expected");
            }
            let input = x.slot;
            match x.elem {
                Elem::F32 if !fl.is_empty() => {
                    let replaced = a.float("replaced_value_float").ok_or_else(|| anyhow!("replaced_value_float is missing"))?.to_bits();
                    let (stride, width) = column_stride(&x, fl.len())?;
                    c.emit(&output0, Elem::F32, x.dims.clone(), |output| Step::ImputerF32 { input, output, replaced, values: fl, stride, width })?;
                }
                Elem::I64 if !il.is_empty() => {
                    let replaced = a.int("replaced_value_int64").ok_or_else(|| anyhow!("replaced_value_int64 is missing"))?;
                    let (stride, width) = column_stride(&x, il.len())?;
                    c.emit(&output0, Elem::I64, x.dims.clone(), |output| Step::ImputerI64 { input, output, replaced, values: il, stride, width })?;
                }
                e => bail!("Imputer on {} with {} values (onnxruntime imputes float with floats, int64 with int64s)", e.name(), if fl.is_empty() { "int64" } else { "float" }),
            }
        }
        "Normalizer" => {
            let x = c.value(input(0)?)?;
            if x.elem == Elem::Str || x.dims.len() != 1 {
                bail!("Normalizer reads a [N, k] tensor of numbers");
            }
            let norm = match a.string("norm").as_deref().unwrap_or("MAX") {
                "MAX" => Norm::Max,
                "L1" => Norm::L1,
                "L2" => Norm::L2,
                other => bail!("unknown norm {other}"),
            };
            let width = x.width();
            let input = x.slot;
            c.emit(&output0, Elem::F32, x.dims.clone(), |output| {
                Step::Normalizer {
                    input,
                    output,
                    norm,
                    width,
                }
            })?;
        }
        "Binarizer" => {
            let x = c.value(input(0)?)?;
            if x.elem != Elem::F32 {
                bail!("Binarizer reads float (onnxruntime), not {}", x.elem.name());
            }
            let threshold = a.float("threshold").unwrap_or(1.0);
            let input = x.slot;
            c.emit(&output0, Elem::F32, x.dims.clone(), |output| {
                Step::Binarizer {
                    input,
                    output,
                    threshold,
                }
            })?;
        }
        "OneHotEncoder" => {
            let x = c.value(input(0)?)?;
            if x.dims.len() > 1 {
                bail!("OneHotEncoder reads a tensor of at most two dimensions");
            }
            let ints = a.ints("cats_int64s");
            let strs = a.strings("cats_strings");
            if !ints.is_empty() && !strs.is_empty() {
                bail!("both cats_int64s and cats_strings are set");
            }
            let (keys, n) = if !ints.is_empty() {
                if x.elem == Elem::Str {
                    bail!("OneHotEncoder with integer categories reads numbers");
                }
                let mut m = HashMap::new();
                for (i, &k) in ints.iter().enumerate() {
                    m.insert(k, i); // the last position wins, as onnxruntime's map assignment
                }
                (Keys::Int(m), ints.len())
            } else if !strs.is_empty() {
                if x.elem != Elem::Str {
                    bail!("OneHotEncoder with string categories reads strings");
                }
                let n = strs.len();
                let mut m = HashMap::new();
                for (i, k) in strs.into_iter().enumerate() {
                    m.insert(k, i);
                }
                (Keys::Str(m), n)
            } else {
                bail!("OneHotEncoder has no categories");
            };
            let zeros = a.int("zeros").unwrap_or(1) != 0;
            let mut dims = x.dims.clone();
            dims.push(n);
            let input = x.slot;
            c.emit(&output0, Elem::F32, dims, |output| Step::OneHot {
                input,
                output,
                keys,
                n,
                zeros,
            })?;
        }
        "LabelEncoder" => {
            let x = c.value(input(0)?)?;
            let (keys, values, elem) = label_encoder(a, x.elem)?;
            let input = x.slot;
            c.emit(&output0, elem, x.dims.clone(), |output| {
                Step::LabelEncoder {
                    input,
                    output,
                    keys,
                    values,
                }
            })?;
        }
        "LinearClassifier" | "LinearRegressor" => linear_model(c, node, a)?,
        "TreeEnsembleClassifier" | "TreeEnsembleRegressor" | "TreeEnsemble" => {
            trees::compile(c, node, a)?
        }
        other => bail!("operator {other} is not supported"),
    }
    Ok(())
}

/// The column stride onnxruntime's per-feature kernels use (the second dimension) and the row
/// width; refuses a `[N]` input unless the parameters have one value.
fn column_stride(x: &Value, n_params: usize) -> Result<(usize, usize)> {
    let width = x.width();
    match x.dims.first() {
        Some(&s) if s > 0 => Ok((s, width.max(1))),
        None if n_params == 1 => Ok((1, 1)),
        _ => bail!("a per-column operator on a tensor of shape {:?}", x.dims),
    }
}

fn label_encoder(a: &Attrs, input: Elem) -> Result<(Keys, LabelValues, Elem)> {
    // Opset 1: classes_strings maps string <-> position.
    if a.has("classes_strings") {
        let classes = a.strings("classes_strings");
        return match input {
            Elem::Str => {
                let mut m = HashMap::new();
                for (i, s) in classes.iter().enumerate() {
                    m.insert(s.clone(), i); // the last wins (map assignment)
                }
                let vals = (0..classes.len() as i64).collect();
                Ok((
                    Keys::Str(m),
                    LabelValues::Int(vals, a.int("default_int64").unwrap_or(-1)),
                    Elem::I64,
                ))
            }
            Elem::I64 => {
                let m = (0..classes.len()).map(|i| (i as i64, i)).collect();
                let d = a
                    .string("default_string")
                    .unwrap_or_else(|| "_Unused".into());
                Ok((Keys::Int(m), LabelValues::Str(classes, d), Elem::Str))
            }
            e => bail!("LabelEncoder on {}", e.name()),
        };
    }
    let (keys, n) = if input == Elem::Str {
        let k = a.strings("keys_strings");
        let n = k.len();
        let mut m = HashMap::new();
        for (i, s) in k.into_iter().enumerate() {
            m.entry(s).or_insert(i); // the first wins (emplace)
        }
        (Keys::Str(m), n)
    } else if input == Elem::I64 {
        let k = a.ints("keys_int64s");
        let mut m = HashMap::new();
        for (i, &s) in k.iter().enumerate() {
            m.entry(s).or_insert(i);
        }
        (Keys::Int(m), k.len())
    } else {
        bail!("LabelEncoder on {} keys is not supported", input.name());
    };
    if n == 0 {
        bail!("LabelEncoder has no keys of the input's type");
    }
    let vs = a.strings("values_strings");
    let vi = a.ints("values_int64s");
    let vf = a.floats("values_floats");
    let (values, elem) = if !vs.is_empty() {
        (
            LabelValues::Str(
                vs,
                a.string("default_string")
                    .unwrap_or_else(|| "_Unused".into()),
            ),
            Elem::Str,
        )
    } else if !vi.is_empty() {
        (
            LabelValues::Int(vi.to_vec(), a.int("default_int64").unwrap_or(-1)),
            Elem::I64,
        )
    } else if !vf.is_empty() {
        (
            LabelValues::F32(vf.to_vec(), a.float("default_float").unwrap_or(-0.0)),
            Elem::F32,
        )
    } else {
        bail!("LabelEncoder has no values");
    };
    let nv = match &values {
        LabelValues::Str(v, _) => v.len(),
        LabelValues::Int(v, _) => v.len(),
        LabelValues::F32(v, _) => v.len(),
    };
    if nv != n {
        bail!("LabelEncoder has {n} keys and {nv} values");
    }
    Ok((keys, values, elem))
}

fn linear_model(c: &mut Compiler, node: &NodeProto, a: &Attrs) -> Result<()> {
    let classifier = node.op_type == "LinearClassifier";
    let x = c.value(node.input.first().map(|s| s.as_str()).unwrap_or(""))?;
    if x.elem == Elem::Str || x.dims.len() > 1 {
        bail!("{} reads a [N, k] tensor of numbers", node.op_type);
    }
    if !classifier && x.elem != Elem::F32 {
        bail!(
            "LinearRegressor reads float in onnxruntime, not {}",
            x.elem.name()
        );
    }
    let n_features = x.width();
    let coefficients = a.floats("coefficients").to_vec();
    let intercepts = a.floats("intercepts").to_vec();
    let post = Post::parse(a.string("post_transform"))?;
    let (n_targets, labels) = if classifier {
        let ints = a.ints("classlabels_ints");
        let strs = a.strings("classlabels_strings");
        let labels: Vec<Label> = if !strs.is_empty() {
            strs.into_iter().map(Label::Text).collect()
        } else {
            ints.iter().map(|&i| Label::Int(i)).collect()
        };
        (intercepts.len(), Some(labels))
    } else {
        let t = a.int("targets").unwrap_or(1);
        (
            usize::try_from(t).map_err(|_| anyhow!("targets is {t}"))?,
            None,
        )
    };
    if n_targets == 0 {
        bail!("{} has no intercepts (no classes)", node.op_type);
    }
    if Some(coefficients.len()) != n_targets.checked_mul(n_features) {
        bail!(
            "{} coefficients for {n_targets} targets of {n_features} features",
            coefficients.len()
        );
    }
    let intercepts = if intercepts.len() == n_targets {
        Some(intercepts)
    } else {
        None
    };
    let add_second_class =
        classifier && n_targets == 1 && labels.as_ref().map(|l| l.len()) == Some(2);
    if add_second_class && post == Post::Probit {
        bail!(
            "PROBIT with one score column for two labels: onnxruntime's output rows are misaligned"
        );
    }
    let width = if add_second_class { 2 } else { n_targets };
    let out_name = c.scores_output(node, classifier)?;
    let input = x.slot;
    c.emit(&out_name, Elem::F32, vec![width], |output| Step::Linear {
        input,
        output,
        n_features,
        n_targets,
        coefficients,
        intercepts,
        post,
        add_second_class,
    })?;
    let task = match labels {
        Some(labels) => Task::Classification { labels },
        None => Task::Regression,
    };
    c.set_model(
        task,
        format!("{} post_transform={}", node.op_type, post.name()),
    );
    Ok(())
}
