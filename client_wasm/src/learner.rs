//! `Learner`: what learns on this client. It holds one model on one backend and the global
//! weights that model started from, and answers the trainer's questions about them: train,
//! evaluate, the delta, the weights. Named after Burn's `burn-train` `Learner` (a model and how
//! it is trained), because "session" also named a protocol connection elsewhere in Pollen.
//! Backend-generic, so the CPU and WebGPU paths share it.

use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::{self, Checkpoint};
use crate::config::TrainingConfig;
use crate::data::Dataset;
use crate::encoding::{self, Encoding};
use crate::error::{Result, TrainerError};
use crate::evaluation::{self, EvalReport};
use crate::memory;
use crate::model::Model;
use crate::objective::label_range;
use crate::params;
use crate::precision::{LossScale, Precision};
use crate::privacy;
use crate::spec::ModelSpec;
use crate::training::{self, Checkpointing, OnBatch, Pause, TrainReport};
use crate::weights::{self, Named};

pub struct Learner<B: AutodiffBackend> {
    pub spec: ModelSpec,
    pub(crate) device: B::Device,
    /// Read losses back every this many steps: 1 on the CPU, where a read costs nothing; more on
    /// a GPU, where each read waits for the device (see `training::train`).
    pub read_every: usize,
    /// The device computes in f16 (WebGPU with `shader-f16`): `precision: "fp16"` jobs run in
    /// mixed precision; elsewhere they run in float32 and report so.
    pub half: bool,
    /// Mixed precision's loss scale, carried from job to job as PyTorch's `GradScaler` is.
    pub loss_scale: LossScale,
    /// Thin 2-d convolutions on the model's input run as matrix products (`conv_gemm::pays`):
    /// on WebGPU.
    conv_gemm: bool,
    model: Option<Model<B>>,
    global: Option<Named>,
}

/// What a caller asks of a job's checkpoints (see `checkpoint`).
pub struct Checkpoints<'a> {
    /// A checkpoint that an earlier run of this same job saved, to go on from.
    pub resume: Option<&'a [u8]>,
    /// Asked after each step but the last, with the steps done: take a checkpoint now?
    pub due: Box<dyn FnMut(usize) -> bool + 'a>,
    /// Takes each checkpoint; a pause it returns is awaited before training goes on.
    pub save: Box<dyn FnMut(Vec<u8>) -> Option<Pause> + 'a>,
}

pub struct DeltaOut {
    pub bytes: Vec<u8>,
    pub norm: f64,
    pub clipped: Option<bool>,
}

impl<B: AutodiffBackend> Learner<B> {
    pub fn new(spec: ModelSpec, device: B::Device) -> Result<Self> {
        memory::ensure(memory::model_bytes(&spec), "the model")?;
        let mut model = spec.init(&device);
        params::materialize(&mut model);
        Ok(Self {
            spec,
            device,
            read_every: 1,
            half: false,
            loss_scale: LossScale::default(),
            conv_gemm: false,
            model: Some(model),
            global: None,
        })
    }

    pub fn dataset(&self, x: Vec<f32>, y: Vec<f32>) -> Result<Dataset> {
        Dataset::new(
            x,
            y,
            self.spec.input_len(),
            label_range(&self.spec.loss, self.spec.num_classes),
        )?
        .with_ids_below(self.spec.max_id())
        .map(|data| data.with_image_shape(&self.spec.input_shape, self.spec.max_id().is_some()))
    }

    /// Runs the thin 2-d convolutions on the model's input as matrix products
    /// (`conv_gemm::pays`), now and after every reload of the weights.
    pub fn lower_convolutions(&mut self) {
        self.conv_gemm = true;
        if let Some(model) = self.model.as_mut() {
            model.lower_convolutions();
        }
    }

    /// A new model of this learner's spec, built as its models are.
    fn fresh(&self) -> Model<B> {
        let mut model = self.spec.init(&self.device);
        if self.conv_gemm {
            model.lower_convolutions();
        }
        model
    }

    pub(crate) fn model(&self) -> &Model<B> {
        self.model
            .as_ref()
            .expect("the model is only taken during training")
    }

    pub fn load(&mut self, bytes: &[u8]) -> Result<()> {
        let named = weights::decode(bytes, &self.spec)?;
        let fresh = self.fresh();
        self.model = Some(weights::load(fresh, &named, &self.device));
        self.global = Some(named);
        Ok(())
    }

