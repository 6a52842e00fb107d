//! The local training loop (Burn's `train` feature has no wasm support); evaluation is `evaluation`.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, Optimizer, RmsPropConfig, SgdConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use burn::optim::adaptor::OptimizerAdaptor;

use crate::batch_split::{self, Part};
use crate::checkpoint::Checkpoint;
use crate::config::{Optimizer as OptimizerChoice, Order, TrainingConfig};
use crate::data::{Dataset, fresh_seed, seeded};
use crate::error::{Result, TrainerError};
use crate::model::Model;
use crate::objective;
use crate::optim_state::{self, StateParts};
use crate::params;
use crate::precision::{self, LossScale, Precision};
use crate::spec::ModelSpec;
use crate::weights::{self, Named, values};

#[derive(Debug, Clone, Copy)]
pub struct TrainReport {
    pub loss: f64,
    pub steps: usize,
    pub examples: usize,
    /// The batch size trained with (what `"auto"` picked).
    pub batch_size: usize,
    /// The parts a full batch's step splits into over the CPU threads (1: not split; see
    /// `batch_split`).
    pub batch_parts: usize,
    /// The arithmetic the job ran in: fp16 only where asked for and the device has it.
    pub precision: Precision,
    /// Mixed precision's steps whose scaled gradients overflowed (zeroed; see `precision`).
    pub overflow_steps: usize,
}

/// A pause the caller asks for between batches (on the web: a turn of the event loop).
pub type Pause = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Called after every batch with (epoch, batch, batches per epoch, loss). Returning a pause
/// lets a single-threaded host (a browser tab, a Web Worker, Node) run its event loop —
/// heartbeats, UI, cancellation — while a long job trains.
pub type OnBatch<'a> = dyn FnMut(usize, usize, usize, f64) -> Option<Pause> + 'a;

/// How a job checkpoints (see `checkpoint`): what it resumes from, and when and where it saves.
pub struct Checkpointing<'a> {
    /// The job's fingerprint, written into every checkpoint.
    pub fingerprint: u64,
    /// A checkpoint of this very job (its fingerprint checked), and its weights decoded.
    pub resume: Option<(Checkpoint, Named)>,
    /// Asked after every step but a job's last, with the steps done: take a checkpoint now?
    pub due: Box<dyn FnMut(usize) -> bool + 'a>,
    /// Takes each checkpoint's bytes; a pause it returns is awaited before training goes on.
    pub save: Box<dyn FnMut(Vec<u8>) -> Option<Pause> + 'a>,
}

/// `read_every`: read the losses back (and report batches) every this many steps, at the latest.
/// `scale`: train in mixed precision with this loss scale (see `precision`); `None`: float32.
#[allow(clippy::too_many_arguments)]
pub async fn train<B: AutodiffBackend>(
    model: Model<B>,
    data: &Dataset,
    spec: &ModelSpec,
    config: &TrainingConfig,
    device: &B::Device,
    on_batch: &mut OnBatch<'_>,
    checkpoints: Option<&mut Checkpointing<'_>>,
    read_every: usize,
    scale: Option<&mut LossScale>,
) -> Result<(Model<B>, TrainReport)> {
    let job = Job {
        data,
        spec,
        config,
        device,
        read_every: read_every.max(1),
        // Once per job: it walks the spec, too much for every step of a small model.
        parts: batch_split::parts(
            spec,
            config.batch_size.min(data.len()),
            batch_split::threads(),
        ),
        scale: std::cell::RefCell::new(scale),
    };
    // L2 decay added to the gradient, as torch.optim's SGD, Adam and RMSprop apply it.
    let l2 = config
        .weight_decay
        .filter(|&d| d > 0.0)
        .map(|d| WeightDecayConfig::new(d as f32));
    match config.optimizer {
        OptimizerChoice::Adam => {
            // PyTorch's epsilon, so the two trainers agree.
            let optim = AdamConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(l2)
                .init();
            job.run(model, optim, on_batch, checkpoints).await
        }
        OptimizerChoice::AdamW => {
            let optim = AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(config.weight_decay.unwrap_or(0.01) as f32)
                .init();
            job.run(model, optim, on_batch, checkpoints).await
        }
        OptimizerChoice::Sgd { momentum, nesterov } => {
            let momentum = (momentum > 0.0).then_some(MomentumConfig {
                momentum,
                dampening: 0.0,
                nesterov,
            });
            let optim = SgdConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(l2)
                .init();
            job.run(model, optim, on_batch, checkpoints).await
        }
        OptimizerChoice::RmsProp { momentum } => {
            let optim = RmsPropConfig::new()
                .with_alpha(0.99)
                .with_epsilon(1e-8)
                .with_momentum(momentum as f32)
                .with_weight_decay(l2)
                .init();
            job.run(model, optim, on_batch, checkpoints).await
        }
    }
}

