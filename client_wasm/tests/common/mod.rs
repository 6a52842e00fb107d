//! What the convolution tests share.

use burn::backend::Flex;
use burn::tensor::Tensor;

/// The largest absolute difference between two tensors, relative to the first's largest value.
pub fn gap<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    let scale = a.clone().abs().max().into_scalar();
    (a - b).abs().max().into_scalar() / scale.max(1e-6)
}
