//! Learning-rate schedules over one round's local steps, in closed form, matching PyTorch's
//! schedulers stepped once per optimizer step: `StepLR`, `ExponentialLR`, `CosineAnnealingLR`
//! (over the round), `OneCycleLR` (peaking at the base rate, cosine annealing, no momentum
//! cycling) and `LinearLR` (a warm-up from a third of the base rate).

use std::f64::consts::PI;

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    Step { step_size: usize, gamma: f64 },
    Exponential { gamma: f64 },
    Cosine,
    OneCycle,
    Warmup { steps: usize },
}

impl Schedule {
    /// The schedule a job's options name; `gamma` and the step counts as the protocol sends them.
    pub fn parse(name: &str, step_size: usize, gamma: Option<f64>, warmup: usize) -> Result<Self> {
        let bad = |msg: String| Err(TrainerError::Config(msg));
        if step_size == 0 || warmup == 0 {
            return bad("lrStepSize and lrWarmupSteps must be at least 1".into());
        }
        if let Some(g) = gamma
            && !(g.is_finite() && g > 0.0)
        {
            return bad(format!("lrGamma must be positive, got {g}"));
        }
        Ok(match name {
            "constant" => Schedule::Constant,
            "step" => Schedule::Step {
                step_size,
                gamma: gamma.unwrap_or(0.1),
            },
            "exponential" => match gamma {
                Some(gamma) => Schedule::Exponential { gamma },
                None => return bad("the exponential lr schedule needs lrGamma".into()),
            },
            "cosine" => Schedule::Cosine,
            "one-cycle" => Schedule::OneCycle,
            "warmup" => Schedule::Warmup { steps: warmup },
            other => {
                return bad(format!(
                    "lrSchedule {other:?}: use constant, step, exponential, cosine, one-cycle or warmup"
                ));
            }
        })
    }

    /// The rate for optimizer step `step` (from 0) of `total`, from the base rate `lr`.
    pub fn lr(&self, lr: f64, step: usize, total: usize) -> f64 {
        let k = step as f64;
        match *self {
            Schedule::Constant => lr,
            Schedule::Step { step_size, gamma } => lr * gamma.powi((step / step_size) as i32),
            Schedule::Exponential { gamma } => lr * gamma.powi(step as i32),
            Schedule::Cosine => lr * (1.0 + (PI * k / total.max(1) as f64).cos()) / 2.0,
            Schedule::OneCycle => one_cycle(lr, k, total.max(2) as f64),
            Schedule::Warmup { steps } => {
                let start = 1.0 / 3.0;
                lr * (start + (1.0 - start) * k.min(steps as f64) / steps as f64)
            }
        }
    }
}

/// PyTorch's `OneCycleLR` defaults: 30% of the steps rising from `max / 25`, the rest falling
/// to `max / 25 / 1e4`, each along half a cosine.
fn one_cycle(max: f64, k: f64, total: f64) -> f64 {
    let initial = max / 25.0;
    let last = initial / 1e4;
    let peak_at = 0.3 * total - 1.0;
    let anneal = |from: f64, to: f64, pct: f64| to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0);
    if k <= peak_at {
        anneal(initial, max, k / peak_at)
    } else {
        anneal(max, last, (k - peak_at) / (total - 1.0 - peak_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_pytorchs_formulas_at_known_points() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} != {b}");
        let step = Schedule::parse("step", 3, Some(0.5), 5).unwrap();
        close(step.lr(1.0, 2, 10), 1.0);
        close(step.lr(1.0, 3, 10), 0.5);
        close(Schedule::Cosine.lr(2.0, 5, 10), 1.0);
        let warm = Schedule::parse("warmup", 1, None, 4).unwrap();
        close(warm.lr(3.0, 0, 10), 1.0);
        close(warm.lr(3.0, 4, 10), 3.0);
        close(warm.lr(3.0, 9, 10), 3.0);
        // One-cycle starts at max/25 and peaks at max after 30% of the steps.
        close(Schedule::OneCycle.lr(1.0, 0, 10), 0.04);
        close(Schedule::OneCycle.lr(1.0, 2, 10), 1.0);
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(Schedule::parse("exponential", 1, None, 5).is_err());
        assert!(Schedule::parse("linear", 1, None, 5).is_err());
        assert!(Schedule::parse("step", 0, None, 5).is_err());
        assert!(Schedule::parse("step", 1, Some(-1.0), 5).is_err());
    }
}
