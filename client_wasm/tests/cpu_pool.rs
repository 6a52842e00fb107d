//! The CPU max pooling (`cpu_pool_op`) computes what Burn's does: its output and its input
//! gradient, over windows that overlap, padding, kernels that are not square and sizes the
//! stride does not divide, and it takes the same element where a window holds equal maxima;
//! and it leaves what it does not run to Burn.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{DType, Distribution, Tensor};
use pollen_trainer::cpu_pool_op;

type B = Autodiff<Flex>;

/// Burn's pooling and ours on `x`: (outputs, input gradients) of a loss that weighs every
/// output differently, so that a gradient sent to the wrong element shows.
fn both(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> [(Tensor<Flex, 4>, Tensor<Flex, 4>); 2] {
    let reference = max_pool2d(x.clone(), kernel, stride, padding, [1, 1], false);
    let weights = Tensor::<B, 4>::random(
        reference.dims(),
        Distribution::Normal(0.0, 1.0),
        &x.device(),
    );
    [false, true].map(|ours| {
        let x = x.clone().require_grad();
        let y = match ours {
            true => cpu_pool_op::max_pool2d(&x, kernel, stride, padding).expect("burn-flex, f32"),
            false => max_pool2d(x.clone(), kernel, stride, padding, [1, 1], false),
        };
        let grads = (y.clone() * weights.clone()).sum().backward();
        (y.inner(), x.grad(&grads).unwrap())
    })
}

#[test]
fn the_cpu_pooling_matches_burns_output_and_gradient() {
    let device = Default::default();
    let cases = [
        // (input [N, C, H, W], kernel, stride, padding)
        ([3, 32, 28, 28], [2, 2], [2, 2], [0, 0]), // mnist-cnn's first pooling
        ([3, 64, 14, 14], [2, 2], [2, 2], [0, 0]), // its second
        ([2, 3, 7, 9], [2, 2], [2, 2], [0, 0]),    // a last row and column left out
        ([2, 3, 7, 9], [3, 3], [2, 2], [1, 1]),    // overlapping, padded
        ([2, 2, 5, 5], [2, 2], [1, 1], [0, 0]),    // overlapping, stride 1
        ([1, 2, 7, 5], [3, 2], [2, 3], [1, 1]),    // not square
        ([1, 1, 1, 1], [1, 1], [1, 1], [0, 0]),
    ];
    for (shape, kernel, stride, padding) in cases {
        let case = format!("{shape:?} k{kernel:?} s{stride:?} p{padding:?}");
        let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        // After a ReLU, about three windows in four of 2 × 2 hold equal maxima (zeros), whose
        // gradient goes to the first; a constant input is all ties.
        for (what, x) in [
            ("normal", x.clone()),
            ("after a ReLU", relu(x)),
            ("constant", Tensor::ones(shape, &device)),
        ] {
            let [(y0, dx0), (y1, dx1)] = both(x.clone(), kernel, stride, padding);
            let overlap = stride[0] < kernel[0] || stride[1] < kernel[1];
            assert_eq!(y0.to_data(), y1.to_data(), "output, {what}, {case}");
            if overlap {
                // Gradients of overlapping windows add up in another order.
                let gap = (dx0 - dx1).abs().max().into_scalar();
                assert!(gap < 1e-6, "input gradient, {what}, {case}: {gap}");
            } else {
                assert_eq!(
                    dx0.to_data(),
                    dx1.to_data(),
                    "input gradient, {what}, {case}"
                );
            }
            // Without autodiff (evaluation runs the inner backend).
            let inner = cpu_pool_op::max_pool2d(&x.clone().inner(), kernel, stride, padding);
            assert_eq!(
                inner.unwrap().to_data(),
                y0.to_data(),
                "inner, {what}, {case}"
            );
        }
    }
}

#[test]
fn only_what_it_runs_is_taken_from_burn() {
    let device = Default::default();
    let x = Tensor::<Flex, 4>::ones([1, 2, 6, 6], &device);
    let pool = |x: &Tensor<Flex, 4>, k, s, p| cpu_pool_op::max_pool2d(x, k, s, p).is_none();
    assert!(
        pool(&x.clone().cast(DType::F16), [2, 2], [2, 2], [0, 0]),
        "float16"
    );
    assert!(
        pool(&x, [2, 2], [2, 2], [2, 2]),
        "padding past half the kernel"
    );
    assert!(pool(&x, [2, 2], [0, 2], [0, 0]), "a stride of 0");
    assert!(pool(&x, [7, 2], [1, 1], [0, 0]), "a kernel past the input");
    assert!(
        !pool(&x, [2, 2], [2, 2], [1, 1]),
        "padding of half the kernel"
    );
}
