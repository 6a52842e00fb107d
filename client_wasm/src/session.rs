//! One trainer on one backend: the model, the global weights it started from, and the
//! operations the JS API exposes. Backend-generic, so the CPU and WebGPU paths share it.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use crate::data::Dataset;
use crate::error::{Result, TrainerError};
use crate::memory;
use crate::model::{Layer, Model};
use crate::noise;
use crate::spec::ModelSpec;
use crate::training::{self, EvalReport, OnBatch, TrainOptions, TrainReport};
use crate::weights::{self, Named, values};

pub struct Session<B: AutodiffBackend> {
    pub spec: ModelSpec,
    device: B::Device,
    model: Option<Model<B>>,
    global: Option<Named>,
}

pub struct DeltaOut {
    pub bytes: Vec<u8>,
    pub norm: f64,
    pub clipped: Option<bool>,
}

impl<B: AutodiffBackend> Session<B> {
    pub fn new(spec: ModelSpec, device: B::Device) -> Result<Self> {
        memory::ensure(memory::model_bytes(&spec), "the model")?;
        let model = Model::new(&spec, &device);
        Ok(Self {
            spec,
            device,
            model: Some(model),
            global: None,
        })
    }

    pub fn dataset(&self, x: Vec<f32>, y: Vec<i32>) -> Result<Dataset> {
        Dataset::new(x, y, self.spec.input_len(), self.spec.num_classes)
    }

    fn model(&self) -> &Model<B> {
        self.model
            .as_ref()
            .expect("the model is only taken during training")
    }

    pub fn load(&mut self, bytes: &[u8]) -> Result<()> {
        let named = weights::decode(bytes, &self.spec)?;
        let fresh = Model::new(&self.spec, &self.device);
        self.model = Some(weights::load(fresh, &named, &self.device));
        self.global = Some(named);
        Ok(())
    }

    pub async fn train(
        &mut self,
        data: &Dataset,
        options: &TrainOptions,
        on_batch: &mut OnBatch<'_>,
    ) -> Result<TrainReport> {
        if self.global.is_none() {
            return Err(TrainerError::Weights(
                "load the global weights before training".into(),
            ));
        }
        let slots = match options.optimizer.as_str() {
            "adam" | "adamw" => 2,
            _ => u64::from(options.momentum > 0.0),
        };
        let bytes = memory::training_bytes(&self.spec, options.batch_size.min(data.len()), slots);
        memory::ensure(bytes, "a training step")?;
        let model = self.model.take().expect("model present");
        match training::train(
            model,
            data,
            &self.spec.input_shape,
            options,
            &self.device,
            on_batch,
        )
        .await
        {
            Ok((model, report)) => {
                self.model = Some(model);
                Ok(report)
            }
            Err(e) => {
                // A failed run leaves the global weights in place, never a half-trained model.
                let global = self.global.as_ref().expect("checked above");
                self.model = Some(weights::load(
                    Model::new(&self.spec, &self.device),
                    global,
                    &self.device,
                ));
                Err(e)
            }
        }
    }

    pub async fn evaluate(&self, data: &Dataset) -> Result<EvalReport> {
        let batch = data.len().min(training::EVAL_BATCH);
        memory::ensure(memory::inference_bytes(&self.spec, batch), "evaluation")?;
        training::evaluate(
            &training::inference(self.model()),
            data,
            &self.spec.input_shape,
            &self.device,
        )
        .await
    }

    /// trained − global, optionally clipped to `clip` and noised with std `noise_std`.
    pub async fn delta(&self, clip: Option<f64>, noise_std: Option<f64>) -> Result<DeltaOut> {
        let global = self
            .global
            .as_ref()
            .ok_or_else(|| TrainerError::Weights("no global weights loaded".into()))?;
        let mut delta = noise::delta(&weights::read(self.model()).await?, global);
        let clipped = clip.map(|c| noise::clip(&mut delta, c)).transpose()?;
        if let Some(std) = noise_std {
            noise::add_gaussian(&mut delta, std)?;
        }
        let norm = noise::l2_norm(&delta);
        Ok(DeltaOut {
            bytes: weights::encode(&delta, &self.spec)?,
            norm,
            clipped,
        })
    }

    /// The current weights, as safetensors with PyTorch names.
    pub async fn weights(&self) -> Result<Vec<u8>> {
        weights::encode(&weights::read(self.model()).await?, &self.spec)
    }

    /// Logits for `x`, in training mode (`train`) or inference mode.
    pub async fn forward(&self, x: Vec<f32>, train: bool) -> Result<Vec<f32>> {
        let n = x.len() / self.spec.input_len().max(1);
        if n == 0 || x.len() != n * self.spec.input_len() {
            return Err(TrainerError::Data(format!(
                "{} values is not a whole number of inputs",
                x.len()
            )));
        }
        memory::ensure(memory::inference_bytes(&self.spec, n), "the forward pass")?;
        let shape = [n, self.spec.input_len()];
        if train {
            let t = Tensor::<B, 2>::from_data(TensorData::new(x, shape), &self.device);
            values(self.model().forward(t, &self.spec.input_shape)).await
        } else {
            let inner = training::inference(self.model());
            let t = Tensor::from_data(TensorData::new(x, shape), &self.device);
            values(inner.forward(t, &self.spec.input_shape)).await
        }
    }

    /// Gradients of the mean cross-entropy over all of `data`, named like PyTorch's `.grad`.
    pub async fn gradients(&self, data: &Dataset) -> Result<Vec<u8>> {
        memory::ensure(
            memory::training_bytes(&self.spec, data.len(), 0),
            "the gradients",
        )?;
        let idx: Vec<usize> = (0..data.len()).collect();
        let (x, y) = data.batch::<B>(&idx, &self.device);
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&self.device);
        let grads = loss_fn
            .forward(self.model().forward(x, &self.spec.input_shape), y)
            .backward();
        let mut out = Named::new();
        for (i, layer) in self.model().layers.iter().enumerate() {
            let name = |p: &str| format!("layers.{i}.{p}");
            macro_rules! grad {
                ($param:expr) => {
                    values(
                        $param
                            .grad(&grads)
                            .ok_or_else(|| TrainerError::Backend("missing gradient".into()))?,
                    )
                    .await?
                };
            }
            match layer {
                Layer::Linear(l) => {
                    let g = l
                        .weight
                        .grad(&grads)
                        .ok_or_else(|| TrainerError::Backend("missing gradient".into()))?;
                    out.insert(name("weight"), values(g.transpose()).await?);
                    if let Some(b) = &l.bias {
                        out.insert(name("bias"), grad!(b));
                    }
                }
                Layer::Conv2d(c) => {
                    out.insert(name("weight"), grad!(c.weight));
                    if let Some(b) = &c.bias {
                        out.insert(name("bias"), grad!(b));
                    }
                }
                Layer::BatchNorm(bn) => {
                    out.insert(name("weight"), grad!(bn.gamma));
                    out.insert(name("bias"), grad!(bn.beta));
                }
                _ => {}
            }
        }
        weights::encode(&out, &self.spec)
    }
}
