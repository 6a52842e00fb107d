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
