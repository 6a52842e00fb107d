//! `cpu_pool` behind Burn: the model's 2-d max pooling on burn-flex, forward and backward.
//!
//! burn-flex pools through its 3-d kernel, which checks every window element's bounds in
//! signed arithmetic and records 64-bit indices: in a mnist-cnn training step at batch 10
//! under Node (one thread) its two poolings' forward passes took 8% of the step, about five
//! times what reading and writing their tensors costs. `cpu_pool` keeps 32-bit indices and
//! runs the common 2 × 2 window of stride 2 without bounds.
//!
//! `max_pool2d` recognises burn-flex (with or without autodiff) through `flex_backend` and
//! answers `None` for every other backend, which keeps Burn's kernels.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use crate::cpu_pool::{self, Pool2d};
use crate::flex_backend::{Ad, AdTensor, back, cast, flex, float};

/// `x` `[N, C, H, W]` max-pooled as Burn's `max_pool2d` without dilation or ceil mode, by
/// `cpu_pool`'s kernel; `None` where it does not apply: a backend other than burn-flex, a dtype
/// other than float32 (mixed precision), or a pooling `Pool2d::new` refuses.
pub fn max_pool2d<B: Backend>(
    x: &Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Tensor<B, 4>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    let g = Pool2d::new(x.dims(), kernel, stride, padding)?;
    if let Some([x]) = cast::<B, Ad, 4, 1>([x]) {
        let y = tracked(float(x), g);
        return back(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(y)));
    }
    if let Some([x]) = cast::<B, Flex, 4, 1>([x]) {
        let (y, _) = forward(&float(x), &g);
        return back(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(y)));
    }
    None
}

fn forward(x: &FlexTensor, g: &Pool2d) -> (FlexTensor, Vec<u32>) {
    let (y, at) = cpu_pool::forward(g, x.to_contiguous().storage());
    (flex(y, &[g.batch, g.channels, g.h_out, g.w_out]), at)
}

/// The forward pass as a node of Burn's autodiff graph, keeping where each maximum came from.
fn tracked(x: AdTensor, g: Pool2d) -> AdTensor {
    match PoolBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        // Kept rather than recomputed: Burn's memory-bound ops must be able to run again.
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, at) = forward(&x.primitive, &g);
            prep.finish((at, g), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &g).0),
    }
}

/// The backward pass: the output's gradient sent to where each maximum came from.
#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = (Vec<u32>, Pool2d);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (at, g) = ops.state;
        if let Some(node) = &ops.parents[0] {
            let dx = cpu_pool::backward(&g, dout.storage(), &at);
            grads.register::<Flex>(node.id, flex(dx, &[g.batch, g.channels, g.h, g.w]));
        }
    }
}
