//! A packed f32 matrix product, `C (+)= A · B`, for the CPU backend's convolutions
//! (`cpu_conv`).
//!
//! Why not `gemm`, which burn-flex uses: a convolution's three products (forward, input
//! gradient, weight gradient) read one operand transposed or gathered, which burn-flex meets
//! with layout copies and, for the weight gradient, a convolution whose "kernel" is the whole
//! output gradient. Packing here reads any strides directly. And the microkernel is ours, so that
//! it can use relaxed SIMD's fused multiply-add where the build has it (`gemm`'s wasm kernel
//! multiplies, then adds). Timed in Node on this project's 2-core machine (mnist-cnn's second
//! layer, `[64 × 800] · [800 × 196·N]`): `gemm` 23-25 GFLOP/s, this kernel (a 4 × 8 tile) 27-28
//! without fused multiply-add and 36-41 with it (2 × 16: 40-42).
//!
//! Layout (BLIS's): `B` is packed `KC` rows at a time into panels of `NR` columns, `A` `MC`
//! rows at a time into panels of `MR` rows, and the microkernel keeps an `MR × NR` tile of `C`
//! in registers over a panel pair.

use crate::simd_lanes::{self as lanes, LANES, V};

/// Rows of `C` per microkernel tile. 2 × 16 ran mnist-cnn 3-7% faster than 4 × 8 under Node,
/// with and without fused multiply-add (both fit wasm's 16 vector registers on x86).
const MR: usize = 2;
/// Columns of `C` per microkernel tile, in vectors.
const NV: usize = 4;
const NR: usize = NV * LANES;
/// Depth of one packed block: `KC × NR` floats of `B` (16 KiB) and `MC × KC` of `A` (64 KiB)
/// stay in the first two cache levels.
const KC: usize = 256;
const MC: usize = 64;

/// A read-only matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `C = A · B`, or `C += A · B` when `accumulate`, where `A` is `m × k`, `B` is `k × n` and
/// `C` is row-major `m × n` with row stride `ldc`.
///
/// # Panics
/// If a view or `c` is too short for its shape.
#[allow(clippy::too_many_arguments)] // the BLAS signature: shapes, operands, the output and its stride
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n),
        "gemm: an operand is shorter than its shape"
    );
    assert!(
        m == 0 || n == 0 || (m - 1) * ldc + n <= c.len(),
        "gemm: C is shorter than its shape"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|i| c[i * ldc..i * ldc + n].fill(0.0));
        }
        return;
    }
    let panels = n.div_ceil(NR);
    let mut bp = vec![0.0f32; KC.min(k) * panels * NR];
    let mut ap = vec![0.0f32; MC * KC.min(k)];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        pack_b(b, pc, kc, n, &mut bp);
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            pack_a(a, ic, mc, pc, kc, &mut ap);
            for j in 0..panels {
                let nr = NR.min(n - j * NR);
                for i in 0..mc.div_ceil(MR) {
                    let mr = MR.min(mc - i * MR);
                    let tile = Tile {
                        row: ic + i * MR,
                        col: j * NR,
                        mr,
                        nr,
                        ldc,
                    };
                    let add = accumulate || pc > 0;
                    kernel(
                        kc,
                        &ap[i * MR * kc..][..MR * kc],
                        &bp[j * NR * kc..][..NR * kc],
                        c,
                        tile,
                        add,
                    );
                }
            }
        }
    }
}

/// `B`'s rows `pc..pc + kc` as panels of `NR` columns, each `kc × NR` row-major, zero-padded.
fn pack_b(b: Mat, pc: usize, kc: usize, n: usize, bp: &mut [f32]) {
    for (j, panel) in bp
        .chunks_exact_mut(NR * kc)
        .take(n.div_ceil(NR))
        .enumerate()
    {
        let nr = NR.min(n - j * NR);
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            if b.cs == 1 {
                let start = (pc + kk) * b.rs + j * NR;
                row[..nr].copy_from_slice(&b.data[start..start + nr]);
            } else {
                (0..nr).for_each(|c| row[c] = b.at(pc + kk, j * NR + c));
            }
            row[nr..].fill(0.0);
        }
    }
}

/// `A`'s rows `ic..ic + mc`, columns `pc..pc + kc`, as panels of `MR` rows, each `kc × MR`
/// (column by column), zero-padded.
fn pack_a(a: Mat, ic: usize, mc: usize, pc: usize, kc: usize, ap: &mut [f32]) {
    for (i, panel) in ap
        .chunks_exact_mut(MR * kc)
        .take(mc.div_ceil(MR))
        .enumerate()
    {
        let mr = MR.min(mc - i * MR);
        for r in 0..MR {
            if r < mr {
                let row = ic + i * MR + r;
                if a.cs == 1 {
                    let src = &a.data[row * a.rs + pc..][..kc];
                    src.iter()
                        .enumerate()
                        .for_each(|(kk, &v)| panel[kk * MR + r] = v);
                } else {
                    (0..kc).for_each(|kk| panel[kk * MR + r] = a.at(row, pc + kk));
                }
            } else {
                (0..kc).for_each(|kk| panel[kk * MR + r] = 0.0);
            }
        }
    }
}

/// Where a microkernel's tile lands in `C`: `mr × nr` of it are real (edges are partial).
#[derive(Clone, Copy)]
struct Tile {
    row: usize,
    col: usize,
    mr: usize,
    nr: usize,
    ldc: usize,
}

/// One `MR × NR` tile of `C` from packed panels `ap` (`kc × MR`) and `bp` (`kc × NR`).
#[inline(always)]
fn kernel(kc: usize, ap: &[f32], bp: &[f32], c: &mut [f32], t: Tile, accumulate: bool) {
    debug_assert!(ap.len() >= kc * MR && bp.len() >= kc * NR);
    let mut acc = [[lanes::zero(); NV]; MR];
    let (ap, bp) = (ap.as_ptr(), bp.as_ptr());
    for kk in 0..kc {
        // SAFETY: kk < kc, and the panels hold kc × MR and kc × NR floats (asserted above).
        unsafe {
            let b: [V; NV] = std::array::from_fn(|v| lanes::load(bp.add(kk * NR + v * LANES)));
            for (r, row) in acc.iter_mut().enumerate() {
                let a = lanes::splat(*ap.add(kk * MR + r));
                for (v, x) in row.iter_mut().enumerate() {
                    *x = lanes::madd(a, b[v], *x);
                }
            }
        }
    }
    let mut out = [0.0f32; NR];
    for (r, row) in acc.iter().enumerate().take(t.mr) {
        for (v, x) in row.iter().enumerate() {
            lanes::store(&mut out[v * LANES..][..LANES], *x);
        }
        let dst = &mut c[(t.row + r) * t.ldc + t.col..][..t.nr];
        if accumulate {
            dst.iter_mut().zip(&out).for_each(|(d, s)| *d += s);
        } else {
            dst.copy_from_slice(&out[..t.nr]);
        }
    }
}
