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
//! Only thin convolutions are lowered (`pays`): for wide ones Burn's kernels were faster, since
//! the lowering copies each input value `kh × kw` times into the columns (mnist-cnn's second
//! layer at batch 32: 20 MB, and as much again for their gradient) and adds dispatches. The CPU
//! backend keeps Burn's own convolution, which is faster there (README).

use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{Slice, Tensor};

/// What the lowering needs of a convolution: its geometry (groups are 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Geometry {
    /// Output height and width for an input of `h × w` and a kernel of `kh × kw`.
    pub fn output(&self, [h, w]: [usize; 2], [kh, kw]: [usize; 2]) -> [usize; 2] {
        let out = |n: usize, k: usize, i: usize| {
            (n + 2 * self.padding[i] - self.dilation[i] * (k - 1) - 1) / self.stride[i] + 1
        };
        [out(h, kh, 0), out(w, kw, 1)]
    }
}

/// Burn's weight-gradient kernel runs one thread per weight value, each summing over the batch
/// and every output position in turn: below this many values it leaves most of a GPU idle. On an
/// H200 (native wgpu), mnist-cnn's first layer (800 values) ran 2-8× faster lowered, and its
/// second (51,200) faster as Burn runs it, at batches 32 to 512 (README).
pub const MAX_DIRECT_WEIGHTS: usize = 4096;

/// Whether a convolution with this weight shape `[C_out, C_in, kh, kw]` runs faster lowered.
pub fn pays(weight: [usize; 4]) -> bool {
    weight.iter().product::<usize>() <= MAX_DIRECT_WEIGHTS
}

/// `x` `[N, C_in, H, W]` convolved with `weight` `[C_out, C_in, kh, kw]` plus `bias`, as
/// PyTorch's `conv2d` with one group: `[N, C_out, H_out, W_out]`. `input_grad`: whether `x`'s
/// gradient will be asked for (false for the model's input), which decides how the columns are
/// made; the result is the same either way.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    g: Geometry,
    input_grad: bool,
) -> Tensor<B, 4> {
    let [n, cin, h, w] = x.dims();
    let [cout, _, kh, kw] = weight.dims();
    let [ho, wo] = g.output([h, w], [kh, kw]);
    let [ph, pw] = g.padding;
    let x = if ph + pw > 0 {
        x.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0))
    } else {
        x
    };
    let columns = if input_grad || g.dilation != [1, 1] {
        shifted_views(x, [kh, kw], [ho, wo], g)
    } else {
        windows(x, [kh, kw], g.stride)
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
    g: Geometry,
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
                span(i * g.dilation[0], ho, g.stride[0]),
                span(j * g.dilation[1], wo, g.stride[1]),
            ]));
        }
    }
    // [N, C_in, kh·kw, H_out, W_out]: the row order (channel, kernel row, column) is the weight's.
    Tensor::stack::<5>(views, 2).reshape([n, cin * kh * kw, ho * wo])
}