    pub async fn train(
        &mut self,
        data: &Dataset,
        config: &TrainingConfig,
        on_batch: &mut OnBatch<'_>,
        checkpoints: Option<Checkpoints<'_>>,
    ) -> Result<TrainReport> {
        if self.global.is_none() {
            return Err(TrainerError::Weights(
                "load the global weights before training".into(),
            ));
        }
        if config.augment.is_on() && data.image_shape().is_none() {
            return Err(TrainerError::Config(format!(
                "augmentation is for image inputs [C, H, W]; this model's input is {:?}",
                self.spec.input_shape
            )));
        }
        let slots = config.optimizer.state_slots();
        let mut config = config.clone();
        if let Some(budget) = config.auto_batch.take() {
            config.batch_size = memory::largest_batch(&self.spec, slots, budget, data.len())?;
        }
        let config = &config;
        let batch = config.batch_size.min(data.len());
        let bytes = memory::training_bytes(&self.spec, batch, slots);
        let piece = memory::largest_tensor_bytes(&self.spec, batch);
        memory::reserve(bytes, piece, "a training step")?;
        let mut checkpoints = checkpoints
            .map(|c| self.checkpointing(data, config, c))
            .transpose()?;
        let model = self.model.take().expect("model present");
        let mixed = config.precision == Precision::Fp16 && self.half;
        let job = training::train(
            model,
            data,
            &self.spec,
            config,
            &self.device,
            on_batch,
            checkpoints.as_mut(),
            self.read_every,
            mixed.then_some(&mut self.loss_scale),
        );
        match job.await {
            Ok((model, report)) => {
                self.model = Some(model);
                Ok(report)
            }
            Err(e) => {
                // A failed run leaves the global weights in place, never a half-trained model.
                let global = self.global.as_ref().expect("checked above");
                self.model = Some(weights::load(self.fresh(), global, &self.device));
                Err(e)
            }
        }
    }

    /// The job's checkpointing, with `hooks.resume` checked to be a checkpoint of this very job.
    fn checkpointing<'a>(
        &self,
        data: &Dataset,
        config: &TrainingConfig,
        hooks: Checkpoints<'a>,
    ) -> Result<Checkpointing<'a>> {
        let fingerprint = checkpoint::fingerprint(&self.spec, config, data)?;
        let resume = match hooks.resume {
            None => None,
            Some(bytes) => {
                let at = Checkpoint::decode(bytes)?;
                if at.fingerprint != fingerprint {
                    return Err(TrainerError::Checkpoint(
                        "it is of another job (model, options or data differ)".into(),
                    ));
                }
                let weights = weights::decode(&at.weights, &self.spec)
                    .map_err(|e| TrainerError::Checkpoint(e.to_string()))?;
                Some((at, weights))
            }
        };
        Ok(Checkpointing {
            fingerprint,
            resume,
            due: hooks.due,
            save: hooks.save,
        })
    }

    pub async fn evaluate(&self, data: &Dataset) -> Result<EvalReport> {
        let batch = data.len().min(evaluation::EVAL_BATCH);
        memory::ensure(memory::inference_bytes(&self.spec, batch), "evaluation")?;
        evaluation::evaluate(
            &evaluation::inference(self.model()),
            data,
            &self.spec.loss,
            &self.device,
        )
        .await
    }

    /// trained − global, optionally clipped to `clip` and noised with std `noise_std`, sent in
    /// `encoding` (the norm is the float32 delta's, before encoding).
    pub async fn delta(
        &self,
        clip: Option<f64>,
        noise_std: Option<f64>,
        encoding: Encoding,
    ) -> Result<DeltaOut> {
        let global = self
            .global
            .as_ref()
            .ok_or_else(|| TrainerError::Weights("no global weights loaded".into()))?;
        let mut delta = weights::delta(&weights::read(self.model()).await?, global);
        let clipped = clip.map(|c| privacy::clip(&mut delta, c)).transpose()?;
        if let Some(std) = noise_std {
            privacy::add_gaussian(&mut delta, std)?;
        }
        let norm = weights::l2_norm(&delta);
        Ok(DeltaOut {
            bytes: encoding::encode(&delta, &self.spec.wire_tensors()?, encoding)?,
            norm,
            clipped,
        })
    }

    /// The current weights, as safetensors with PyTorch names.
    pub async fn weights(&self) -> Result<Vec<u8>> {
        weights::encode(&weights::read(self.model()).await?, &self.spec)
    }
}

/// Run a learner's future to its end where every read is ready at once, as on the CPU backend
/// (one poll finishes it): for native callers, tests and examples. Panics if it would wait, as a
/// WebGPU read does.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a CPU read waited"),
    }
}