/// One local training job: what it trains on, and how.
struct Job<'a, B: Backend> {
    data: &'a Dataset,
    spec: &'a ModelSpec,
    config: &'a TrainingConfig,
    device: &'a B::Device,
    /// Read the losses back every this many steps (at the latest).
    read_every: usize,
    /// The parts a full batch's step splits into (`batch_split`).
    parts: usize,
    /// Mixed precision's loss scale (`None`: float32), updated as overflow flags are read.
    scale: std::cell::RefCell<Option<&'a mut LossScale>>,
}

impl<B: AutodiffBackend> Job<'_, B> {
    async fn run<O: StateParts<B::InnerBackend>>(
        &self,
        mut model: Model<B>,
        mut optim: OptimizerAdaptor<O, Model<B>, B>,
        on_batch: &mut OnBatch<'_>,
        mut checkpoints: Option<&mut Checkpointing<'_>>,
    ) -> Result<(Model<B>, TrainReport)> {
        let (data, config, device) = (self.data, self.config, self.device);
        // FedProx's anchor is the global model, also for a resumed job.
        let anchor = (config.proximal_mu > 0.0).then(|| model.clone());
        // Every draw (shuffle, augmentation, dropout) comes from the job's seed by epoch or step,
        // so a job resumed from a checkpoint draws what it would have drawn.
        let mut seed = match config.order {
            Order::Shuffled(seed) => seed,
            Order::Fixed | Order::Random => fresh_seed(),
        };
        let (mut total, mut steps, mut examples) = (0.0f64, 0usize, 0usize);
        let (mut first_epoch, mut skip) = (0, 0);
        if let Some((at, weights)) = checkpoints.as_mut().and_then(|c| c.resume.take()) {
            model = weights::load(model, &weights, device);
            optim = optim_state::restore(optim, &model, &at.optimizer, device)?;
            (seed, first_epoch, skip) = (at.seed, at.epoch, at.batch);
            (total, steps, examples) = (at.total, at.steps, at.examples);
        }
        let all_steps = config.epochs * data.len().div_ceil(config.batch_size.max(1));
        // Losses not yet read back: a read waits for the device, so WebGPU reads every few steps
        // (`read_every`) while the GPU keeps working, and reports those batches then, in order.
        let mut unread: Vec<Unread<B>> = Vec::new();
        let mut overflow_steps = 0;
        for epoch in first_epoch..config.epochs {
            let mut order = (config.order != Order::Fixed).then(|| seeded(mix(seed, epoch)));
            let batches = data.batches(config.batch_size, order.as_mut());
            let count = batches.len();
            for (batch, idx) in batches.iter().enumerate().skip(std::mem::take(&mut skip)) {
                B::seed(device, mix(seed ^ DROPOUT_STREAM, steps));
                let mut augment_rng = config
                    .augment
                    .is_on()
                    .then(|| seeded(mix(seed ^ AUGMENT_STREAM, steps)));
                let augment = augment_rng.as_mut().map(|rng| (&config.augment, rng));
                let at = (steps, all_steps);
                let (stepped, loss, overflow) = self
                    .step(model, &mut optim, idx, augment, anchor.as_ref(), at)
                    .await?;
                model = stepped;
                unread.push(Unread {
                    epoch,
                    batch,
                    count,
                    size: idx.len(),
                    loss,
                    overflow,
                });
                steps += 1;
                examples += idx.len();
                let due = steps < all_steps && checkpoints.as_mut().is_some_and(|c| (c.due)(steps));
                let unsettled = self.scale.borrow().as_ref().is_some_and(|s| s.unsettled);
                if due || unread.len() >= self.read_every || steps == all_steps || unsettled {
                    let (sum, overflowed) = report(std::mem::take(&mut unread), on_batch).await?;
                    total += sum;
                    if let Some(scale) = self.scale.borrow_mut().as_mut() {
                        overflow_steps += overflowed.iter().filter(|&&o| o).count();
                        scale.after(&overflowed);
                    }
                }
                if let Some(c) = checkpoints.as_mut().filter(|_| due) {
                    let (epoch, batch) = if batch + 1 == count {
                        (epoch + 1, 0)
                    } else {
                        (epoch, batch + 1)
                    };
                    let at = Checkpoint {
                        fingerprint: c.fingerprint,
                        seed,
                        epoch,
                        batch,
                        steps,
                        examples,
                        total,
                        weights: weights::encode(&weights::read(&model).await?, self.spec)?,
                        optimizer: optim_state::save(&optim, &model).await?,
                    };
                    if let Some(pause) = (c.save)(at.encode()) {
                        pause.await;
                    }
                }
            }
        }
        Ok((
            model,
            TrainReport {
                loss: total / examples.max(1) as f64,
                steps,
                examples,
                batch_size: config.batch_size,
                batch_parts: self.parts,
                precision: match self.scale.borrow().is_some() {
                    true => Precision::Fp16,
                    false => Precision::Fp32,
                },
                overflow_steps,
            },
        ))
    }

    /// One optimizer step on the batch `idx` at step `at.0` of `at.1`: the stepped model, its loss,
    /// not yet read, and under mixed precision whether its gradients overflowed (1 or 0, not yet
    /// read either).
    ///
    /// The model is taken, not borrowed, so that the optimizer holds its weights' only reference
    /// and burn-flex updates them in place: with a copy kept for the caller, SGD's `w - lr·g`
    /// wrote each weight into a fresh buffer, 5% of a mnist-cnn step at batch 10 on one thread.
    async fn step<O: StateParts<B::InnerBackend>>(
        &self,
        mut model: Model<B>,
        optim: &mut OptimizerAdaptor<O, Model<B>, B>,
        idx: &[usize],
        augment: Option<(&crate::augment::Augment, &mut rand::rngs::StdRng)>,
        anchor: Option<&Model<B>>,
        (steps, all_steps): (usize, usize),
    ) -> Result<(Model<B>, Tensor<B, 1>, Option<Tensor<B::InnerBackend, 1>>)> {
        let (config, device, goal) = (self.config, self.device, &self.spec.loss);
        let (x, y, mixed) = self.data.augmented_batch::<B>(idx, device, augment);
        let scale = self.scale.borrow().as_ref().map(|s| s.scale);
        let loss = |model: &Model<B>, part: Part<B>| {
            let logits = match scale {
                Some(_) => precision::half(model).forward(part.x),
                None => model.forward(part.x),
            };
            let loss = match part.mixed {
                None => objective::loss(goal, logits, part.y),
                Some((lambda, partner)) => objective::loss(goal, logits.clone(), part.y)
                    .mul_scalar(lambda)
                    .add(objective::loss(goal, logits, partner).mul_scalar(1.0 - lambda)),
            };
            match scale {
                Some(s) => loss.mul_scalar(s),
                None => loss,
            }
        };
        let proximal = |model: &Model<B>| {
            let anchor = anchor.expect("a proximal term has an anchor");
            let mu = config.proximal_mu * f64::from(scale.unwrap_or(1.0));
            proximal(model, anchor, device).mul_scalar(mu / 2.0)
        };
        let parts = match idx.len() == config.batch_size.min(self.data.len()) {
            true => self.parts,
            false => batch_split::parts(self.spec, idx.len(), batch_split::threads()),
        };
        let parallel = batch_split::parallel(self.spec, idx.len(), parts);
        let (mut value, mut grads) = batch_split::on_pool(parallel, || {
            batch_split::gradients(
                &model,
                Part { x, y, mixed },
                parts,
                &loss,
                anchor.is_some().then_some(&proximal),
            )
        });
        let overflow = match scale {
            Some(s) => {
                value = value.div_scalar(s);
                params::unscale_grads(&mut model, &mut grads, s)
            }
            None => None,
        };
        if let Some(max_norm) = config.grad_clip_norm {
            params::clip_grad_norm(&mut model, &mut grads, max_norm);
        }
        let lr = config.schedule.lr(config.lr, steps, all_steps);
        Ok((optim.step(lr, model, grads), value, overflow))
    }
}

