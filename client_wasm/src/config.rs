//! A local training job's configuration: `TrainOptions` as JavaScript writes it (the protocol's
//! config keys in camelCase, strings for the optimizer), checked once into a typed
//! `TrainingConfig`, the way Burn's examples keep a `TrainingConfig` next to the loop.

use std::str::FromStr;

use serde::Deserialize;

use crate::augment::Augment;
use crate::error::{Result, TrainerError};
use crate::precision::Precision;
use crate::schedule::Schedule;

/// The options object of `Trainer.train`. Unknown fields are refused: a misspelt option
/// (`learningRate`) must be an error, not a silent default.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainOptions {
    #[serde(default = "defaults::epochs")]
    pub epochs: usize,
    /// A number, or `"auto"`: the largest batch whose training step fits `memoryBudgetMb`.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: BatchSize,
    /// What `batchSize: "auto"` may spend, in MB (default 256).
    #[serde(default)]
    pub memory_budget_mb: Option<f64>,
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    #[serde(default = "defaults::optimizer")]
    pub optimizer: String,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    /// `None`: the optimizer's PyTorch default (AdamW 0.01, the others 0).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    #[serde(default = "defaults::schedule")]
    pub lr_schedule: String,
    #[serde(default = "defaults::one")]
    pub lr_step_size: usize,
    #[serde(default)]
    pub lr_gamma: Option<f64>,
    #[serde(default = "defaults::warmup")]
    pub lr_warmup_steps: usize,
    /// Clip each step's gradients to this global L2 norm.
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    #[serde(default)]
    pub proximal_mu: f64,
    /// `None`: shuffle from a fresh random seed; `Some(s)`: shuffle with seed `s`.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default = "defaults::yes")]
    pub shuffle: bool,
    /// Image augmentation (see `augment`): all off by default.
    #[serde(default)]
    pub augment_crop: usize,
    #[serde(default)]
    pub augment_flip: bool,
    #[serde(default)]
    pub augment_rotate: f64,
    #[serde(default)]
    pub augment_brightness: f64,
    #[serde(default)]
    pub augment_contrast: f64,
    #[serde(default)]
    pub augment_mixup: f64,
    /// `"fp16"`: mixed precision where the device has `shader-f16` (see `precision`).
    #[serde(default)]
    pub precision: Precision,
}

mod defaults {
    pub fn epochs() -> usize {
        1
    }
    pub fn batch_size() -> super::BatchSize {
        super::BatchSize::Fixed(10)
    }
    pub fn lr() -> f64 {
        0.05
    }
    pub fn optimizer() -> String {
        "sgd".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn schedule() -> String {
        "constant".into()
    }
    pub fn one() -> usize {
        1
    }
    pub fn warmup() -> usize {
        5
    }
}

/// `batchSize` as JavaScript writes it: a number, or `"auto"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BatchSize {
    Fixed(usize),
    Named(String),
}

/// What `batchSize: "auto"` may spend when the task does not say (the page's budget).
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 << 20;

/// The optimizers a job can ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// SGD; `momentum` 0 means none (and no state to keep).
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    Adam,
    AdamW,
    /// PyTorch's RMSprop: alpha 0.99, eps 1e-8, optional momentum.
    RmsProp {
        momentum: f64,
    },
}

impl FromStr for Optimizer {
    type Err = TrainerError;

    /// The JS option strings, with the momentum filled in later by `TrainingConfig`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            }),
            "adam" => Ok(Optimizer::Adam),
            "adamw" => Ok(Optimizer::AdamW),
            "rmsprop" => Ok(Optimizer::RmsProp { momentum: 0.0 }),
            other => Err(TrainerError::Config(format!(
                "optimizer {other:?}: use sgd, adam, adamw or rmsprop"
            ))),
        }
    }
}

impl Optimizer {
    /// Values of state kept per parameter: what the memory estimate must reserve.
    pub fn state_slots(&self) -> u64 {
        match *self {
            Optimizer::Sgd { momentum, .. } => u64::from(momentum > 0.0),
            Optimizer::RmsProp { momentum } => 1 + u64::from(momentum > 0.0),
            Optimizer::Adam | Optimizer::AdamW => 2,
        }
    }
}

/// How batches are ordered each epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    /// As given.
    Fixed,
    /// Shuffled from this seed.
    Shuffled(u64),
    /// Shuffled from a fresh random seed.
    Random,
}

