//! Where a convolution's time goes on a GPU: mnist-cnn's two convolutions, forward alone and
//! forward with each gradient, as Burn's WebGPU kernels run them and as `conv_gemm` lowers them.
//!
//!     cargo run --release --features webgpu --example conv_gpu -- [BATCH ...]
//!
//! Runs natively on wgpu (Vulkan, Metal or DX12), which compiles the same WGSL kernels the page's
//! WebGPU runs; prints one JSON line per layer, batch, algorithm and pass, in milliseconds per
//! call (median of 15 after 3 untimed).

use std::time::Instant;

use burn::backend::Autodiff;
use burn::backend::wgpu::{Wgpu, WgpuDevice};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use pollen_trainer::conv_gemm;

type G = Wgpu<f32, i32, u32>;
type B = Autodiff<G>;

/// mnist-cnn's convolutions: 5×5, padding 2.
fn options() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [2, 2], [1, 1], 1)
}

fn run(gemm: bool, x: &Tensor<B, 4>, w: &Tensor<B, 4>, b: &Tensor<B, 1>) -> Tensor<B, 4> {
    let (x, w, b) = (x.clone(), w.clone(), Some(b.clone()));
    if gemm {
        let input_grad = x.is_require_grad();
        conv_gemm::conv2d(x, w, b, &options(), input_grad)
    } else {
        conv2d(x, w, b, options())
    }
}

fn main() {
    let device = WgpuDevice::default();
    let sync = || <G as Backend>::sync(&device).expect("the GPU finishes");
    let batches: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("batch sizes"))
        .collect();
    let batches = if batches.is_empty() {
        vec![32, 128, 512]
    } else {
        batches
    };
    for (layer, cin, cout, side) in [("conv1", 1, 32, 28), ("conv2", 32, 64, 14)] {
        for &n in &batches {
            let normal = Distribution::Normal(0.0, 1.0);
            let x0 = Tensor::<B, 4>::random([n, cin, side, side], normal, &device);
            let w0 = Tensor::<B, 4>::random([cout, cin, 5, 5], normal, &device);
            let b = Tensor::<B, 1>::zeros([cout], &device).require_grad();
            for gemm in [false, true] {
                // The first layer's input needs no gradient (it is the data); the second's does.
                for pass in ["forward", "weight grad", "input grad"] {
                    if pass == "input grad" && cin == 1 {
                        continue;
                    }
                    let x = if pass == "input grad" {
                        x0.clone().require_grad()
                    } else {
                        x0.clone()
                    };
                    let w = if pass == "weight grad" {
                        w0.clone().require_grad()
                    } else {
                        w0.clone()
                    };
                    let mut times = Vec::new();
                    for i in 0..18 {
                        sync();
                        let start = Instant::now();
                        let y = run(gemm, &x, &w, &b);
                        if pass == "forward" {
                            drop(y);
                        } else {
                            let grads = y.sum().backward();
                            drop(grads);
                        }
                        sync();
                        if i >= 3 {
                            times.push(start.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    times.sort_by(f64::total_cmp);
                    println!(
                        "{{\"layer\":\"{layer}\",\"batch\":{n},\"algorithm\":\"{}\",\"pass\":\"{pass}\",\"ms\":{:.3}}}",
                        if gemm { "gemm" } else { "burn" },
                        times[times.len() / 2]
                    );
                }
            }
        }
    }
}
