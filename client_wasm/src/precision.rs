//! Mixed precision (`precision: "fp16"`): a step's matrix products run in half precision where
//! the WebGPU device has `shader-f16`, while the weights the optimizer updates stay float32.
//!
//! How a step runs, as PyTorch's automatic mixed precision does it:
//! - `half` gives the step a model whose linear and convolution weights are cast to f16. The
//!   casts are tracked, so each weight's f16 gradient comes back to its float32 master as float32.
//! - Each of those layers casts its input to f16; every other layer (normalisation, attention,
//!   embeddings) runs in float32, its input cast back, and so do the logits and the loss.
//! - The loss is multiplied by a power of two (`LossScale`) before the backward pass, so that
//!   small gradients do not flush to zero in f16, and the gradients are divided by it after.
//!   Multiplying and dividing by a power of two is exact.
//! - A step whose scaled gradients overflowed (any of them not finite) changes no weight through
//!   its gradient: every gradient is zeroed on the device, without a read. With plain SGD that
//!   skips the step; optimizers with state (momentum, Adam) still take the step their state
//!   gives, as for a zero gradient. The scale halves when a step overflowed, and doubles after
//!   `GROWTH_STEPS` clean ones.
//!
//! A job resumed from a checkpoint starts from a fresh scale (the checkpoint does not keep it), so
//! an fp16 job resumes to within rounding, not bit for bit as a float32 job does.
//!
//! The overflow flags are read with the losses (every few steps on WebGPU). After an overflow,
//! the job reads every step until a step is clean, so a scale that is too high costs one step
//! a halving, not a window of them.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, FloatDType, Tensor};
use serde::Deserialize;

use crate::model::{Layer, Model};

/// The arithmetic a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32 throughout.
    #[default]
    Fp32,
    /// Matrix products in f16, float32 master weights, loss scaling (where the device can).
    Fp16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
}

/// The first scale: 2^10. PyTorch starts at 2^16 and halves on its way down, a step each; a
/// local job may be a few dozen steps, so it starts lower.
pub const INITIAL_SCALE: f32 = 1024.0;
/// Clean steps in a row after which the scale doubles (PyTorch: 2,000; local jobs are short).
pub const GROWTH_STEPS: usize = 200;
/// The scale stays within [1, 2^24]: below 1 it would no longer keep gradients from flushing.
const MIN_SCALE: f32 = 1.0;
const MAX_SCALE: f32 = 16_777_216.0;

/// The dynamic loss scale of one learner, kept from job to job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    pub scale: f32,
    clean: usize,
    /// No clean step since the last overflow (or ever): read each step until there is one.
    pub unsettled: bool,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: INITIAL_SCALE,
            clean: 0,
            unsettled: true,
        }
    }
}

impl LossScale {
    /// A fresh scale of `scale` (a power of two), to be confirmed by a clean step.
    pub fn starting_at(scale: f32) -> Self {
        LossScale {
            scale,
            ..LossScale::default()
        }
    }

    /// Update on the overflow flags of the steps just read, in order; all were taken at the
    /// current scale, so one or more overflows halve it once.
    pub fn after(&mut self, overflowed: &[bool]) {
        if overflowed.iter().any(|&o| o) {
            self.scale = (self.scale / 2.0).max(MIN_SCALE);
            self.clean = overflowed.iter().rev().take_while(|&&o| !o).count();
            self.unsettled = self.clean == 0;
            return;
        }
        self.unsettled = false;
        self.clean += overflowed.len();
        if self.clean >= GROWTH_STEPS {
            self.scale = (self.scale * 2.0).min(MAX_SCALE);
            self.clean = 0;
        }
    }
}

/// `model` with its linear and convolution weights cast to f16, gradients flowing back to them.
pub fn half<B: Backend>(model: &Model<B>) -> Model<B> {
    let layers = model
        .layers
        .iter()
        .map(|layer| match layer {
            Layer::Linear(l) => Layer::Linear(l.clone().map(&mut ToHalf)),
            Layer::Conv1d(c) => Layer::Conv1d(c.clone().map(&mut ToHalf)),
            Layer::Conv2d(c) => Layer::Conv2d(c.clone().map(&mut ToHalf)),
            other => other.clone(),
        })
        .collect();
    Model {
        layers,
        graph: model.graph.clone(),
    }
}

struct ToHalf;

impl<B: Backend> ModuleMapper<B> for ToHalf {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        // `map` keeps the parameter's id and leaves its tensor as the tracked cast it is.
        param.map(|t| t.cast(FloatDType::F16))
    }
}

/// The dtype a layer computes in: its weights' for the layers `half` casts, float32 for the rest.
pub fn compute_dtype<B: Backend>(layer: &Layer<B>) -> DType {
    match layer {
        Layer::Linear(l) => l.weight.val().dtype(),
        Layer::Conv1d(c) => c.weight.val().dtype(),
        Layer::Conv2d(c) => c.weight.val().dtype(),
        _ => DType::F32,
    }
}

/// `t` in `dtype`; `t` itself when it is already (so float32 models pay nothing).
pub fn cast<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// A step's gradients, unscaled and zeroed if any overflowed: `g ← (overflow ? 0 : g) / scale`.
pub fn unscale<B: Backend, const D: usize>(
    g: Tensor<B, D>,
    overflow: &Tensor<B, 1, Bool>,
    scale: f32,
) -> Tensor<B, D> {
    let shape = g.shape();
    let mask = overflow.clone().reshape([1; D]).expand(shape);
    g.mask_fill(mask, 0.0).div_scalar(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflow_halves_the_scale_once_per_read_and_clean_steps_double_it() {
        let mut s = LossScale::default();
        assert!(s.unsettled);
        s.after(&[true, true, true]);
        assert_eq!((s.scale, s.unsettled), (INITIAL_SCALE / 2.0, true));
        s.after(&[false]);
        assert!(!s.unsettled);
        s.after(&[false; GROWTH_STEPS - 2]);
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        s.after(&[false]);
        assert_eq!(s.scale, INITIAL_SCALE);
        // Clean steps after an overflow in the same read count towards the next doubling.
        s.after(&[true, false, false]);
        assert_eq!(
            (s.scale, s.clean, s.unsettled),
            (INITIAL_SCALE / 2.0, 2, false)
        );
        let mut low = LossScale::starting_at(MIN_SCALE);
        low.after(&[true]);
        assert_eq!(low.scale, MIN_SCALE);
    }

    #[test]
    fn fp32_and_fp16_are_the_option_strings() {
        let p: Precision = serde_json::from_str("\"fp16\"").unwrap();
        assert_eq!((p, p.name()), (Precision::Fp16, "fp16"));
        assert_eq!(Precision::default().name(), "fp32");
        assert!(serde_json::from_str::<Precision>("\"bf16\"").is_err());
    }
}
