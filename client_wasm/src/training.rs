//! The local training loop (Burn's `train` feature has no wasm support), and evaluation.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::config::{Optimizer as OptimizerChoice, Order, TrainingConfig};
use crate::data::{Dataset, fresh_seed, seeded};
use crate::error::{Result, TrainerError};
use crate::model::Model;
use crate::params;
use crate::weights::values;

#[derive(Debug, Clone, Copy)]
pub struct TrainReport {
    pub loss: f64,
    pub steps: usize,
    pub examples: usize,
}

/// A pause the caller asks for between batches (on the web: a turn of the event loop).
pub type Pause = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Called after every batch with (epoch, batch, batches per epoch, loss). Returning a pause
/// lets a single-threaded host (a browser tab, a Web Worker, Node) run its event loop —
/// heartbeats, UI, cancellation — while a long job trains.
pub type OnBatch<'a> = dyn FnMut(usize, usize, usize, f64) -> Option<Pause> + 'a;

pub async fn train<B: AutodiffBackend>(
    model: Model<B>,
    data: &Dataset,
    input_shape: &[usize],
    config: &TrainingConfig,
    device: &B::Device,
    on_batch: &mut OnBatch<'_>,
) -> Result<(Model<B>, TrainReport)> {
    let decay = config.weight_decay;
    let wd = (decay > 0.0).then(|| WeightDecayConfig::new(decay as f32));
    match config.optimizer {
        OptimizerChoice::Adam => {
            // PyTorch's epsilon, so the two trainers agree.
            let optim = AdamConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(wd)
                .init();
            run(model, optim, data, input_shape, config, device, on_batch).await
        }
        OptimizerChoice::AdamW => {
            let decay = if decay > 0.0 { decay as f32 } else { 0.01 };
            let optim = AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(decay)
                .init();
            run(model, optim, data, input_shape, config, device, on_batch).await
        }
        OptimizerChoice::Sgd { momentum } => {
            let momentum = (momentum > 0.0).then_some(MomentumConfig {
                momentum,
                dampening: 0.0,
                nesterov: false,
            });
            let optim = SgdConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(wd)
                .init();
            run(model, optim, data, input_shape, config, device, on_batch).await
        }
    }
}

async fn run<B: AutodiffBackend, O: Optimizer<Model<B>, B>>(
    mut model: Model<B>,
    mut optim: O,
    data: &Dataset,
    input_shape: &[usize],
    config: &TrainingConfig,
    device: &B::Device,
    on_batch: &mut OnBatch<'_>,
) -> Result<(Model<B>, TrainReport)> {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let anchor = (config.proximal_mu > 0.0).then(|| model.clone());
    let mut rng = match config.order {
        Order::Fixed => None,
        Order::Shuffled(seed) => Some(seeded(seed)),
        Order::Random => Some(seeded(fresh_seed())),
    };
    let (mut total, mut steps, mut examples) = (0.0f64, 0usize, 0usize);
    for epoch in 0..config.epochs {
        let batches = data.batches(config.batch_size, rng.as_mut());
        let count = batches.len();
        for (b, idx) in batches.iter().enumerate() {
            let (x, y) = data.batch::<B>(idx, device);
            let mut loss = loss_fn.forward(model.forward(x, input_shape), y);
            if let Some(anchor) = &anchor {
                loss = loss + proximal(&model, anchor, device).mul_scalar(config.proximal_mu / 2.0);
            }
            // Reading the loss every step also yields to the event loop on the web.
            let value = values(loss.clone().detach()).await?[0] as f64;
            if !value.is_finite() {
                return Err(TrainerError::NonFinite(format!(
                    "loss became {value} in epoch {}, batch {} (try a lower learning rate)",
                    epoch + 1,
                    b + 1
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);
            total += value * idx.len() as f64;
            steps += 1;
            examples += idx.len();
            if let Some(pause) = on_batch(epoch, b, count, value) {
                pause.await;
            }
        }
    }
    Ok((
        model,
        TrainReport {
            loss: total / examples.max(1) as f64,
            steps,
            examples,
        },
    ))
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

#[derive(Debug, Clone, Copy)]
pub struct EvalReport {
    pub loss: f64,
    pub accuracy: f64,
    pub examples: usize,
}

/// Evaluation's batch size: big batches are fast, and inference keeps no autodiff graph.
pub const EVAL_BATCH: usize = 1000;

/// Mean cross-entropy and accuracy, in inference mode (dropout off, BatchNorm on running stats).
pub async fn evaluate<B: Backend>(
    model: &Model<B>,
    data: &Dataset,
    input_shape: &[usize],
    device: &B::Device,
) -> Result<EvalReport> {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for idx in data.batches(EVAL_BATCH, None) {
        let (x, y) = data.batch::<B>(&idx, device);
        let logits = model.forward(x, input_shape);
        let log_probs = burn::tensor::activation::log_softmax(logits.clone(), 1);
        let picked = log_probs.gather(1, y.clone().unsqueeze_dim(1));
        loss -= values(picked.sum()).await?[0] as f64;
        let hits = logits.argmax(1).squeeze_dim::<1>(1).equal(y).int().sum();
        correct += hits
            .into_data_async()
            .await
            .map_err(|e| TrainerError::Backend(format!("{e:?}")))?
            .iter::<i64>()
            .next()
            .unwrap_or(0) as usize;
    }
    Ok(EvalReport {
        loss: loss / data.len() as f64,
        accuracy: correct as f64 / data.len() as f64,
        examples: data.len(),
    })
}

/// Inference-mode copy of an autodiff model.
pub fn inference<B: AutodiffBackend>(model: &Model<B>) -> Model<B::InnerBackend> {
    model.valid()
}
