//! The CPU convolution (`cpu_conv_op`, over `cpu_gemm`) computes what Burn's does: its output
//! and its input and weight gradients, over strides, paddings, dilations, kernels that are not
//! square, and sizes past the product's blocks; and it leaves what it does not run to Burn.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Distribution, Tensor};
use pollen_trainer::cpu_conv_op;
use pollen_trainer::cpu_gemm::{Mat, gemm};

mod common;
use common::{assert_close, case, gap, run};

type B = Autodiff<Flex>;

#[test]
fn the_cpu_convolution_matches_burns_output_and_gradients() {
    let device = Default::default();
    let cases = [
        // (input [N, C, H, W], kernel [C_out, kh, kw], stride, padding, dilation)
        ([3, 32, 14, 14], [64, 5, 5], [1, 1], [2, 2], [1, 1]), // mnist-cnn's second layer
        ([2, 1, 28, 28], [32, 5, 5], [1, 1], [2, 2], [1, 1]),  // its first
        ([2, 1, 28, 28], [64, 7, 7], [7, 7], [0, 0], [1, 1]),  // the ViT's patch embedding
        ([3, 3, 9, 7], [5, 3, 2], [2, 1], [1, 0], [2, 1]),
        ([1, 20, 6, 6], [70, 4, 4], [1, 1], [1, 1], [1, 1]), // K = 320 > KC, C_out = 70 > MC
        ([2, 2, 3, 3], [3, 3, 3], [1, 1], [3, 3], [1, 1]),   // outputs that see only padding
        ([1, 2, 3, 1], [3, 1, 1], [1, 4], [0, 2], [1, 1]),   // a stride that steps over the input
        ([1, 4, 6, 6], [2, 1, 1], [1, 1], [0, 0], [1, 1]),
    ];
    for (shape, kernel @ [cout, kh, kw], stride, padding, dilation) in cases {
        let normal = Distribution::Normal(0.0, 1.0);
        let (x0, w0, b0, options) = case(shape, kernel, stride, padding, dilation);
        let reference = conv2d(x0.clone(), w0.clone(), None, options.clone());
        // A loss that weighs every output differently, so that misplaced gradients show.
        let weights = Tensor::<B, 4>::random(reference.dims(), normal, &device);
        for with_bias in [false, true] {
            let case = format!(
                "{shape:?} {cout}x{kh}x{kw} s{stride:?} p{padding:?} d{dilation:?} bias {with_bias}"
            );
            let tensors = (&x0, &w0, &b0);
            let [theirs, ours] = [false, true].map(|ours| {
                run(tensors, with_bias, &weights, |x, w, b| match ours {
                    true => cpu_conv_op::conv2d(&x, &w, b.as_ref(), &options)
                        .expect("burn-flex, float32, ungrouped"),
                    false => conv2d(x, w, b, options.clone()),
                })
            });
            assert_close(theirs, ours, &case);

            // Without autodiff (evaluation runs the inner backend).
            let (x, w, b) = (x0.clone().inner(), w0.clone().inner(), b0.clone().inner());
            let bias = with_bias.then_some(b);
            let y = cpu_conv_op::conv2d(&x, &w, bias.as_ref(), &options)
                .expect("burn-flex, float32, ungrouped");
            assert!(
                gap(conv2d(x, w, bias, options.clone()), y) < 1e-5,
                "inner backend, {case}"
            );
        }
    }
}

#[test]
fn only_what_it_runs_is_taken_from_burn() {
    let device = Default::default();
    let x = Tensor::<Flex, 4>::ones([1, 4, 5, 5], &device);
    let w = Tensor::<Flex, 4>::ones([2, 2, 3, 3], &device);
    let grouped = ConvOptions::new([1, 1], [0, 0], [1, 1], 2);
    assert!(
        cpu_conv_op::conv2d(&x, &w, None, &grouped).is_none(),
        "grouped"
    );
    let half = (
        x.cast(DType::F16),
        Tensor::<Flex, 4>::ones([2, 4, 3, 3], &device).cast(DType::F16),
    );
    let plain = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    assert!(
        cpu_conv_op::conv2d(&half.0, &half.1, None, &plain).is_none(),
        "float16"
    );
}

/// `C = A · B` (+ `C` when accumulating) one dot product at a time, in f64.
fn naive(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &[f32], accumulate: bool) -> Vec<f32> {
    let at = |x: &Mat, i: usize, j: usize| f64::from(x.data[i * x.rs + j * x.cs]);
    (0..m * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            let dot: f64 = (0..k).map(|l| at(&a, i, l) * at(&b, l, j)).sum();
            (dot + if accumulate { f64::from(c[ij]) } else { 0.0 }) as f32
        })
        .collect()
}

fn twice(v: &[f32]) -> Vec<f32> {
    v.iter().flat_map(|&x| [x, x]).collect()
}

#[test]
fn the_matrix_product_matches_a_naive_one_over_layouts_and_edges() {
    // Shapes around the tile (2 × 16) and block (64 rows, depth 256) edges.
    for (m, n, k) in [
        (1, 1, 1),
        (4, 8, 3),
        (5, 9, 7),
        (64, 16, 256),
        (70, 33, 300),
        (3, 200, 513),
        (7, 5, 0),
    ] {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let c0: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
        // Every value twice over: a view whose strides are both above 1 reads every other one.
        let (a2, b2) = (twice(&a), twice(&b));
        let a_views = [
            Mat::rows(&a, k),
            Mat::transposed(&a, m),
            Mat {
                data: &a2,
                rs: 2 * k,
                cs: 2,
            },
        ];
        let b_views = [
            Mat::rows(&b, n),
            Mat::transposed(&b, k),
            Mat {
                data: &b2,
                rs: 2,
                cs: 2 * k,
            },
        ];
        for (av, bv) in a_views
            .iter()
            .flat_map(|a| b_views.iter().map(move |b| (*a, *b)))
        {
            for accumulate in [false, true] {
                let mut c = c0.clone();
                gemm(m, n, k, av, bv, &mut c, n, accumulate);
                let want = naive(m, n, k, av, bv, &c0, accumulate);
                let worst = c
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(
                    worst < 1e-3,
                    "{m}x{n}x{k} {av:?} {bv:?} accumulate {accumulate}: {worst}"
                );
            }
        }
    }
}