/// A step whose loss is still on the device.
struct Unread<B: AutodiffBackend> {
    epoch: usize,
    batch: usize,
    count: usize,
    size: usize,
    loss: Tensor<B, 1>,
    overflow: Option<Tensor<B::InnerBackend, 1>>,
}

/// Read the steps' losses (and overflow flags) back in one read, report each batch in order, and
/// return their sum weighted by batch size, and which steps overflowed; a loss that is not finite
/// ends the job, naming its batch.
async fn report<B: AutodiffBackend>(
    unread: Vec<Unread<B>>,
    on_batch: &mut OnBatch<'_>,
) -> Result<(f64, Vec<bool>)> {
    if unread.is_empty() {
        return Ok((0.0, Vec::new()));
    }
    let flags: Vec<_> = unread.iter().filter_map(|u| u.overflow.clone()).collect();
    let mut read = unread
        .iter()
        .map(|u| u.loss.clone().inner())
        .collect::<Vec<_>>();
    read.extend(flags);
    let read = values(Tensor::cat(read, 0)).await?;
    let (losses, flags) = read.split_at(unread.len());
    let overflowed = flags.iter().map(|&f| f != 0.0).collect();
    let mut total = 0.0;
    // Reading also yields to the event loop on the web.
    for (u, &value) in unread.iter().zip(losses) {
        let value = f64::from(value);
        if !value.is_finite() {
            return Err(TrainerError::NonFinite(format!(
                "loss became {value} in epoch {}, batch {} (try a lower learning rate)",
                u.epoch + 1,
                u.batch + 1
            )));
        }
        total += value * u.size as f64;
        if let Some(pause) = on_batch(u.epoch, u.batch, u.count, value) {
            pause.await;
        }
    }
    Ok((total, overflowed))
}

/// A seed for one epoch or step of a job: SplitMix64's finaliser over seed and index, so
/// neighbouring indices give unrelated streams.
fn mix(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FedProx's ‖w − w_global‖², summed over every trained parameter.
fn proximal<B: Backend>(model: &Model<B>, anchor: &Model<B>, device: &B::Device) -> Tensor<B, 1> {
    let (mut model, mut anchor) = (model.clone(), anchor.clone());
    let mut sum = Tensor::<B, 1>::zeros([1], device);
    for ((_, w), (_, g)) in params::slots(&mut model)
        .iter()
        .zip(&params::slots(&mut anchor))
    {
        if let (Some(w), Some(g)) = (w.trained(), g.trained()) {
            sum = sum + (w - g.detach()).powi_scalar(2).sum();
        }
    }
    sum
}

/// XORed into a job's seed for its augmentation and dropout streams.
const AUGMENT_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;
const DROPOUT_STREAM: u64 = 0x6a09_e667_f3bc_c908;
