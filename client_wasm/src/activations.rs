//! A layer's output, whatever its rank, and the stateless layers that transform one.
//!
//! Burn fixes a tensor's rank in its type; a spec graph chooses ranks at run time (a reshape to
//! `[T, d]`, a permute of `[C, H, W]`). `Act` holds one of the ranks a spec may produce — two to
//! five dims with the batch, or integer ids for an embedding — and `each!` applies a rank-generic
//! expression to whichever it holds.

use burn::tensor::activation::{leaky_relu, log_softmax, sigmoid, softmax, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::module::{
    adaptive_avg_pool1d, adaptive_avg_pool2d, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d,
};
use burn::tensor::{DType, Int, Tensor};

use crate::cpu_pool_op;
use crate::cpu_relu_op;
use crate::layer_spec::{Approximate, LayerSpec, Pool};

#[derive(Debug, Clone)]
pub enum Act<B: Backend> {
    D2(Tensor<B, 2>),
    D3(Tensor<B, 3>),
    D4(Tensor<B, 4>),
    D5(Tensor<B, 5>),
    Ids(Tensor<B, 2, Int>),
}

/// Apply `$body` (an expression in the tensor `$t`, keeping its rank) to any float `Act`.
macro_rules! each {
    ($act:expr, |$t:ident| $body:expr) => {
        match $act {
            Act::D2($t) => Act::D2($body),
            Act::D3($t) => Act::D3($body),
            Act::D4($t) => Act::D4($body),
            Act::D5($t) => Act::D5($body),
            Act::Ids(_) => unreachable!("the spec walk gives ids only to an embedding"),
        }
    };
}
pub(crate) use each;

/// Concatenate inputs that all hold `Act::$rank` along dim `$d`.
macro_rules! cat {
    ($inputs:expr, $d:expr, $rank:ident) => {
        Act::$rank(Tensor::cat(
            $inputs
                .into_iter()
                .map(|a| match a {
                    Act::$rank(t) => t,
                    _ => unreachable!("the spec walk concatenates tensors of one rank"),
                })
                .collect(),
            $d,
        ))
    };
}

impl<B: Backend> Act<B> {
    /// The float dtype held (ids: `I32`, never cast).
    pub fn dtype(&self) -> DType {
        match self {
            Act::D2(t) => t.dtype(),
            Act::D3(t) => t.dtype(),
            Act::D4(t) => t.dtype(),
            Act::D5(t) => t.dtype(),
            Act::Ids(_) => DType::I32,
        }
    }

    /// In `dtype` (see `precision::cast`); ids stay ids.
    pub fn cast(self, dtype: DType) -> Act<B> {
        match self {
            Act::Ids(ids) => Act::Ids(ids),
            float => each!(float, |t| crate::precision::cast(t, dtype)),
        }
    }
}

/// `t` reshaped to `full` (batch included), as the `Act` of that rank.
pub fn reshaped<B: Backend, const D: usize>(t: Tensor<B, D>, full: &[usize]) -> Act<B> {
    match *full {
        [a, b] => Act::D2(t.reshape([a, b])),
        [a, b, c] => Act::D3(t.reshape([a, b, c])),
        [a, b, c, d] => Act::D4(t.reshape([a, b, c, d])),
        [a, b, c, d, e] => Act::D5(t.reshape([a, b, c, d, e])),
        _ => unreachable!("the spec walk keeps 1 to 4 dims per example"),
    }
}

impl<B: Backend> Act<B> {
    /// Reshaped to `[n, shape...]`.
    pub fn shaped(self, n: usize, shape: &[usize]) -> Self {
        let full: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
        match self {
            Act::D2(t) => reshaped(t, &full),
            Act::D3(t) => reshaped(t, &full),
            Act::D4(t) => reshaped(t, &full),
            Act::D5(t) => reshaped(t, &full),
            Act::Ids(_) => unreachable!("ids are never reshaped"),
        }
    }

    pub fn dims(&self) -> Vec<usize> {
        match self {
            Act::D2(t) => t.dims().to_vec(),
            Act::D3(t) => t.dims().to_vec(),
            Act::D4(t) => t.dims().to_vec(),
            Act::D5(t) => t.dims().to_vec(),
            Act::Ids(t) => t.dims().to_vec(),
        }
    }

    pub fn d3(self) -> Tensor<B, 3> {
        match self {
            Act::D3(t) => t,
            _ => unreachable!("the spec walk gives this layer [N, C, L]"),
        }
    }

    pub fn d4(self) -> Tensor<B, 4> {
        match self {
            Act::D4(t) => t,
            _ => unreachable!("the spec walk gives this layer [N, C, H, W]"),
        }
    }

    pub fn ids(self) -> Tensor<B, 2, Int> {
        match self {
            Act::Ids(t) => t,
            _ => unreachable!("the spec walk gives an embedding ids"),
        }
    }

    /// `self + other`, broadcasting size-1 dims of either to `full` (batch included).
    pub fn add(self, other: Self, full: &[usize]) -> Self {
        match (self, other) {
            (Act::D2(a), Act::D2(b)) => Act::D2(a.expand(to::<2>(full)) + b.expand(to::<2>(full))),
            (Act::D3(a), Act::D3(b)) => Act::D3(a.expand(to::<3>(full)) + b.expand(to::<3>(full))),
            (Act::D4(a), Act::D4(b)) => Act::D4(a.expand(to::<4>(full)) + b.expand(to::<4>(full))),
            (Act::D5(a), Act::D5(b)) => Act::D5(a.expand(to::<5>(full)) + b.expand(to::<5>(full))),
            _ => unreachable!("the spec walk adds tensors of one rank"),
        }
    }
}

fn to<const D: usize>(full: &[usize]) -> [usize; D] {
    full.try_into().expect("the spec walk gives the rank")
}

/// A PyTorch dim (0 the batch, negative from the end) of a tensor with `rank` dims.
pub fn axis(dim: i64, rank: usize) -> usize {
    dim.rem_euclid(rank as i64) as usize
}

/// PyTorch's exact GELU, x·(1 + erf(x/√2))/2, built from tensor ops so autodiff takes the exact
/// derivative: Burn's own `gelu` backward is the tanh approximation's, which strays from
/// PyTorch's gradients by up to 1e-4 through a transformer (found on WebGPU).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul(x)
        .div_scalar(2.0)
}

fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // PyTorch's approximate="tanh": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.clone().mul(tanh(inner).add_scalar(1.0)).mul_scalar(0.5)
}

fn pool_args(p: &Pool, n: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let k = p.kernel_size.take(n).to_vec();
    let s = p.stride.map_or(k.clone(), |s| s.take(n).to_vec());
    (k, s, p.padding.take(n).to_vec())
}

/// Run a stateless layer on `inputs`; `out` is its per-example output shape.
pub fn apply<B: Backend>(
    spec: &LayerSpec,
    mut inputs: Vec<Act<B>>,
    n: usize,
    out: &[usize],
) -> Act<B> {
    let full: Vec<usize> = std::iter::once(n).chain(out.iter().copied()).collect();
    let rank = full.len();
    if let LayerSpec::Add {} = spec {
        let mut sum = inputs.remove(0);
        for x in inputs {
            sum = sum.add(x, &full);
        }
        return sum;
    }
    if let LayerSpec::Concat { dim } = spec {
        let d = axis(*dim, rank);
        return match inputs[0] {
            Act::D2(_) => cat!(inputs, d, D2),
            Act::D3(_) => cat!(inputs, d, D3),
            Act::D4(_) => cat!(inputs, d, D4),
            Act::D5(_) => cat!(inputs, d, D5),
            Act::Ids(_) => unreachable!("the spec walk concatenates floats"),
        };
    }
    let x = inputs.swap_remove(0);
    match spec {
        LayerSpec::Flatten { .. } | LayerSpec::Reshape { .. } => x.shaped(n, out),
        LayerSpec::Permute { dims } => each!(x, |t| t.permute(to(dims))),
        LayerSpec::Relu {} => each!(x, |t| cpu_relu_op::relu(t)),
        LayerSpec::Gelu { approximate } => match approximate {
            Approximate::None => each!(x, |t| gelu(t)),
            Approximate::Tanh => each!(x, |t| gelu_tanh(t)),
        },
        LayerSpec::Tanh {} => each!(x, |t| tanh(t)),
        LayerSpec::Sigmoid {} => each!(x, |t| sigmoid(t)),
        LayerSpec::LeakyRelu { negative_slope } => each!(x, |t| leaky_relu(t, *negative_slope)),
        LayerSpec::Softmax { dim } => each!(x, |t| softmax(t, axis(*dim, rank))),
        LayerSpec::LogSoftmax { dim } => each!(x, |t| log_softmax(t, axis(*dim, rank))),
        LayerSpec::Mean { dim, .. } => {
            let dims: Vec<usize> = dim.iter().map(|&d| axis(d, x.dims().len())).collect();
            // Burn's mean keeps each reduced dim as 1; the reshape drops them unless keepdim.
            each!(x, |t| dims.iter().fold(t, |t, &d| t.mean_dim(d))).shaped(n, out)
        }
        LayerSpec::Maxpool1d(p) => {
            let (k, s, pad) = pool_args(p, 1);
            Act::D3(max_pool1d(x.d3(), k[0], s[0], pad[0], 1, false))
        }
        LayerSpec::Avgpool1d(p) => {
            let (k, s, pad) = pool_args(p, 1);
            Act::D3(avg_pool1d(x.d3(), k[0], s[0], pad[0], true, false))
        }
        LayerSpec::Maxpool2d(p) => {
            let (k, s, pad) = pool_args(p, 2);
            let (x, k, s, pad) = (x.d4(), to(&k), to(&s), to(&pad));
            match cpu_pool_op::max_pool2d(&x, k, s, pad) {
                Some(y) => Act::D4(y),
                None => Act::D4(max_pool2d(x, k, s, pad, [1, 1], false)),
            }
        }
        LayerSpec::Avgpool2d(p) => {
            let (k, s, pad) = pool_args(p, 2);
            Act::D4(avg_pool2d(x.d4(), to(&k), to(&s), to(&pad), true, false))
        }
        LayerSpec::AdaptiveAvgpool1d { output_size } => {
            Act::D3(adaptive_avg_pool1d(x.d3(), output_size.0[0]))
        }
        LayerSpec::AdaptiveAvgpool2d { output_size } => {
            Act::D4(adaptive_avg_pool2d(x.d4(), output_size.0))
        }
        other => unreachable!("{} has state, so it is not run here", other.kind()),
    }
}
