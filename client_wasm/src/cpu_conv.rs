//! A 2-d convolution and its two gradients on the CPU, over plain slices: each example's input
//! is unfolded into columns (im2col) and multiplied by the weight with `cpu_gemm`.
//!
//! Per example, with `K = C_in·kh·kw` and `P = H_out·W_out`:
//! - forward: `out[C_out × P] = W[C_out × K] · cols[K × P]`;
//! - input gradient: `dcols[K × P] = Wᵀ · dout[C_out × P]`, folded back onto the input (col2im);
//! - weight gradient: `dW[C_out × K] += dout · colsᵀ`, summed over the batch.
//!
//! The backward pass unfolds the input again instead of keeping the forward's columns: they are
//! `kh·kw` times the input (25× for a 5×5 kernel), and unfolding costs about 1% of the products.
//! `cpu_conv_op` puts these behind Burn's autodiff for burn-flex.

use burn::tensor::ops::ConvOptions;
use burn::tensor::ops::conv::calculate_conv_output_size;

use crate::cpu_gemm::{Mat, gemm};

/// The shapes of one ungrouped convolution, NCHW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub h_out: usize,
    pub w_out: usize,
}

impl Geometry {
    /// From `x`'s shape `[N, C_in, H, W]`, the weight's `[C_out, C_in, kh, kw]` and Burn's
    /// options; `None` for a grouped convolution, which this module does not run.
    pub fn new(x: [usize; 4], weight: [usize; 4], options: &ConvOptions<2>) -> Option<Self> {
        let [batch, c_in, h, w] = x;
        let [c_out, c_in_w, kh, kw] = weight;
        if options.groups != 1 || c_in_w != c_in {
            return None;
        }
        let out = |i: usize, k: usize, size: usize| {
            calculate_conv_output_size(
                k,
                options.stride[i],
                options.padding[i],
                options.dilation[i],
                size,
            )
        };
        Some(Geometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
            h_out: out(0, kh, h),
            w_out: out(1, kw, w),
        })
    }

    /// Rows of the columns: `C_in·kh·kw`.
    pub fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output positions per channel: `H_out·W_out`.
    pub fn p(&self) -> usize {
        self.h_out * self.w_out
    }

    fn input_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// The output positions `lo..hi` along one axis whose input index `o·stride + k·dilation -
    /// padding` falls inside `0..size`.
    fn valid(&self, axis: usize, k: usize, size: usize, out: usize) -> (usize, usize) {
        let (s, off) = (self.stride[axis], k * self.dilation[axis]);
        let pad = self.padding[axis];
        let lo = pad.saturating_sub(off).div_ceil(s).min(out);
        let hi = (size + pad).saturating_sub(off).div_ceil(s).clamp(lo, out);
        (lo, hi)
    }

    /// Calls `f(row, out_pos, in_pos, len, in_step)` for each run of valid positions of each
    /// column row: `len` output positions from `out_pos` (contiguous) reading input positions
    /// `in_pos + t·in_step` of the example's input.
    fn runs(&self, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let (sh, sw) = (self.stride[0], self.stride[1]);
        for ci in 0..self.c_in {
            for ky in 0..self.kh {
                let (oy_lo, oy_hi) = self.valid(0, ky, self.h, self.h_out);
                for kx in 0..self.kw {
                    let row = (ci * self.kh + ky) * self.kw + kx;
                    let (ox_lo, ox_hi) = self.valid(1, kx, self.w, self.w_out);
                    for oy in oy_lo..oy_hi {
                        let iy = oy * sh + ky * self.dilation[0] - self.padding[0];
                        let ix = ox_lo * sw + kx * self.dilation[1] - self.padding[1];
                        let in_pos = (ci * self.h + iy) * self.w + ix;
                        f(row, oy * self.w_out + ox_lo, in_pos, ox_hi - ox_lo, sw);
                    }
                }
            }
        }
    }

    /// One example's columns `[K × P]` from its input `[C_in × H × W]` (zeros where the kernel
    /// reads padding).
    pub fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        let p = self.p();
        cols.fill(0.0);
        self.runs(|row, out, inp, len, step| {
            let dst = &mut cols[row * p + out..][..len];
            if step == 1 {
                dst.copy_from_slice(&x[inp..inp + len]);
            } else {
                dst.iter_mut()
                    .enumerate()
                    .for_each(|(t, d)| *d = x[inp + t * step]);
            }
        });
    }

    /// Adds columns `[K × P]` back onto one example's input gradient `[C_in × H × W]`.
    pub fn col2im(&self, cols: &[f32], dx: &mut [f32]) {
        let p = self.p();
        self.runs(|row, out, inp, len, step| {
            let src = &cols[row * p + out..][..len];
            if step == 1 {
                dx[inp..inp + len]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d += s);
            } else {
                src.iter()
                    .enumerate()
                    .for_each(|(t, s)| dx[inp + t * step] += s);
            }
        });
    }
}

