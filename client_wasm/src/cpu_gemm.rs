//! An f32 matrix product, `C (+)= A · B`, for the CPU backend's convolutions (`cpu_conv`) and
//! linear layers (`cpu_linear_op`).
//!
//! Why not `gemm`, which burn-flex uses: a convolution's three products (forward, input
//! gradient, weight gradient) read one operand transposed or gathered, which burn-flex meets
//! with layout copies and, for the weight gradient, a convolution whose "kernel" is the whole
//! output gradient. This product reads any strides directly. And the microkernel is ours, so that
//! it can use relaxed SIMD's fused multiply-add where the build has it (`gemm`'s wasm kernel
//! multiplies, then adds). Timed in Node on this project's 2-core machine (mnist-cnn's second
//! layer, `[64 × 800] · [800 × 196·N]`): `gemm` 23-25 GFLOP/s, this kernel (a 4 × 8 tile) 27-28
//! without fused multiply-add and 36-41 with it (2 × 16: 40-42).
//!
//! The microkernel keeps an `MR × NR` tile of `C` in registers over `KC` steps of depth. It reads
//! `A` in place, one value of each of its `MR` rows per step, whatever `A`'s strides. It reads
//! `B`'s `NR` columns as vectors: in place where `B`'s rows are contiguous, else from a panel
//! packed `KC` rows at a time (BLIS's layout), as is a last panel narrower than `NR`. A training
//! step at batch 10 is made of thin products (ten rows of a linear layer, one example of a
//! convolution) where packing every operand cost more than multiplying: profiled in mnist-cnn
//! under Node on one thread (`node --cpu-prof`, a build that keeps its names), packing `B` took
//! 15% of the samples and packing `A` 1%, seven tenths of the first the linear layers' weights.
//! Where `B` would have to be packed whole and `Aᵀ` would not, the product is computed
//! transposed instead, `Cᵀ = Bᵀ · Aᵀ` (see `transposed_pays`).

use crate::simd_lanes::{self as lanes, LANES, V};

/// Rows of `C` per microkernel tile. 2 × 16 ran mnist-cnn 3-7% faster than 4 × 8 under Node,
/// with and without fused multiply-add (both fit wasm's 16 vector registers on x86).
const MR: usize = 2;
/// Columns of `C` per microkernel tile, in vectors.
const NV: usize = 4;
const NR: usize = NV * LANES;
/// Depth of one block: `KC × NR` floats of `B` (16 KiB) stay in the first cache level while the
/// tiles of `MC` rows of `A` pass over them, and `MC × KC` of `A` (64 KiB) in the second while
/// every panel of `B` passes over them.
const KC: usize = 256;
const MC: usize = 64;
/// What packing one value of `B` costs, in vector multiply-adds of the microkernel: a scalar
/// read and write to a strided place (the choice between the two orientations hinges on it).
const PACK_COST: usize = 4;

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

    /// This matrix transposed (the same values).
    fn t(self) -> Self {
        Mat {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
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
    let (problem, out) = match transposed_pays(m, n, k, a, b) {
        false => ((m, n, a, b), Out { rs: ldc, cs: 1 }),
        true => ((n, m, b.t(), a.t()), Out { rs: 1, cs: ldc }),
    };
    PACKED.with_borrow_mut(|bp| blocked(problem, k, c, out, accumulate, bp));
}

/// Whether computing `Cᵀ = Bᵀ · Aᵀ` costs less than `C = A · B`: the microkernel's work, counting
/// the columns a last narrow panel pads, plus the values of the right operand that need packing
/// (all of them when its rows are not contiguous) and, transposed, the scattered writes of `C`.
fn transposed_pays(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> bool {
    let cost = |m: usize, n: usize, right: Mat, scattered: usize| {
        let work = m.next_multiple_of(MR) * n.next_multiple_of(NR) / LANES * k;
        let packed = match right.cs == 1 {
            true => usize::from(!n.is_multiple_of(NR)) * NR * k,
            false => n * k,
        };
        work + PACK_COST * packed + scattered
    };
    cost(n, m, a.t(), m * n) < cost(m, n, b, 0)
}

thread_local! {
    /// Each thread's buffer for packed panels of `B`, kept between products: fresh zeroed ones
    /// cost a memset each. Packing writes every value the kernel reads, so what the buffer held
    /// before never matters.
    static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where `C` lies: element `(i, j)` at `c[i * rs + j * cs]` (transposed when `rs` is 1).
#[derive(Clone, Copy)]
struct Out {
    rs: usize,
    cs: usize,
}

/// The loops over blocks of depth, blocks of rows of `A`, panels of `B` and tiles of rows.
fn blocked(
    (m, n, a, b): (usize, usize, Mat, Mat),
    k: usize,
    c: &mut [f32],
    out: Out,
    accumulate: bool,
    bp: &mut Vec<f32>,
) {
    let panels = n.div_ceil(NR);
    // In place: every full panel when B's rows are contiguous. Packed: the others, which are the
    // last panel alone (slot 0) or every panel (slot j).
    let in_place = |j: usize| b.cs == 1 && (j + 1) * NR <= n;
    let slot = |j: usize| if b.cs == 1 { 0 } else { j };
    let packed_panels = (0..panels).filter(|&j| !in_place(j)).count();
    if bp.len() < packed_panels * NR * KC.min(k) {
        bp.resize(packed_panels * NR * KC.min(k), 0.0);
    }
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        for j in (0..panels).filter(|&j| !in_place(j)) {
            let into = &mut bp[slot(j) * NR * kc..][..NR * kc];
            pack_b(b, pc, kc, j * NR, NR.min(n - j * NR), into);
        }
        let panel = |j: usize| match in_place(j) {
            true => Panel {
                data: &b.data[pc * b.rs + j * NR..][..(kc - 1) * b.rs + NR],
                rs: b.rs,
            },
            false => Panel {
                data: &bp[slot(j) * NR * kc..][..NR * kc],
                rs: NR,
            },
        };
        // MC rows of A at a time, so that they stay in cache while every panel passes over them.
        for ic in (0..m).step_by(MC) {
            for j in 0..panels {
                let panel = panel(j);
                for row in (ic..m.min(ic + MC)).step_by(MR) {
                    let mr = MR.min(m - row);
                    // A's rows for this tile, from column pc; a missing last row repeats the
                    // first (its results are not stored).
                    let rows: [&[f32]; MR] = std::array::from_fn(|r| {
                        let i = row + if r < mr { r } else { 0 };
                        &a.data[i * a.rs + pc * a.cs..][..(kc - 1) * a.cs + 1]
                    });
                    let nr = NR.min(n - j * NR);
                    let tile = Tile {
                        row,
                        col: j * NR,
                        mr,
                        nr,
                    };
                    kernel(kc, rows, a.cs, panel, c, out, tile, accumulate || pc > 0);
                }
            }
        }
    }
}

/// Columns `col..col + nr` of `B`'s rows `pc..pc + kc` as a `kc × NR` row-major panel,
/// zero-padded. The source is read along its contiguous axis: a transposed `B` column by column
/// into the panel, which stays in cache, instead of one strided value at a time.
fn pack_b(b: Mat, pc: usize, kc: usize, col: usize, nr: usize, panel: &mut [f32]) {
    if b.cs == 1 {
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            let start = (pc + kk) * b.rs + col;
            row[..nr].copy_from_slice(&b.data[start..start + nr]);
        }
    } else if b.rs == 1 {
        for c in 0..nr {
            let column = &b.data[(col + c) * b.cs + pc..][..kc];
            for (row, &v) in panel.chunks_exact_mut(NR).zip(column) {
                row[c] = v;
            }
        }
    } else {
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            (0..nr).for_each(|c| row[c] = b.at(pc + kk, col + c));
        }
    }
    if nr < NR {
        panel
            .chunks_exact_mut(NR)
            .for_each(|row| row[nr..].fill(0.0));
    }
}

