//! What the PyTorch-parity harness asks of a learner and training never does: logits for given
//! inputs, and the gradients of one full batch. Kept apart so the production API stays small.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use crate::data::Dataset;
use crate::error::{Result, TrainerError};
use crate::evaluation;
use crate::learner::Learner;
use crate::memory;
use crate::params;
use crate::weights::{self, Named, values};

impl<B: AutodiffBackend> Learner<B> {
    /// Logits for `x`, in training mode (`train`) or inference mode.
    pub async fn forward(&self, x: Vec<f32>, train: bool) -> Result<Vec<f32>> {
        let n = x.len() / self.spec.input_len().max(1);
        if n == 0 || x.len() != n * self.spec.input_len() {
            return Err(TrainerError::Data(format!(
                "{} values is not a whole number of inputs",
                x.len()
            )));
        }
        if let Some(limit) = self.spec.max_id()
            && x.iter()
                .any(|&v| v < 0.0 || v.fract() != 0.0 || v as usize >= limit)
        {
            return Err(TrainerError::Data(format!(
                "token ids must be whole numbers in 0..{limit}"
            )));
        }
        memory::ensure(memory::inference_bytes(&self.spec, n), "the forward pass")?;
        let shape = [n, self.spec.input_len()];
        if train {
            let t = Tensor::<B, 2>::from_data(TensorData::new(x, shape), &self.device);
            values(self.model().forward(t)).await
        } else {
            let inner = evaluation::inference(self.model());
            let t = Tensor::from_data(TensorData::new(x, shape), &self.device);
            values(inner.forward(t)).await
        }
    }

    /// Gradients of the spec's mean loss over all of `data`, named like PyTorch's `.grad`.
    pub async fn gradients(&self, data: &Dataset) -> Result<Vec<u8>> {
        memory::ensure(
            memory::training_bytes(&self.spec, data.len(), 0),
            "the gradients",
        )?;
        let idx: Vec<usize> = (0..data.len()).collect();
        let (x, y) = data.batch::<B>(&idx, &self.device);
        let grads = crate::objective::loss(&self.spec.loss, self.model().forward(x), y).backward();
        let mut model = self.model().clone();
        let mut out = Named::new();
        for (name, slot) in params::slots(&mut model) {
            if !slot.is_trained() {
                continue;
            }
            let grad = slot
                .grad(&grads)
                .ok_or_else(|| TrainerError::Backend("missing gradient".into()))?;
            out.insert(name, values(grad).await?);
        }
        weights::encode(&out, &self.spec)
    }
}
