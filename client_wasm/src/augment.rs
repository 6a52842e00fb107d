//! Data augmentation for image inputs (`[C, H, W]` per example), applied to a batch on the host as it
//! is assembled, before it goes to the device. Every draw comes from the job's augmentation RNG, so a
//! job with a seed augments the same way each time it runs. Values are not clamped: an image input may
//! be standardised, not only in 0..1.
//!
//! What each does, in the order applied (SPEC §5, `augment-*`):
//! * crop: shift by (dy, dx), each uniform in `-p..=p`, filling with 0 (a random crop of the image
//!   padded by `p` zeros on each side, as torchvision's `RandomCrop(padding=p)`);
//! * flip: mirror left to right with probability 1/2;
//! * rotate: turn about the centre by an angle uniform in `±degrees`, bilinear, filling with 0;
//! * brightness: add one value uniform in `±b` to the example;
//! * contrast: scale each value's distance from the example's mean by a factor uniform in `1 ± c`;
//! * mixup (Zhang et al. 2018): one λ ~ Beta(α, α) per batch; each example becomes
//!   λ·x + (1 − λ)·x[π], for a random permutation π of the batch, and the loss λ·L(y) + (1 − λ)·L(y[π]).

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    pub crop_padding: usize,
    pub flip: bool,
    pub rotate_degrees: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub mixup_alpha: f64,
}

/// What mixup did to a batch: the weight of each example's own label, and its partner's index.
pub struct Mixed {
    pub lambda: f64,
    pub partner: Vec<usize>,
}

impl Augment {
    pub fn is_on(&self) -> bool {
        *self != Augment::default()
    }

    pub fn check(&self) -> Result<()> {
        let fine = self.crop_padding <= 64
            && (0.0..=180.0).contains(&self.rotate_degrees)
            && (0.0..=1.0).contains(&self.brightness)
            && (0.0..1.0).contains(&self.contrast)
            && self.mixup_alpha.is_finite()
            && self.mixup_alpha >= 0.0;
        if fine {
            Ok(())
        } else {
            Err(TrainerError::Config(
                "augmentation: augmentCrop 0..=64, augmentRotate 0..=180 degrees, augmentBrightness \
                 0..=1, augmentContrast in [0, 1), augmentMixup at least 0"
                    .into(),
            ))
        }
    }

    /// Transforms one example `[c, h, w]` in place; `scratch` is reused between calls.
    pub fn example(
        &self,
        x: &mut [f32],
        shape: [usize; 3],
        rng: &mut StdRng,
        scratch: &mut Vec<f32>,
    ) {
        if self.crop_padding > 0 {
            let p = self.crop_padding as i64;
            let (dy, dx) = (rng.random_range(-p..=p), rng.random_range(-p..=p));
            resample(x, shape, scratch, |i, j| {
                Some((i as f64 + dy as f64, j as f64 + dx as f64))
            });
        }
        if self.flip && rng.random_bool(0.5) {
            let w = shape[2];
            for row in x.chunks_mut(w) {
                row.reverse();
            }
        }
        if self.rotate_degrees > 0.0 {
            let angle = rng
                .random_range(-self.rotate_degrees..=self.rotate_degrees)
                .to_radians();
            let (sin, cos) = angle.sin_cos();
            let (cy, cx) = ((shape[1] as f64 - 1.0) / 2.0, (shape[2] as f64 - 1.0) / 2.0);
            // Each output pixel reads the input at its position turned back by the angle.
            resample(x, shape, scratch, |i, j| {
                let (y, x) = (i as f64 - cy, j as f64 - cx);
                Some((cos * y - sin * x + cy, sin * y + cos * x + cx))
            });
        }
        if self.brightness > 0.0 {
            let b = rng.random_range(-self.brightness..=self.brightness) as f32;
            x.iter_mut().for_each(|v| *v += b);
        }
        if self.contrast > 0.0 {
            let f = rng.random_range(1.0 - self.contrast..=1.0 + self.contrast) as f32;
            let mean = x.iter().sum::<f32>() / x.len() as f32;
            x.iter_mut().for_each(|v| *v = mean + f * (*v - mean));
        }
    }

    /// Mixup over a batch of `n` examples of `len` values each, in place; None when it is off.
    pub fn mix(&self, x: &mut [f32], n: usize, len: usize, rng: &mut StdRng) -> Option<Mixed> {
        if self.mixup_alpha <= 0.0 || n < 2 {
            return None;
        }
        let lambda = Beta::new(self.mixup_alpha, self.mixup_alpha)
            .expect("alpha checked positive")
            .sample(rng);
        let mut partner: Vec<usize> = (0..n).collect();
        partner.shuffle(rng);
        let original = x.to_vec();
        let (a, b) = (lambda as f32, 1.0 - lambda as f32);
        for (i, &p) in partner.iter().enumerate() {
            let other = &original[p * len..(p + 1) * len];
            for (v, o) in x[i * len..(i + 1) * len].iter_mut().zip(other) {
                *v = a * *v + b * o;
            }
        }
        Some(Mixed { lambda, partner })
    }
}