/// `kc` rows of `NR` columns of `B`, row `kk` at `data[kk * rs..][..NR]`.
#[derive(Clone, Copy)]
struct Panel<'a> {
    data: &'a [f32],
    rs: usize,
}

/// Where a microkernel's tile lands in `C`: `mr × nr` of it are real (edges are partial).
#[derive(Clone, Copy)]
struct Tile {
    row: usize,
    col: usize,
    mr: usize,
    nr: usize,
}

/// One `MR × NR` tile of `C`: `Σ_kk a[r][kk · acs] · panel[kk]` for each of the tile's rows.
#[allow(clippy::too_many_arguments)] // the operands, the output and where the tile lands in it
#[inline(always)]
fn kernel(
    kc: usize,
    a: [&[f32]; MR],
    acs: usize,
    b: Panel,
    c: &mut [f32],
    out: Out,
    t: Tile,
    accumulate: bool,
) {
    assert!(a.iter().all(|row| row.len() > (kc - 1) * acs));
    assert!(b.data.len() >= (kc - 1) * b.rs + NR);
    // A whole tile of a row-major C is read and written as vectors, and a sum goes on from C's
    // own values: at the depth of a linear layer's weight gradient (the batch, 10), copying each
    // tile through a buffer took as long as computing it.
    let whole = out.cs == 1 && t.mr == MR && t.nr == NR;
    let at = |r: usize| (t.row + r) * out.rs + t.col * out.cs;
    let mut acc = [[lanes::zero(); NV]; MR];
    if whole && accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            let src = &c[at(r)..][..NR];
            // SAFETY: src holds NR = NV · LANES floats.
            *row = std::array::from_fn(|v| unsafe { lanes::load(src.as_ptr().add(v * LANES)) });
        }
    }
    let rows = a.map(<[f32]>::as_ptr);
    let bp = b.data.as_ptr();
    for kk in 0..kc {
        // SAFETY: kk < kc, and each row holds (kc - 1) · acs + 1 floats and the panel
        // (kc - 1) · rs + NR (asserted above).
        unsafe {
            let bv: [V; NV] = std::array::from_fn(|v| lanes::load(bp.add(kk * b.rs + v * LANES)));
            for (row, ap) in acc.iter_mut().zip(rows) {
                let av = lanes::splat(*ap.add(kk * acs));
                for (x, bv) in row.iter_mut().zip(bv) {
                    *x = lanes::madd(av, bv, *x);
                }
            }
        }
    }
    if whole {
        for (r, row) in acc.iter().enumerate() {
            let dst = &mut c[at(r)..][..NR];
            for (v, x) in row.iter().enumerate() {
                lanes::store(&mut dst[v * LANES..][..LANES], *x);
            }
        }
        return;
    }
    let mut tile = [0.0f32; NR];
    for (r, row) in acc.iter().enumerate().take(t.mr) {
        for (v, x) in row.iter().enumerate() {
            lanes::store(&mut tile[v * LANES..][..LANES], *x);
        }
        let start = at(r);
        if out.cs == 1 {
            let dst = &mut c[start..][..t.nr];
            match accumulate {
                true => dst.iter_mut().zip(&tile).for_each(|(d, s)| *d += s),
                false => dst.copy_from_slice(&tile[..t.nr]),
            }
        } else {
            for (q, s) in tile[..t.nr].iter().enumerate() {
                let d = &mut c[start + q * out.cs];
                *d = if accumulate { *d + s } else { *s };
            }
        }
    }
}
