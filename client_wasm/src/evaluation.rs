//! Evaluation: a model's mean loss and accuracy on a dataset, in inference mode.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::data::Dataset;
use crate::error::{Result, TrainerError};
use crate::model::Model;
use crate::objective;
use crate::spec::Loss;
use crate::weights::values;

#[derive(Debug, Clone, Copy)]
pub struct EvalReport {
    pub loss: f64,
    /// `None` for a regression.
    pub accuracy: Option<f64>,
    pub examples: usize,
}

/// Evaluation's batch size: big batches are fast, and inference keeps no autodiff graph.
pub const EVAL_BATCH: usize = 1000;

/// The spec's mean loss and, for a classifier, accuracy, in inference mode (dropout off,
/// BatchNorm on running statistics).
pub async fn evaluate<B: Backend>(
    model: &Model<B>,
    data: &Dataset,
    goal: &Loss,
    device: &B::Device,
) -> Result<EvalReport> {
    let (mut loss, mut correct) = (0.0f64, Some(0usize));
    for idx in data.batches(EVAL_BATCH, None) {
        let (x, y) = data.batch::<B>(&idx, device);
        let logits = model.forward(x);
        let batch = objective::loss(goal, logits.clone(), y.clone());
        loss += values(batch).await?[0] as f64 * idx.len() as f64;
        if let (Some(total), Some(hits)) = (correct, objective::hits(goal, logits, y)) {
            crate::fault::before_read::<B>()?;
            let data = hits
                .into_data_async()
                .await
                .map_err(|e| TrainerError::Backend(format!("{e:?}")))?;
            correct = Some(total + data.iter::<i64>().next().unwrap_or(0) as usize);
        } else {
            correct = None;
        }
    }
    Ok(EvalReport {
        loss: loss / data.len() as f64,
        accuracy: correct.map(|c| c as f64 / data.len() as f64),
        examples: data.len(),
    })
}

/// Inference-mode copy of an autodiff model.
pub fn inference<B: AutodiffBackend>(model: &Model<B>) -> Model<B::InnerBackend> {
    model.valid()
}
