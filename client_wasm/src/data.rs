//! A local dataset held as flat f32 inputs plus targets (class indices, or a regression's values,
//! both as f32: exact for any index below 2^24), cut into mini-batches.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::augment::Augment;
use crate::error::{Result, TrainerError};

pub struct Dataset {
    x: Vec<f32>,
    y: Vec<f32>,
    input_len: usize,
    /// `[C, H, W]` when each example is an image (what augmentation works on).
    image: Option<[usize; 3]>,
}

/// A batch on the device: inputs, targets, and what mixup did (its λ, and each example's partner target).
pub type Batch<B> = (Tensor<B, 2>, Tensor<B, 1>, Option<(f64, Tensor<B, 1>)>);

impl Dataset {
    /// `classes`: labels must be whole numbers in `0..classes`; `None` for a regression's targets.
    pub fn new(x: Vec<f32>, y: Vec<f32>, input_len: usize, classes: Option<usize>) -> Result<Self> {
        if y.is_empty() {
            return Err(TrainerError::Data("the dataset is empty".into()));
        }
        if x.len() != y.len() * input_len {
            return Err(TrainerError::Data(format!(
                "{} image values for {} labels; the model expects {} values per image",
                x.len(),
                y.len(),
                input_len
            )));
        }
        if let Some(classes) = classes
            && let Some(bad) = y
                .iter()
                .find(|&&l| !(l >= 0.0 && l.fract() == 0.0 && (l as usize) < classes))
        {
            return Err(TrainerError::Data(format!(
                "label {bad} is not a class in 0..{classes}"
            )));
        }
        if let Some(bad) = y.iter().find(|v| !v.is_finite()) {
            return Err(TrainerError::Data(format!("target {bad} is not finite")));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(TrainerError::Data("images contain NaN or infinity".into()));
        }
        Ok(Self {
            x,
            y,
            input_len,
            image: None,
        })
    }

    /// For a model whose input is token ids: refuse any value that is not a whole number in
    /// `0..limit`, which an embedding lookup would otherwise read out of bounds.
    pub fn with_ids_below(self, limit: Option<usize>) -> Result<Self> {
        if let Some(limit) = limit
            && let Some(bad) = self
                .x
                .iter()
                .find(|&&v| v < 0.0 || v.fract() != 0.0 || v as usize >= limit)
        {
            return Err(TrainerError::Data(format!(
                "token id {bad} is not a whole number in 0..{limit}"
            )));
        }
        Ok(self)
    }

    /// Marks the examples as images of this shape, when the model's input is one.
    pub fn with_image_shape(mut self, shape: &[usize], token_ids: bool) -> Self {
        if let [c, h, w] = *shape
            && !token_ids
        {
            self.image = Some([c, h, w]);
        }
        self
    }

    /// The examples and their labels, as held.
    pub fn content(&self) -> (&[f32], &[f32]) {
        (&self.x, &self.y)
    }

    pub fn image_shape(&self) -> Option<[usize; 3]> {
        self.image
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Index batches for one epoch: in order, or shuffled by `rng`.
    pub fn batches(&self, batch_size: usize, rng: Option<&mut StdRng>) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(rng) = rng {
            order.shuffle(rng);
        }
        order
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    pub fn batch<B: Backend>(
        &self,
        idx: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let (x, y, _) = self.augmented_batch(idx, device, None);
        (x, y)
    }

    /// The batch, each image transformed by `augment` drawing from `rng` (never the stored data).
    pub fn augmented_batch<B: Backend>(
        &self,
        idx: &[usize],
        device: &B::Device,
        augment: Option<(&Augment, &mut StdRng)>,
    ) -> Batch<B> {
        let len = self.input_len;
        let mut xs = Vec::with_capacity(idx.len() * len);
        for &i in idx {
            xs.extend_from_slice(&self.x[i * len..(i + 1) * len]);
        }
        let ys: Vec<f32> = idx.iter().map(|&i| self.y[i]).collect();
        let mut mixed = None;
        if let (Some((aug, rng)), Some(shape)) = (augment, self.image) {
            let mut scratch = Vec::with_capacity(len);
            for example in xs.chunks_mut(len) {
                aug.example(example, shape, rng, &mut scratch);
            }
            mixed = aug.mix(&mut xs, idx.len(), len, rng).map(|m| {
                let partner: Vec<f32> = m.partner.iter().map(|&p| ys[p]).collect();
                let partner = Tensor::from_data(TensorData::new(partner, [idx.len()]), device);
                (m.lambda, partner)
            });
        }
        (
            Tensor::from_data(TensorData::new(xs, [idx.len(), len]), device),
            Tensor::from_data(TensorData::new(ys, [idx.len()]), device),
            mixed,
        )
    }
}

pub fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A fresh shuffle seed from the platform's CSPRNG (`crypto.getRandomValues` on the web).
pub fn fresh_seed() -> u64 {
    let mut seed = [0u8; 8];
    getrandom_03::fill(&mut seed).expect("the platform has no random source");
    u64::from_le_bytes(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_must_be_whole_and_below_the_table() {
        let data = |x: Vec<f32>| Dataset::new(x, vec![0.0, 1.0], 2, Some(2)).unwrap();
        assert!(
            data(vec![0.0, 4.0, 3.0, 1.0])
                .with_ids_below(Some(5))
                .is_ok()
        );
        for bad in [5.0, 1.5, -1.0] {
            let err = data(vec![0.0, bad, 3.0, 1.0])
                .with_ids_below(Some(5))
                .err()
                .expect("refused");
            assert!(err.to_string().contains("0..5"), "{err}");
        }
        // Float inputs are not ids: nothing to check.
        assert!(data(vec![0.5, 7.0, 3.0, 1.0]).with_ids_below(None).is_ok());
    }

    #[test]
    fn labels_must_be_classes_and_targets_finite() {
        assert!(Dataset::new(vec![0.0; 2], vec![0.0, 2.0], 1, Some(2)).is_err());
        assert!(Dataset::new(vec![0.0; 2], vec![0.0, 0.5], 1, Some(2)).is_err());
        assert!(Dataset::new(vec![0.0; 2], vec![0.0, 7.25], 1, None).is_ok());
        assert!(Dataset::new(vec![0.0; 2], vec![0.0, f32::NAN], 1, None).is_err());
    }
}
