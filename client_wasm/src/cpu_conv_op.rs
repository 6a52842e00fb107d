//! `cpu_conv` behind Burn: the model's 2-d convolutions on burn-flex, forward and backward.
//!
//! burn-flex runs a convolution's forward pass as im2col and `gemm` too, but its gradients come
//! from Burn's generic formulas: the input gradient as a transposed convolution, and the weight
//! gradient as a convolution whose kernel is the whole output gradient, each with layout copies
//! around it. In Node on this project's 2-core machine, mnist-cnn's second layer at batch 32 took
//! 31, 36 and 44 ms for the forward pass, the input gradient and the weight gradient, where the
//! products alone take 26 ms each in `gemm` (README).
//!
//! `conv2d` recognises burn-flex (with or without autodiff) through `flex_backend` and answers
//! `None` for every other backend, which keeps Burn's kernels.

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use crate::cpu_conv::{self, Geometry};
use crate::flex_backend::{Ad, AdTensor, back, cast, flex, float};

/// `x` `[N, C_in, H, W]` convolved with `weight` `[C_out, C_in, kh, kw]` plus `bias` `[C_out]`,
/// as Burn's `conv2d`, by `cpu_conv`'s kernels; `None` where they do not apply: a backend other
/// than burn-flex, a dtype other than float32 (mixed precision), or a grouped convolution.
pub fn conv2d<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    options: &ConvOptions<2>,
) -> Option<Tensor<B, 4>> {
    if x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || bias.is_some_and(|b| b.dtype() != DType::F32)
    {
        return None;
    }
    let g = Geometry::new(x.dims(), weight.dims(), options)?;
    if let Some([x, w]) = cast::<B, Ad, 4, 2>([x, weight]) {
        let bias = bias.map(|b| cast::<B, Ad, 1, 1>([b]).expect("bias on the same backend"));
        let y = tracked(float(x), float(w), bias.map(|[b]| float(b)), g);
        return back(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(y)));
    }
    if let Some([x, w]) = cast::<B, Flex, 4, 2>([x, weight]) {
        let bias = bias.map(|b| cast::<B, Flex, 1, 1>([b]).expect("bias on the same backend"));
        let y = forward(&float(x), &float(w), bias.map(|[b]| float(b)).as_ref(), &g);
        return back(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(y)));
    }
    None
}

fn forward(x: &FlexTensor, w: &FlexTensor, bias: Option<&FlexTensor>, g: &Geometry) -> FlexTensor {
    let (x, w, bias) = (
        x.to_contiguous(),
        w.to_contiguous(),
        bias.map(FlexTensor::to_contiguous),
    );
    let y = cpu_conv::forward(
        g,
        x.storage(),
        w.storage(),
        bias.as_ref().map(|b| b.storage()),
    );
    flex(y, &[g.batch, g.c_out, g.h_out, g.w_out])
}

/// The forward pass as a node of Burn's autodiff graph, keeping `x` and the weight for the
/// backward pass.
fn tracked(x: AdTensor, w: AdTensor, bias: Option<AdTensor>, g: Geometry) -> AdTensor {
    let y = forward(
        &x.primitive,
        &w.primitive,
        bias.as_ref().map(|b| &b.primitive),
        &g,
    );
    // One arm per parent count (the array's length is the op's type); Burn's node type, which
    // `prepare` takes, is not public, so a function cannot be generic over it.
    macro_rules! node {
        ($parents:expr) => {
            match ConvBackward
                .prepare::<NoCheckpointing>($parents)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&w), g);
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        };
    }
    match &bias {
        Some(b) => node!([x.node.clone(), w.node.clone(), b.node.clone()]),
        None => node!([x.node.clone(), w.node.clone()]),
    }
}

/// The backward pass: parents `[x, weight]`, or `[x, weight, bias]`.
#[derive(Debug)]
struct ConvBackward;

impl<const N: usize> Backward<Flex, N> for ConvBackward {
    type State = (NodeId, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dout = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (xs, ws, g) = ops.state;
        let x = checkpointer
            .retrieve_node_output::<FlexTensor>(xs)
            .to_contiguous();
        let w = checkpointer
            .retrieve_node_output::<FlexTensor>(ws)
            .to_contiguous();
        let [node_x, node_w] = [&ops.parents[0], &ops.parents[1]];
        let dout = dout.storage::<f32>();
        let (dx, dw) = cpu_conv::backward(
            &g,
            x.storage(),
            w.storage(),
            dout,
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, flex(dx, &[g.batch, g.c_in, g.h, g.w]));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, flex(dw, &[g.c_out, g.c_in, g.kh, g.kw]));
        }
        if let Some(Some(node)) = ops.parents.get(2) {
            grads.register::<Flex>(node.id, flex(cpu_conv::bias_grad(&g, dout), &[g.c_out]));
        }
    }
}
