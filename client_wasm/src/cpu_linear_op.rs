//! The model's linear layers on burn-flex, forward and backward, by `cpu_gemm`.
//!
//! burn-flex multiplies through the `gemm` crate, whose wasm microkernel multiplies then adds,
//! and which took its scalar path for some of the backward pass's transposed operands; each
//! product also allocated a zeroed output. In a mnist-cnn training step at batch 10 under Node
//! (one thread), the linear layers' products took 16% of the step. `cpu_gemm` reads the
//! transposed operands through their strides, fuses the bias into the forward product, and
//! uses relaxed SIMD's fused multiply-add where the build has it.
//!
//! `linear` recognises burn-flex (with or without autodiff) through `flex_backend` and answers
//! `None` for every other backend, which keeps Burn's kernels.

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use crate::cpu_gemm::{Mat, gemm};
use crate::flex_backend::{Ad, AdTensor, back, cast, flex, float};

/// `x` `[N, in]` times `weight` `[in, out]` plus `bias` `[out]`, as Burn's `Linear` on a flat
/// input, by `cpu_gemm`; `None` where it does not apply: a backend other than burn-flex, or a
/// dtype other than float32 (mixed precision).
pub fn linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    if x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || bias.is_some_and(|b| b.dtype() != DType::F32)
        || x.dims()[1] != weight.dims()[0]
    {
        return None;
    }
    if let Some([x, w]) = cast::<B, Ad, 2, 2>([x, weight]) {
        let bias = bias.map(|b| cast::<B, Ad, 1, 1>([b]).expect("bias on the same backend"));
        let y = tracked(float(x), float(w), bias.map(|[b]| float(b)));
        return back(Tensor::<Ad, 2>::from_primitive(TensorPrimitive::Float(y)));
    }
    if let Some([x, w]) = cast::<B, Flex, 2, 2>([x, weight]) {
        let bias = bias.map(|b| cast::<B, Flex, 1, 1>([b]).expect("bias on the same backend"));
        let y = forward(&float(x), &float(w), bias.map(|[b]| float(b)).as_ref());
        return back(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(y)));
    }
    None
}

/// A 2-d tensor with non-negative strides as it lies (a transposed weight is read in place),
/// any other contiguous first.
fn strided(t: &FlexTensor) -> FlexTensor {
    match t.layout().has_positive_strides() {
        true => t.clone(),
        false => t.to_contiguous(),
    }
}

/// The matrix view of a tensor `strided` returned.
fn view(t: &FlexTensor) -> Mat<'_> {
    let layout = t.layout();
    let (_, _, rs, cs) = layout.as_2d_strides().expect("a 2-d tensor");
    Mat {
        data: &t.storage::<f32>()[layout.start_offset()..],
        rs: rs as usize,
        cs: cs as usize,
    }
}

fn transposed(m: Mat<'_>) -> Mat<'_> {
    Mat {
        data: m.data,
        rs: m.cs,
        cs: m.rs,
    }
}

fn forward(x: &FlexTensor, w: &FlexTensor, bias: Option<&FlexTensor>) -> FlexTensor {
    let (x, w) = (strided(x), strided(w));
    let (n, inner, out) = (
        x.layout().shape()[0],
        x.layout().shape()[1],
        w.layout().shape()[1],
    );
    let mut y = vec![0.0f32; n * out];
    if let Some(bias) = bias {
        let bias = bias.to_contiguous();
        y.chunks_exact_mut(out)
            .for_each(|row| row.copy_from_slice(bias.storage()));
    }
    let (xv, wv, accumulate) = (view(&x), view(&w), bias.is_some());
    let rows = |first: usize, y: &mut [f32]| {
        let xs = Mat {
            data: &xv.data[first * xv.rs..],
            ..xv
        };
        gemm(y.len() / out, out, inner, xs, wv, y, out, accumulate);
    };
    // The threaded build splits a training step's batch over its threads (`batch_split`), but
    // not an evaluation's forward pass: that one spreads its rows here.
    #[cfg(feature = "threads")]
    if n >= 2 * ROWS_PER_TASK {
        use rayon::prelude::*;
        y.par_chunks_mut(ROWS_PER_TASK * out)
            .enumerate()
            .for_each(|(t, y)| rows(t * ROWS_PER_TASK, y));
        return flex(y, &[n, out]);
    }
    rows(0, &mut y);
    flex(y, &[n, out])
}

/// Rows of a product one thread takes when a large batch is split (evaluation's).
#[cfg(feature = "threads")]
const ROWS_PER_TASK: usize = 32;

/// The forward pass as a node of Burn's autodiff graph, keeping `x` and the weight for the
/// backward pass.
fn tracked(x: AdTensor, w: AdTensor, bias: Option<AdTensor>) -> AdTensor {
    let y = forward(
        &x.primitive,
        &w.primitive,
        bias.as_ref().map(|b| &b.primitive),
    );
    // One arm per parent count (the array's length is the op's type); Burn's node type, which
    // `prepare` takes, is not public, so a function cannot be generic over it.
    macro_rules! node {
        ($parents:expr) => {
            match LinearBackward
                .prepare::<NoCheckpointing>($parents)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&w));
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
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dout = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (xs, ws) = ops.state;
        let x = strided(&checkpointer.retrieve_node_output::<FlexTensor>(xs));
        let w = strided(&checkpointer.retrieve_node_output::<FlexTensor>(ws));
        let (n, inner, out) = (
            x.layout().shape()[0],
            x.layout().shape()[1],
            w.layout().shape()[1],
        );
        let dy = Mat::rows(dout.storage::<f32>(), out);
        if let Some(node) = &ops.parents[0] {
            let mut dx = vec![0.0f32; n * inner];
            gemm(
                n,
                inner,
                out,
                dy,
                transposed(view(&w)),
                &mut dx,
                inner,
                false,
            );
            grads.register::<Flex>(node.id, flex(dx, &[n, inner]));
        }
        if let Some(node) = &ops.parents[1] {
            let mut dw = vec![0.0f32; inner * out];
            gemm(inner, out, n, transposed(view(&x)), dy, &mut dw, out, false);
            grads.register::<Flex>(node.id, flex(dw, &[inner, out]));
        }
        if let Some(Some(node)) = ops.parents.get(2) {
            let mut db = vec![0.0f32; out];
            for row in dout.storage::<f32>().chunks_exact(out) {
                db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
            }
            grads.register::<Flex>(node.id, flex(db, &[out]));
        }
    }
}
