//! Four f32 lanes: wasm's SIMD128 where the trainer runs, plain arrays elsewhere (native tests),
//! so that `cpu_gemm`'s blocking and packing are tested natively and only these few lines are
//! target-specific.
//!
//! `madd` is relaxed SIMD's fused multiply-add in a build with `+relaxed-simd`, else a multiply
//! then an add: relaxed SIMD may round once or twice, which training does not mind, and a
//! runtime without it rejects the whole module, so it is a build's choice, never a branch.

/// Floats per vector.
pub const LANES: usize = 4;

#[cfg(target_arch = "wasm32")]
mod imp {
    use core::arch::wasm32::*;

    pub type V = v128;

    #[inline(always)]
    pub fn zero() -> V {
        f32x4_splat(0.0)
    }

    #[inline(always)]
    pub fn splat(x: f32) -> V {
        f32x4_splat(x)
    }

    /// # Safety
    /// `p` must point at 4 readable floats.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller's; v128_load has no alignment requirement.
        unsafe { v128_load(p.cast()) }
    }

    #[inline(always)]
    pub fn store(dst: &mut [f32], x: V) {
        assert!(dst.len() >= 4);
        // SAFETY: dst holds 4 floats (asserted); v128_store has no alignment requirement.
        unsafe { v128_store(dst.as_mut_ptr().cast(), x) }
    }

    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    pub fn madd(a: V, b: V, c: V) -> V {
        f32x4_relaxed_madd(a, b, c)
    }

    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    pub fn madd(a: V, b: V, c: V) -> V {
        f32x4_add(f32x4_mul(a, b), c)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub type V = [f32; 4];

    #[inline(always)]
    pub fn zero() -> V {
        [0.0; 4]
    }

    #[inline(always)]
    pub fn splat(x: f32) -> V {
        [x; 4]
    }

    /// # Safety
    /// `p` must point at 4 readable floats.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller's.
        unsafe { p.cast::<V>().read_unaligned() }
    }

    #[inline(always)]
    pub fn store(dst: &mut [f32], x: V) {
        dst[..4].copy_from_slice(&x);
    }

    #[inline(always)]
    pub fn madd(a: V, b: V, c: V) -> V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
}

pub use imp::*;