/// A checked training job.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingConfig {
    pub epochs: usize,
    /// Resolved before training when `auto_batch` is set (see `Learner::train`).
    pub batch_size: usize,
    /// `batchSize: "auto"`: the memory budget, in bytes, that picks the batch size.
    pub auto_batch: Option<u64>,
    pub lr: f64,
    pub optimizer: Optimizer,
    /// Weight decay; `None` is PyTorch's default for the optimizer (AdamW 0.01, the others 0).
    pub weight_decay: Option<f64>,
    pub schedule: Schedule,
    /// Clip each step's gradients to this global L2 norm.
    pub grad_clip_norm: Option<f64>,
    /// FedProx μ; 0 is plain local training.
    pub proximal_mu: f64,
    pub order: Order,
    /// For image inputs only; the default does nothing.
    pub augment: Augment,
    pub precision: Precision,
}

impl TryFrom<TrainOptions> for TrainingConfig {
    type Error = TrainerError;

    fn try_from(o: TrainOptions) -> Result<Self> {
        let (batch_size, auto_batch) = match (&o.batch_size, o.memory_budget_mb) {
            (BatchSize::Fixed(n), None) => (*n, None),
            (BatchSize::Named(name), budget) if name == "auto" => match budget {
                None => (0, Some(DEFAULT_MEMORY_BUDGET)),
                Some(mb) if mb.is_finite() && mb > 0.0 => {
                    (0, Some((mb * (1u64 << 20) as f64) as u64))
                }
                Some(mb) => {
                    return Err(TrainerError::Config(format!(
                        "memoryBudgetMb must be positive, got {mb}"
                    )));
                }
            },
            (BatchSize::Named(other), _) => {
                return Err(TrainerError::Config(format!(
                    "batchSize must be a number or \"auto\", got {other:?}"
                )));
            }
            (BatchSize::Fixed(_), Some(_)) => {
                return Err(TrainerError::Config(
                    "memoryBudgetMb is for batchSize \"auto\"".into(),
                ));
            }
        };
        if o.epochs == 0 || (batch_size == 0 && auto_batch.is_none()) {
            return Err(TrainerError::Config(
                "epochs and batchSize must be at least 1".into(),
            ));
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(TrainerError::Config(format!(
                "lr must be positive, got {}",
                o.lr
            )));
        }
        let optimizer = match o.optimizer.parse()? {
            Optimizer::Sgd { .. } => Optimizer::Sgd {
                momentum: o.momentum,
                nesterov: o.nesterov,
            },
            Optimizer::RmsProp { .. } => Optimizer::RmsProp {
                momentum: o.momentum,
            },
            other => other,
        };
        if o.nesterov && !matches!(optimizer, Optimizer::Sgd { momentum, .. } if momentum > 0.0) {
            return Err(TrainerError::Config(
                "nesterov needs the sgd optimizer with momentum > 0".into(),
            ));
        }
        if !(0.0..1.0).contains(&o.momentum)
            || o.weight_decay.is_some_and(|w| w.is_nan() || w < 0.0)
        {
            return Err(TrainerError::Config(
                "momentum must be in [0, 1) and weightDecay at least 0".into(),
            ));
        }
        if o.grad_clip_norm
            .is_some_and(|c| !(c > 0.0 && c.is_finite()))
        {
            return Err(TrainerError::Config("gradClipNorm must be positive".into()));
        }
        let schedule = Schedule::parse(
            &o.lr_schedule,
            o.lr_step_size,
            o.lr_gamma,
            o.lr_warmup_steps,
        )?;
        let augment = Augment {
            crop_padding: o.augment_crop,
            flip: o.augment_flip,
            rotate_degrees: o.augment_rotate,
            brightness: o.augment_brightness,
            contrast: o.augment_contrast,
            mixup_alpha: o.augment_mixup,
        };
        augment.check()?;
        let order = match (o.shuffle, o.seed) {
            (false, _) => Order::Fixed,
            (true, Some(seed)) => Order::Shuffled(seed),
            (true, None) => Order::Random,
        };
        Ok(TrainingConfig {
            epochs: o.epochs,
            batch_size,
            auto_batch,
            lr: o.lr,
            optimizer,
            weight_decay: o.weight_decay,
            schedule,
            grad_clip_norm: o.grad_clip_norm,
            proximal_mu: o.proximal_mu,
            order,
            augment,
            precision: o.precision,
        })
    }
}

impl TrainingConfig {
    /// Parse and check the options' JSON.
    pub fn from_json(json: &str) -> Result<Self> {
        let options: TrainOptions =
            serde_json::from_str(json).map_err(|e| TrainerError::Config(e.to_string()))?;
        options.try_into()
    }
}

#[cfg(test)]
mod tests;
