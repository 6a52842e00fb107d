//! 2-d max pooling over slices: the forward pass keeps where each output's maximum came from,
//! and the backward pass sends each output's gradient there.
//!
//! It picks the same element as burn-flex (and PyTorch) where a window holds several equal
//! maxima, which after a ReLU is common (a window of zeros): the first in row-major order.
//! So the gradients are Burn's, bit for bit where windows do not overlap.

use std::ops::Range;

/// The shapes of one max pooling, PyTorch's rule without dilation or ceil mode:
/// `out = (in + 2 · padding − kernel) / stride + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub batch: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub h_out: usize,
    pub w_out: usize,
}

impl Pool2d {
    /// The pooling of an input `[N, C, H, W]`; `None` where it has no output, a stride of 0, or
    /// padding past half the kernel (which PyTorch refuses; Burn's own kernel then decides).
    pub fn new(
        [batch, channels, h, w]: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let out = |axis: usize, size: usize| {
            let (k, s, p) = (kernel[axis], stride[axis], padding[axis]);
            if k == 0 || s == 0 || 2 * p > k {
                return None;
            }
            (size + 2 * p).checked_sub(k).map(|span| span / s + 1)
        };
        Some(Self {
            batch,
            channels,
            h,
            w,
            kernel,
            stride,
            padding,
            h_out: out(0, h)?,
            w_out: out(1, w)?,
        })
    }

    /// The kernel offsets along `axis` whose input index is inside the input, for output `o`.
    fn valid(&self, axis: usize, o: usize, size: usize) -> Range<usize> {
        let start = o * self.stride[axis];
        let first = self.padding[axis].saturating_sub(start);
        let last = (size + self.padding[axis])
            .saturating_sub(start)
            .min(self.kernel[axis]);
        first..last.max(first)
    }

    fn plane_in(&self) -> usize {
        self.h * self.w
    }

    fn plane_out(&self) -> usize {
        self.h_out * self.w_out
    }

    /// Pool one `[H, W]` plane into `out`, with each maximum's index in `x` plus `base` in `at`.
    fn plane(&self, x: &[f32], base: usize, out: &mut [f32], at: &mut [u32]) {
        let w = self.w;
        let [sh, sw] = self.stride;
        if self.kernel == [2, 2] && self.stride == [2, 2] && self.padding == [0, 0] {
            // The common case without the bounds of the general loop; the same order of visits.
            for oh in 0..self.h_out {
                let row = 2 * oh * w;
                let (r0, r1) = (&x[row..row + w], &x[row + w..row + 2 * w]);
                for ow in 0..self.w_out {
                    let j = 2 * ow;
                    let mut best = (r0[j], row + j);
                    let rest = [(r0[j + 1], 1), (r1[j], w), (r1[j + 1], w + 1)];
                    for (v, d) in rest {
                        if v > best.0 {
                            best = (v, row + j + d);
                        }
                    }
                    out[oh * self.w_out + ow] = best.0;
                    at[oh * self.w_out + ow] = (base + best.1) as u32;
                }
            }
            return;
        }
        for oh in 0..self.h_out {
            let rows = self.valid(0, oh, self.h);
            for ow in 0..self.w_out {
                let mut best: Option<(f32, usize)> = None;
                for ki in rows.clone() {
                    let ih = oh * sh + ki - self.padding[0];
                    for kj in self.valid(1, ow, w) {
                        let i = ih * w + ow * sw + kj - self.padding[1];
                        if best.is_none_or(|(v, _)| x[i] > v) {
                            best = Some((x[i], i));
                        }
                    }
                }
                // `new` keeps the padding within half the kernel, so every window sees the input.
                let (v, i) = best.expect("a window inside the input");
                out[oh * self.w_out + ow] = v;
                at[oh * self.w_out + ow] = (base + i) as u32;
            }
        }
    }
}

/// The pooled output `[N, C, H_out, W_out]` of `x` `[N, C, H, W]`, and for each output the
/// index in `x` of the element it took.
///
/// # Panics
/// If `x` is shorter than the input's shape, or has 2^32 elements or more (wasm32's memory
/// holds fewer).
pub fn forward(g: &Pool2d, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let planes = g.batch * g.channels;
    assert!(
        x.len() >= planes * g.plane_in() && x.len() <= u32::MAX as usize,
        "max pooling: the input does not fit its shape or u32 indices"
    );
    let mut out = vec![0.0f32; planes * g.plane_out()];
    let mut at = vec![0u32; out.len()];
    let each = |(p, (out, at)): (usize, (&mut [f32], &mut [u32]))| {
        let base = p * g.plane_in();
        g.plane(&x[base..base + g.plane_in()], base, out, at);
    };
    let n = g.plane_out();
    // An evaluation's forward pass spreads its planes over the threads, as the convolution does.
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(n)
            .zip(at.par_chunks_mut(n))
            .enumerate()
            .for_each(each);
    }
    #[cfg(not(feature = "threads"))]
    out.chunks_mut(n)
        .zip(at.chunks_mut(n))
        .enumerate()
        .for_each(each);
    (out, at)
}

/// The gradient of `forward`'s input from its output's, `dout`: each output's gradient added
/// at the index it took (`at`).
pub fn backward(g: &Pool2d, dout: &[f32], at: &[u32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; g.batch * g.channels * g.plane_in()];
    for (d, &i) in dout.iter().zip(at) {
        dx[i as usize] += d;
    }
    dx
}
