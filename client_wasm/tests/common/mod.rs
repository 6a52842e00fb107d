//! What the CPU operations' tests share.
// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};

type B = Autodiff<Flex>;

/// A convolution case's random input `shape`, weight `[C_out, C_in, kh, kw]` and bias, and its
/// options (one group).
pub fn case(
    shape: [usize; 4],
    [cout, kh, kw]: [usize; 3],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 1>, ConvOptions<2>) {
    let (normal, device) = (Distribution::Normal(0.0, 1.0), Default::default());
    let x = Tensor::random(shape, normal, &device);
    let w = Tensor::random([cout, shape[1], kh, kw], normal, &device);
    let b = Tensor::random([cout], normal, &device);
    (x, w, b, ConvOptions::new(stride, padding, dilation, 1))
}

/// The largest absolute difference between two tensors, relative to the first's largest value.
pub fn gap<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    let scale = a.clone().abs().max().into_scalar();
    (a - b).abs().max().into_scalar() / scale.max(1e-6)
}

/// A layer's output and its input, weight and bias gradients, from one side of a comparison.
pub type Results<const D: usize, const W: usize> = (
    Tensor<Flex, D>,
    Tensor<Flex, D>,
    Tensor<Flex, W>,
    Option<Tensor<Flex, 1>>,
);

/// Assert that each of `ours` is within 1e-5 of `theirs`, relative to its largest value.
pub fn assert_close<const D: usize, const W: usize>(
    theirs: Results<D, W>,
    ours: Results<D, W>,
    case: &str,
) {
    assert!(gap(theirs.0, ours.0) < 1e-5, "output, {case}");
    assert!(gap(theirs.1, ours.1) < 1e-5, "input gradient, {case}");
    assert!(gap(theirs.2, ours.2) < 1e-5, "weight gradient, {case}");
    if let (Some(theirs), Some(ours)) = (theirs.3, ours.3) {
        assert!(gap(theirs, ours) < 1e-5, "bias gradient, {case}");
    }
}

/// `layer`'s output on `x0`, `w0` and (when `with_bias`) `b0`, and the gradients of a loss
/// that weighs every output by `weights`, so that misplaced gradients show.
pub fn run<const D: usize, const W: usize>(
    (x0, w0, b0): (&Tensor<B, D>, &Tensor<B, W>, &Tensor<B, 1>),
    with_bias: bool,
    weights: &Tensor<B, D>,
    layer: impl Fn(Tensor<B, D>, Tensor<B, W>, Option<Tensor<B, 1>>) -> Tensor<B, D>,
) -> Results<D, W> {
    let (x, w, b) = (
        x0.clone().require_grad(),
        w0.clone().require_grad(),
        b0.clone().require_grad(),
    );
    let y = layer(x.clone(), w.clone(), with_bias.then_some(b.clone()));
    let grads = (y.clone() * weights.clone()).sum().backward();
    let db = with_bias.then(|| b.grad(&grads).unwrap());
    (
        y.inner(),
        x.grad(&grads).unwrap(),
        w.grad(&grads).unwrap(),
        db,
    )
}
