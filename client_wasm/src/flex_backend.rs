//! Recognising burn-flex behind the model's generic backend, for the operations the trainer
//! runs with its own CPU kernels (`cpu_conv_op`, `cpu_pool_op`, `cpu_linear_op`, `cpu_relu_op`).
//!
//! The model stays generic over Burn's backends: an operation asks `cast` whether its tensors
//! are burn-flex's, with or without autodiff, by type through `Any` (no unsafe code, no bounds
//! to propagate), and answers `None` for every other backend, which keeps Burn's kernels.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// burn-flex under autodiff: the backend a CPU training step runs on.
pub type Ad = Autodiff<Flex>;
/// A float tensor primitive of `Ad`: its inner tensor and its node in the autodiff graph.
pub type AdTensor = burn::tensor::ops::FloatTensor<Ad>;

/// The tensors as backend `T`'s, if `B` is `T`.
pub fn cast<B: Backend, T: Backend, const D: usize, const N: usize>(
    tensors: [&Tensor<B, D>; N],
) -> Option<[Tensor<T, D>; N]> {
    let each = tensors.map(|t| (t as &dyn Any).downcast_ref::<Tensor<T, D>>().cloned());
    each.iter()
        .all(Option::is_some)
        .then(|| each.map(Option::unwrap))
}

/// `x` as backend `T`'s tensor if `B` is `T`, else `x` back: `cast` by value, for an operation
/// that writes in place, which `cast`'s clone would make a second holder of the storage.
pub fn take<B: Backend, T: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<T, D>, Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(x);
    match boxed.downcast::<Tensor<T, D>>() {
        Ok(t) => Ok(*t),
        Err(other) => Err(*other.downcast::<Tensor<B, D>>().expect("the tensor put in")),
    }
}

/// The tensor's float primitive.
pub fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    t.into_primitive().tensor()
}

/// The result, as the caller's backend type (which it is, when `cast` matched it).
pub fn back<T: 'static, B: Backend, const D: usize>(y: T) -> Option<Tensor<B, D>> {
    (Box::new(y) as Box<dyn Any>)
        .downcast::<Tensor<B, D>>()
        .ok()
        .map(|y| *y)
}

/// A burn-flex tensor of `shape` holding `values`, row-major.
pub fn flex(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}