/// The convolution of `x` `[N, C_in, H, W]` with `weight` `[C_out, C_in, kh, kw]`, plus
/// `bias` `[C_out]`: `[N, C_out, H_out, W_out]`, row-major.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let mut out = vec![0.0f32; g.batch * g.c_out * p];
    let w = Mat::rows(weight, k);
    let example = |cols: &mut Vec<f32>, (xn, yn): (&[f32], &mut [f32])| {
        g.im2col(xn, cols);
        gemm(g.c_out, p, k, w, Mat::rows(cols, p), yn, p, false);
        if let Some(bias) = bias {
            yn.chunks_exact_mut(p)
                .zip(bias)
                .for_each(|(ch, b)| ch.iter_mut().for_each(|v| *v += b));
        }
    };
    let cols = || vec![0.0f32; k * p];
    // The threaded build splits a training step's batch over its threads (`batch_split`), but
    // not an evaluation's forward pass: that one spreads its examples here.
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        let xs = x.par_chunks_exact(g.input_len());
        xs.zip(out.par_chunks_exact_mut(g.c_out * p))
            .for_each_init(cols, example);
    }
    #[cfg(not(feature = "threads"))]
    {
        let mut cols = cols();
        let xs = x.chunks_exact(g.input_len());
        xs.zip(out.chunks_exact_mut(g.c_out * p))
            .for_each(|pair| example(&mut cols, pair));
    }
    out
}

/// The gradients of `forward`'s output, `dout` `[N, C_out, H_out, W_out]`, with respect to
/// its input (`[N, C_in, H, W]`, when `want_dx`) and its weight (`[C_out, C_in, kh, kw]`, when
/// `want_dw`).
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dout: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, p) = (g.k(), g.p());
    let mut dx = want_dx.then(|| vec![0.0f32; g.batch * g.input_len()]);
    let mut dw = want_dw.then(|| vec![0.0f32; g.c_out * k]);
    let mut cols = vec![0.0f32; k * p];
    let w_t = Mat::transposed(weight, k);
    for (n, dn) in dout.chunks_exact(g.c_out * p).enumerate() {
        if let Some(dw) = dw.as_mut() {
            g.im2col(&x[n * g.input_len()..][..g.input_len()], &mut cols);
            gemm(
                g.c_out,
                k,
                p,
                Mat::rows(dn, p),
                Mat::transposed(&cols, p),
                dw,
                k,
                n > 0,
            );
        }
        if let Some(dx) = dx.as_mut() {
            gemm(k, p, g.c_out, w_t, Mat::rows(dn, p), &mut cols, p, false);
            g.col2im(&cols, &mut dx[n * g.input_len()..][..g.input_len()]);
        }
    }
    (dx, dw)
}

/// The gradient of `forward`'s bias: `dout` `[N, C_out, H_out, W_out]` summed over all but
/// `C_out`.
pub fn bias_grad(g: &Geometry, dout: &[f32]) -> Vec<f32> {
    let mut db = vec![0.0f32; g.c_out];
    for dn in dout.chunks_exact(g.c_out * g.p()) {
        db.iter_mut()
            .zip(dn.chunks_exact(g.p()))
            .for_each(|(d, ch)| *d += ch.iter().sum::<f32>());
    }
    db
}
