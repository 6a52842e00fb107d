//! A 2-d convolution as one matrix product per example (im2col), built from Burn's tensor
//! operations, for WebGPU.
//!
//! Burn's WebGPU backend has no convolution kernel of its own that uses matrix tiles there (its
//! implicit-GEMM kernels need cooperative-matrix instructions, which WebGPU lacks), so it runs a
//! direct convolution: one thread per output value. Its weight gradient is that same direct
//! convolution with the batch as channels and the output gradient as the kernel: for mnist-cnn's
//! first layer at batch 128 that is 800 threads, each summing 100,352 products one after
//! another, which a GPU runs far below its width. Written as `weight × columns`, the weight
//! gradient becomes a batched matrix product (Burn's tiled kernels), which the autodiff graph
//! derives by itself.
//!
//! Only thin convolutions fed by the model's input are lowered (`pays`): for wide ones Burn's
//! kernels were faster, since the lowering copies each input value `kh × kw` times into the
//! columns (mnist-cnn's second layer at batch 32: 20 MB, and as much again for their gradient)
//! and adds dispatches, and a layer whose input gradient is needed makes its columns from
//! `kh × kw` views, each a dispatch forward and back. The CPU backend has loops of its own
//! instead (`cpu_conv`): built from Burn's tensor operations there, the lowering ran slower than
//! burn-flex's convolution (README).

use burn::tensor::backend::Backend;
use burn::tensor::ops::conv::calculate_conv_output_size;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Slice, Tensor};

/// Burn's weight-gradient kernel runs one thread per weight value, each summing over the batch
/// and every output position in turn: below this many values it leaves most of a GPU idle. On an
/// H200 (native wgpu), mnist-cnn's first layer (800 values) ran 2-8× faster lowered, and its
/// second (51,200) faster as Burn runs it, at batches 32 to 512 (README).
pub const MAX_DIRECT_WEIGHTS: usize = 4096;

/// Whether a convolution with this weight shape `[C_out, C_in, kh, kw]` runs faster lowered;
/// `input_grad`: whether its input's gradient is needed (it is fed by another layer). On an H100
/// under Dawn, mnist-cnn-bn at batch 32 with its second convolution (3,200 values, input gradient
/// needed) lowered too ran at 0.63× Burn's speed, where mnist-cnn with only its first lowered ran
/// at 1.05-1.75× from batch 10 to 512 (README).
pub fn pays(weight: [usize; 4], input_grad: bool) -> bool {
    !input_grad && weight.iter().product::<usize>() <= MAX_DIRECT_WEIGHTS
}

/// `x` `[N, C_in, H, W]` convolved with `weight` `[C_out, C_in, kh, kw]` plus `bias`, as
/// PyTorch's `conv2d` with one group (`options.groups` must be 1): `[N, C_out, H_out, W_out]`.
/// `input_grad`: whether `x`'s gradient will be asked for (false for the model's input), which
/// decides how the columns are made; the result is the same either way.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: &ConvOptions<2>,
    input_grad: bool,
) -> Tensor<B, 4> {
    assert_eq!(
        options.groups, 1,
        "the lowering is for ungrouped convolutions"
    );
    let [n, cin, h, w] = x.dims();
    let [cout, _, kh, kw] = weight.dims();
    let size = |i: usize, k: usize, n: usize| {
        calculate_conv_output_size(
            k,
            options.stride[i],
            options.padding[i],
            options.dilation[i],
            n,
        )
    };
    let [ho, wo] = [size(0, kh, h), size(1, kw, w)];
    let [ph, pw] = options.padding;
    let x = if ph + pw > 0 {
        x.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0))
    } else {
        x
    };
    let columns = if input_grad || options.dilation != [1, 1] {
        shifted_views(x, [kh, kw], [ho, wo], options)
    } else {
        windows(x, [kh, kw], options.stride)
    };
    let kernel: Tensor<B, 3> = weight.reshape([1, cout, cin * kh * kw]);
    let mut y = kernel.matmul(columns).reshape([n, cout, ho, wo]);
    if let Some(b) = bias {
        y = y + b.reshape([1, cout, 1, 1]);
    }
    y
}

/// The columns `[N, C_in·kh·kw, H_out·W_out]` as strided windows of the input, copied once: few
/// dispatches, but Burn differentiates a window view one window at a time, so only for an input
/// that needs no gradient (the data).
fn windows<B: Backend>(
    x: Tensor<B, 4>,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
) -> Tensor<B, 3> {
    let [n, cin, _, _] = x.dims();
    let w: Tensor<B, 6> = x.unfold::<5, _>(2, kh, sh).unfold(3, kw, sw);
    let [_, _, ho, wo, _, _] = w.dims();
    w.permute([0, 1, 4, 5, 2, 3])
        .reshape([n, cin * kh * kw, ho * wo])
}

/// The columns as one shifted view per kernel offset, stacked: what that kernel value multiplies
/// at every output position. Its gradient is one strided add per offset.
fn shifted_views<B: Backend>(
    x: Tensor<B, 4>,
    [kh, kw]: [usize; 2],
    [ho, wo]: [usize; 2],
    options: &ConvOptions<2>,
) -> Tensor<B, 3> {
    let [n, cin, _, _] = x.dims();
    let span = |start: usize, count: usize, step: usize| Slice {
        start: start as isize,
        end: Some((start + (count - 1) * step + 1) as isize),
        step: step as isize,
    };
    let mut views = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        for j in 0..kw {
            views.push(x.clone().slice([
                Slice::from(0..n),
                Slice::from(0..cin),
                span(i * options.dilation[0], ho, options.stride[0]),
                span(j * options.dilation[1], wo, options.stride[1]),
            ]));
        }
    }
    // [N, C_in, kh·kw, H_out, W_out]: the row order (channel, kernel row, column) is the weight's.
    Tensor::stack::<5>(views, 2).reshape([n, cin * kh * kw, ho * wo])
}
