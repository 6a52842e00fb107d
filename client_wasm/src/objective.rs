//! The spec's training loss in Burn, matching `coordinator/models/losses.py`: targets arrive as
//! floats, class indices for a classifier; binary cross-entropy scores each output as its own yes/no (an index becomes a
//! one-hot row, or with one output the 0/1 target itself); MSE regresses the single output on
//! the target's value. Each reduces as PyTorch's loss modules do by default, over every element.

use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::spec::Loss;

/// The mean loss of `logits` `[N, outputs]` against targets `y` `[N]`.
pub fn loss<B: Backend>(loss: &Loss, logits: Tensor<B, 2>, y: Tensor<B, 1>) -> Tensor<B, 1> {
    let device = logits.device();
    let [n, width] = logits.dims();
    match *loss {
        Loss::CrossEntropy { label_smoothing } => CrossEntropyLossConfig::new()
            .with_smoothing((label_smoothing > 0.0).then_some(label_smoothing as f32))
            .init(&device)
            .forward(logits, y.int()),
        Loss::BceWithLogits => {
            let targets = if width == 1 {
                y.reshape([n, 1])
            } else {
                // One-hot by comparison with 0..width: plain ops every backend has.
                let classes = Tensor::<B, 1, Int>::arange(0..width as i64, &device);
                y.int()
                    .unsqueeze_dim::<2>(1)
                    .equal(classes.unsqueeze_dim(0))
                    .float()
            };
            // PyTorch's stable form: max(x, 0) − x·t + log(1 + e^(−|x|)), averaged.
            let stable = logits.clone().clamp_min(0.0) - logits.clone() * targets
                + logits.abs().neg().exp().add_scalar(1.0).log();
            stable.mean()
        }
        Loss::Mse => MseLoss::new().forward(logits, y.reshape([n, width]), Reduction::Mean),
    }
}

/// How many of `logits`' predictions equal `y`; `None` for a regression, which has no accuracy.
pub fn hits<B: Backend>(
    loss: &Loss,
    logits: Tensor<B, 2>,
    y: Tensor<B, 1>,
) -> Option<Tensor<B, 1, Int>> {
    let [n, width] = logits.dims();
    let y = y.int();
    match loss {
        Loss::Mse => None,
        Loss::BceWithLogits if width == 1 => Some(
            logits
                .greater_elem(0.0)
                .int()
                .reshape([n])
                .equal(y)
                .int()
                .sum(),
        ),
        _ => Some(logits.argmax(1).squeeze_dim::<1>(1).equal(y).int().sum()),
    }
}

/// The labels a dataset for this loss may hold: classes, or 0/1 for a single yes/no output.
/// `None` for a regression's targets, whose values are not classes.
pub fn label_range(loss: &Loss, num_classes: usize) -> Option<usize> {
    match loss {
        Loss::Mse => None,
        Loss::BceWithLogits => Some(num_classes.max(2)),
        Loss::CrossEntropy { .. } => Some(num_classes),
    }
}