/// Rewrites each channel of `x` so that output pixel (i, j) is the input read bilinearly at
/// `from(i, j)`, 0 outside the image.
fn resample(
    x: &mut [f32],
    [c, h, w]: [usize; 3],
    scratch: &mut Vec<f32>,
    from: impl Fn(usize, usize) -> Option<(f64, f64)>,
) {
    scratch.clear();
    scratch.extend_from_slice(x);
    let at = |ch: usize, y: i64, x: i64| -> f32 {
        if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
            0.0
        } else {
            scratch[ch * h * w + y as usize * w + x as usize]
        }
    };
    for ch in 0..c {
        for i in 0..h {
            for j in 0..w {
                let value = from(i, j).map_or(0.0, |(y, xf)| {
                    let (y0, x0) = (y.floor(), xf.floor());
                    let (fy, fx) = ((y - y0) as f32, (xf - x0) as f32);
                    let (y0, x0) = (y0 as i64, x0 as i64);
                    (1.0 - fy) * ((1.0 - fx) * at(ch, y0, x0) + fx * at(ch, y0, x0 + 1))
                        + fy * ((1.0 - fx) * at(ch, y0 + 1, x0) + fx * at(ch, y0 + 1, x0 + 1))
                });
                x[ch * h * w + i * w + j] = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::seeded;

    const SHAPE: [usize; 3] = [1, 4, 5];

    fn image() -> Vec<f32> {
        (0..20).map(|v| v as f32).collect()
    }

    fn run(aug: Augment, seed: u64) -> Vec<f32> {
        let mut x = image();
        aug.example(&mut x, SHAPE, &mut seeded(seed), &mut Vec::new());
        x
    }

    #[test]
    fn off_by_default_and_unchanged_when_off() {
        assert!(!Augment::default().is_on());
        assert_eq!(run(Augment::default(), 1), image());
    }

    #[test]
    fn each_is_deterministic_under_a_seed_and_varies_across_seeds() {
        for aug in [
            Augment {
                crop_padding: 2,
                ..Default::default()
            },
            Augment {
                flip: true,
                ..Default::default()
            },
            Augment {
                rotate_degrees: 30.0,
                ..Default::default()
            },
            Augment {
                brightness: 0.5,
                ..Default::default()
            },
            Augment {
                contrast: 0.5,
                ..Default::default()
            },
        ] {
            assert_eq!(run(aug, 7), run(aug, 7), "{aug:?}");
            let outcomes: Vec<Vec<f32>> = (0..8).map(|s| run(aug, s)).collect();
            assert!(
                outcomes.iter().any(|o| o != &outcomes[0]),
                "{aug:?} never varied"
            );
        }
    }

    #[test]
    fn a_flip_mirrors_rows_and_a_crop_shifts_with_zero_fill() {
        let flips: Vec<Vec<f32>> = (0..16)
            .map(|s| {
                run(
                    Augment {
                        flip: true,
                        ..Default::default()
                    },
                    s,
                )
            })
            .collect();
        let mirrored: Vec<f32> = image()
            .chunks(5)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        assert!(flips.iter().all(|f| *f == image() || *f == mirrored));
        assert!(flips.contains(&mirrored) && flips.contains(&image()));
        for s in 0..16 {
            let out = run(
                Augment {
                    crop_padding: 1,
                    ..Default::default()
                },
                s,
            );
            // A shift keeps the values it does not push out, and fills the rest with 0.
            assert!(out.iter().all(|v| *v == 0.0 || image().contains(v)));
            assert!(out.iter().filter(|v| **v != 0.0).count() >= 11);
        }
    }

    #[test]
    fn a_rotation_by_a_tiny_angle_barely_moves_and_brightness_and_contrast_keep_the_shape() {
        let small = run(
            Augment {
                rotate_degrees: 0.01,
                ..Default::default()
            },
            3,
        );
        assert!(small.iter().zip(image()).all(|(a, b)| (a - b).abs() < 0.01));
        let bright = run(
            Augment {
                brightness: 0.5,
                ..Default::default()
            },
            3,
        );
        let shift = bright[0] - image()[0];
        assert!(
            shift.abs() <= 0.5
                && bright
                    .iter()
                    .zip(image())
                    .all(|(a, b)| (a - b - shift).abs() < 1e-5)
        );
        let contrast = run(
            Augment {
                contrast: 0.5,
                ..Default::default()
            },
            3,
        );
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&contrast) - mean(&image())).abs() < 1e-4);
    }

    #[test]
    fn mixup_blends_pairs_with_one_lambda_and_keeps_the_batch_mean() {
        let aug = Augment {
            mixup_alpha: 0.4,
            ..Default::default()
        };
        let mut x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mixed = aug.mix(&mut x, 4, 3, &mut seeded(5)).unwrap();
        assert!((0.0..=1.0).contains(&mixed.lambda));
        let mut sorted = mixed.partner.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        let before: f32 = (0..12).map(|v| v as f32).sum();
        assert!((x.iter().sum::<f32>() - before).abs() < 1e-3);
        let mut again: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(
            aug.mix(&mut again, 4, 3, &mut seeded(5)).unwrap().partner,
            mixed.partner
        );
        assert!(
            Augment::default()
                .mix(&mut again, 4, 3, &mut seeded(5))
                .is_none()
        );
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        assert!(
            Augment {
                rotate_degrees: 200.0,
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert!(
            Augment {
                contrast: 1.0,
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert!(
            Augment {
                mixup_alpha: f64::NAN,
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert!(
            Augment {
                crop_padding: 4,
                flip: true,
                ..Default::default()
            }
            .check()
            .is_ok()
        );
    }
}
