//! The CPU linear layer (`cpu_linear_op`, over `cpu_gemm`) computes what Burn's does: its
//! output and its input, weight and bias gradients, with the weight laid out as Burn keeps it
//! or as a transposed view, over sizes past the product's tiles and blocks; and it leaves what
//! it does not run to Burn.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module::linear;
use burn::tensor::{DType, Distribution, Tensor};
use pollen_trainer::cpu_linear_op;

mod common;
use common::{assert_close, gap, run};

type B = Autodiff<Flex>;

#[test]
fn the_cpu_linear_layer_matches_burns_output_and_gradients() {
    let device = Default::default();
    let normal = Distribution::Normal(0.0, 1.0);
    // (batch, in, out): mnist-cnn's first linear layer; tile (2 × 16) and block (64 rows,
    // depth 256) edges; a single value.
    for (n, inner, out) in [(3, 3136, 512), (10, 5, 7), (70, 300, 33), (1, 1, 1)] {
        let x0 = Tensor::<B, 2>::random([n, inner], normal, &device);
        let b0 = Tensor::<B, 1>::random([out], normal, &device);
        // As Burn keeps it, and as the transpose of PyTorch's `[out, in]`.
        let weights = [
            Tensor::<B, 2>::random([inner, out], normal, &device),
            Tensor::<B, 2>::random([out, inner], normal, &device).transpose(),
        ];
        for (w0, with_bias) in weights
            .into_iter()
            .flat_map(|w| [(w.clone(), false), (w, true)])
        {
            let case = format!(
                "{n}x{inner} -> {out}, strides of the weight {:?}, bias {with_bias}",
                w0.clone()
                    .inner()
                    .into_primitive()
                    .tensor()
                    .layout()
                    .strides()
                    .to_vec()
            );
            let loss = Tensor::<B, 2>::random([n, out], normal, &device);
            let tensors = (&x0, &w0, &b0);
            let [theirs, ours] = [false, true].map(|ours| {
                run(tensors, with_bias, &loss, |x, w, b| match ours {
                    true => cpu_linear_op::linear(&x, &w, b.as_ref()).expect("burn-flex, f32"),
                    false => linear(x, w, b),
                })
            });
            assert_close(theirs, ours, &case);
            // Without autodiff (evaluation runs the inner backend).
            let (x, w, b) = (x0.clone().inner(), w0.clone().inner(), b0.clone().inner());
            let bias = with_bias.then_some(b);
            let y = cpu_linear_op::linear(&x, &w, bias.as_ref()).expect("burn-flex, f32");
            assert!(gap(linear(x, w, bias), y) < 1e-5, "inner backend, {case}");
        }
    }
}

#[test]
fn only_what_it_runs_is_taken_from_burn() {
    let device = Default::default();
    let x = Tensor::<Flex, 2>::ones([2, 4], &device);
    let w = Tensor::<Flex, 2>::ones([4, 3], &device);
    let half = (x.clone().cast(DType::F16), w.clone().cast(DType::F16));
    assert!(
        cpu_linear_op::linear(&half.0, &half.1, None).is_none(),
        "float16"
    );
    assert!(
        cpu_linear_op::linear(&w, &x, None).is_none(),
        "shapes that do not chain"
    );
}
