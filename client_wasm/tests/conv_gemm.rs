//! The lowered convolution computes what Burn's does: output, weight, bias and input gradients,
//! over strides, paddings, dilations and kernels that are not square.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::ops::conv::calculate_conv_output_size;
use burn::tensor::{Distribution, Tensor};
use pollen_trainer::conv_gemm;

mod common;
use common::{case, gap};

type B = Autodiff<Flex>;

#[test]
fn the_lowered_convolution_matches_burns_output_and_gradients() {
    let device = Default::default();
    let cases = [
        // (input [N, C, H, W], kernel [C_out, kh, kw], stride, padding, dilation)
        ([2, 1, 28, 28], [4, 5, 5], [1, 1], [2, 2], [1, 1]),
        ([3, 3, 9, 7], [5, 3, 2], [2, 1], [1, 0], [1, 1]),
        ([2, 2, 11, 10], [3, 3, 3], [1, 2], [0, 2], [2, 1]),
        ([1, 4, 6, 6], [2, 1, 1], [1, 1], [0, 0], [1, 1]),
    ];
    for (shape, kernel @ [cout, kh, kw], stride, padding, dilation) in cases {
        let normal = Distribution::Normal(0.0, 1.0);
        let (x0, w0, b0, options) = case(shape, kernel, stride, padding, dilation);
        // A loss that weighs every output differently, so that misplaced gradients show.
        let size = |i: usize, k: usize| {
            calculate_conv_output_size(k, stride[i], padding[i], dilation[i], shape[2 + i])
        };
        let [ho, wo] = [size(0, kh), size(1, kw)];
        let weights = Tensor::<B, 4>::random([shape[0], cout, ho, wo], normal, &device);
        // With an input that needs its gradient, and with one that does not (the data).
        for input_grad in [true, false] {
            let mut results = Vec::new();
            for lowered in [false, true] {
                let x = if input_grad {
                    x0.clone().require_grad()
                } else {
                    x0.clone()
                };
                let (w, b) = (w0.clone().require_grad(), b0.clone().require_grad());
                let y = if lowered {
                    conv_gemm::conv2d(x.clone(), w.clone(), Some(b.clone()), &options, input_grad)
                } else {
                    conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone())
                };
                assert_eq!(y.dims(), [shape[0], cout, ho, wo]);
                let grads = (y.clone() * weights.clone()).sum().backward();
                results.push((
                    y.inner(),
                    x.grad(&grads).unwrap_or_else(|| x0.clone().inner()),
                    w.grad(&grads).expect("weight gradient"),
                    b.grad(&grads).expect("bias gradient"),
                ));
            }
            let (burn, lowered) = (&results[0], &results[1]);
            let gaps = [
                gap(burn.0.clone(), lowered.0.clone()),
                gap(burn.1.clone(), lowered.1.clone()),
                gap(burn.2.clone(), lowered.2.clone()),
                gap(burn.3.clone(), lowered.3.clone()),
            ];
            assert!(
                gaps.iter().all(|g| *g < 1e-5),
                "input grad {input_grad} {shape:?} kernel {kh}x{kw} stride {stride:?} padding {padding:?} dilation {dilation:?}: \
             output, input, weight, bias gaps {gaps:?}"
            );
        }
    }
}

#[test]
fn only_thin_convolutions_on_the_models_input_are_lowered() {
    // mnist-cnn's first layer, its second, and mnist-cnn-bn's second (fed by a layer).
    assert!(conv_gemm::pays([32, 1, 5, 5], false));
    assert!(!conv_gemm::pays([64, 32, 5, 5], false));
    assert!(!conv_gemm::pays([16, 8, 5, 5], true));
}
