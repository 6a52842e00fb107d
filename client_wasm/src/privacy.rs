//! The delta's privacy treatment: global L2 clipping (Flower's fixed clipping, reporting
//! `norm_bit`) and optional local Gaussian noise from a cryptographically seeded generator.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::error::{Result, TrainerError};
use crate::weights::{Named, l2_norm};

/// Scale so the global L2 norm is at most `max_norm`; true if it had to.
pub fn clip(named: &mut Named, max_norm: f64) -> Result<bool> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(TrainerError::Config(format!(
            "clip norm must be positive, got {max_norm}"
        )));
    }
    let norm = l2_norm(named);
    if norm <= max_norm {
        return Ok(false);
    }
    let scale = (max_norm / norm) as f32;
    named.values_mut().flatten().for_each(|v| *v *= scale);
    Ok(true)
}

/// Add N(0, std²) to every value, from a ChaCha generator seeded with 256 bits of OS entropy.
pub fn add_gaussian(named: &mut Named, std: f64) -> Result<()> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(TrainerError::Config(format!(
            "noise std must be non-negative, got {std}"
        )));
    }
    let mut rng = seeded_rng()?;
    let normal = Normal::new(0.0f64, std).map_err(|e| TrainerError::Config(e.to_string()))?;
    named
        .values_mut()
        .flatten()
        .for_each(|v| *v += normal.sample(&mut rng) as f32);
    Ok(())
}

/// A ChaCha generator seeded with 256 bits of OS entropy (the browser's crypto on wasm): the
/// noise, and the stochastic rounding of int8 deltas, must not be predictable by anyone.
pub fn seeded_rng() -> Result<StdRng> {
    let mut seed = [0u8; 32];
    getrandom_03::fill(&mut seed)
        .map_err(|e| TrainerError::Backend(format!("no random source: {e}")))?;
    Ok(StdRng::from_seed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(values: &[f32]) -> Named {
        [("a".to_string(), values.to_vec())].into_iter().collect()
    }

    #[test]
    fn clipping_scales_to_the_norm_and_reports_it() {
        let mut d = named(&[3.0, 4.0]);
        assert!(clip(&mut d, 1.0).unwrap());
        assert!((l2_norm(&d) - 1.0).abs() < 1e-6);
        let mut small = named(&[0.3, 0.4]);
        assert!(!clip(&mut small, 1.0).unwrap());
        assert_eq!(small["a"], vec![0.3, 0.4]);
    }

    #[test]
    fn noise_has_the_requested_spread() {
        let mut d = named(&vec![0.0; 20_000]);
        add_gaussian(&mut d, 0.5).unwrap();
        let var = d["a"].iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 20_000.0;
        assert!((var.sqrt() - 0.5).abs() < 0.02, "std {}", var.sqrt());
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(clip(&mut named(&[1.0]), 0.0).is_err());
        assert!(add_gaussian(&mut named(&[1.0]), f64::NAN).is_err());
    }
}
