//! A training step's batch split over the CPU threads: each part's forward and backward pass
//! runs on its own thread, and the parts' gradients add up to the whole batch's.
//!
//! Burn's CPU backend already splits a large operation over its threads, but most of a small
//! model's operations are too small to split well: on two threads a mnist-cnn step ran 1.3-1.4×
//! its one-thread speed. The parts of a batch are independent work of equal size. A job resumed
//! from a checkpoint on another count of threads goes on with other parts, so it ends where the
//! uninterrupted job would within rounding, not bit for bit.
//!
//! Why the sum is exact: the step's loss is the batch mean, so with parts of sizes n_i out of n
//! it is Σ (n_i / n) · mean_i, and its gradient is the sum of the parts' gradients of those
//! scaled means. Each part trains a [`fork`](burn::module::Module::fork) of the model: the same
//! weights and parameter ids under fresh autodiff leaves, so the parts' graphs share no node
//! and Burn's autodiff runs their backward passes without one waiting on another's lock.
//!
//! It only holds for a model whose forward treats each example alone and draws nothing: the
//! spec's shape rules refuse a layer that mixes examples, except batch normalisation (batch
//! statistics), and dropout draws from the backend's one seeded generator, whose draws would
//! come in the threads' order. A model with either trains on the whole batch.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::layer_spec::LayerSpec;
use crate::model::Model;
use crate::spec::ModelSpec;

/// Some examples of a step's batch: inputs, targets, and the mixup partner's targets.
pub struct Part<B: AutodiffBackend> {
    pub x: Tensor<B, 2>,
    pub y: Tensor<B, 1>,
    pub mixed: Option<(f64, Tensor<B, 1>)>,
}

/// The least forward work a part is given, in multiply-adds: about one 192³ matrix product, the
/// size from which burn-flex splits a product over the threads by itself. Smaller parts lose
/// that, and the hand-overs cost more than the split saves. On a 16-core Xeon, mnist-mlp at
/// batch 128 (0.1 M an example) ran 73 k samples/s on 4 threads unsplit and 41 k in four parts
/// of 3.2 M; on this project's 2-core machine, parts of 1.6 M ran 0.85× as fast as none.
pub const MIN_PART_WORK: usize = 8_000_000;

/// The fewest examples a part is given: on the Xeon, mnist-cnn at batch 32 ran 568 samples/s on
/// 8 threads in parts of 4 and 380 on 16 in parts of 2.
pub const MIN_PART_EXAMPLES: usize = 4;

/// Past this much forward work a part, a batch splits into twice as many parts as threads, so
/// that a thread held up (the host's own threads share the cores) leaves a part to the other.
/// Measured under Node on two threads: mnist-cnn at batch 128 (390 M a part) ran 1.07× faster in
/// four parts than in two; at batch 32 (98 M) the same; at batch 10, and mnist-mlp at 128,
/// slower.
pub const BALANCE_PART_WORK: usize = 128_000_000;

/// How many parts a batch of `batch` examples splits into on `threads` threads: 1 (no split)
/// for a model with batch statistics or dropout, or where a part would be too little work.
pub fn parts(spec: &ModelSpec, batch: usize, threads: usize) -> usize {
    let alone = spec.nodes.iter().all(|n| match &n.layer {
        LayerSpec::Batchnorm1d(_) | LayerSpec::Batchnorm2d(_) => false,
        LayerSpec::Dropout { p } => *p == 0.0,
        LayerSpec::TransformerEncoderLayer(e) => e.dropout == 0.0,
        _ => true,
    });
    if !alone || threads < 2 {
        return 1;
    }
    let work = batch.saturating_mul(spec.multiply_adds());
    let parts = match work / BALANCE_PART_WORK >= 2 * threads {
        true => 2 * threads,
        false => threads.min(work / MIN_PART_WORK),
    };
    parts.min(batch / MIN_PART_EXAMPLES).max(1)
}

/// Whether a step of `batch` examples does parallel work: a split, or operations large enough
/// for burn-flex to split them itself (`MIN_PART_WORK`, as for a part).
pub fn parallel(spec: &ModelSpec, batch: usize, parts: usize) -> bool {
    parts > 1 || batch.saturating_mul(spec.multiply_adds()) >= MIN_PART_WORK
}

/// `step`, run on a pool thread when it does parallel work (`parallel`) and is called from
/// outside the pool (the host's thread): there its operations share the pool by work stealing,
/// and the host's thread waits once a step. Called from the host's thread, each parallel
/// operation would be handed to the pool and waited for on its own: mnist-mlp at batch 128 on
/// two threads under Node (no split) ran 59-83 k samples/s on the pool against 48-61 k. A step
/// without parallel work stays on the calling thread, which a hand-over would only slow down
/// (mnist-mlp at batch 32: 41-58 k on the pool against 47-67 k).
pub fn on_pool<R: Send>(parallel: bool, step: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    if parallel && rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
        return rayon::scope(|_| step());
    }
    #[cfg(not(feature = "threads"))]
    let _ = parallel;
    step()
}

/// The whole batch's mean loss (detached) and gradients, from `parts` parts trained at once.
///
/// `loss` gives a part's mean loss for a model; `extra`, if any, a term of the whole batch's
/// loss that depends on the weights alone (FedProx's proximal term), added once.
pub fn gradients<B, L, E>(
    model: &Model<B>,
    whole: Part<B>,
    parts: usize,
    loss: &L,
    extra: Option<&E>,
) -> (Tensor<B, 1>, GradientsParams)
where
    B: AutodiffBackend,
    L: Fn(&Model<B>, Part<B>) -> Tensor<B, 1> + Sync,
    E: Fn(&Model<B>) -> Tensor<B, 1> + Sync,
{
    if parts <= 1 {
        let mut whole_loss = loss(model, whole);
        if let Some(extra) = extra {
            whole_loss = whole_loss + extra(model);
        }
        let value = whole_loss.clone().detach();
        return (
            value,
            GradientsParams::from_grads(whole_loss.backward(), model),
        );
    }
    let n = whole.y.dims()[0];
    let device = whole.y.device();
    let jobs: Vec<_> = bounds(n, parts)
        .into_iter()
        .enumerate()
        .map(|(i, (start, len))| {
            let part = Part {
                x: whole.x.clone().narrow(0, start, len),
                y: whole.y.clone().narrow(0, start, len),
                mixed: whole
                    .mixed
                    .as_ref()
                    .map(|(l, p)| (*l, p.clone().narrow(0, start, len))),
            };
            (i, len as f64 / n as f64, model.clone().fork(&device), part)
        })
        .collect();
    let each = |(i, share, fork, part): (usize, f64, Model<B>, Part<B>)| {
        let mut part_loss = loss(&fork, part).mul_scalar(share);
        if let Some(extra) = extra.filter(|_| i == 0) {
            part_loss = part_loss + extra(&fork);
        }
        let value = part_loss.clone().detach();
        (
            value,
            GradientsParams::from_grads(part_loss.backward(), &fork),
        )
    };
    let done = run(jobs, each);
    let mut total: Option<Tensor<B, 1>> = None;
    let mut sum = GradientsAccumulator::<Model<B>>::new();
    for (value, grads) in done {
        total = Some(match total {
            Some(t) => t + value,
            None => value,
        });
        sum.accumulate(model, grads);
    }
    let total = total.expect("a batch has at least one part");
    (total, sum.grads())
}

/// The CPU threads a step may split over: rayon's pool, 1 without the threaded build.
pub fn threads() -> usize {
    #[cfg(feature = "threads")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "threads"))]
    1
}

/// `(start, len)` of `parts` runs of `n` rows, their sizes differing by at most one.
fn bounds(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, n.max(1));
    let (size, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = size + usize::from(i < extra);
            start += len;
            (start - len, len)
        })
        .collect()
}

/// Each job on its own rayon task (results in the jobs' order).
#[cfg(feature = "threads")]
fn run<J: Send, R: Send>(jobs: Vec<J>, each: impl Fn(J) -> R + Sync + Send) -> Vec<R> {
    use rayon::iter::{IntoParallelIterator, ParallelIterator};
    jobs.into_par_iter().map(each).collect()
}

/// Without threads, one job after another: the same sums, for the native tests.
#[cfg(not(feature = "threads"))]
fn run<J, R>(jobs: Vec<J>, each: impl Fn(J) -> R) -> Vec<R> {
    jobs.into_iter().map(each).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{objective, params};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    const SPEC: &str = r#"{"name": "split", "input_shape": [1, 8, 8], "num_classes": 4, "layers": [
      {"type": "conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": 1},
      {"type": "relu"},
      {"type": "maxpool2d", "kernel_size": 2},
      {"type": "flatten"},
      {"type": "dropout", "p": 0.0},
      {"type": "linear", "in_features": 48, "out_features": 5},
      {"type": "relu"},
      {"type": "linear", "in_features": 5, "out_features": 4}
    ]}"#;

    fn spec_with(extra: &str) -> ModelSpec {
        let json = SPEC.replacen(
            r#"{"type": "relu"},"#,
            &format!("{extra}{{\"type\": \"relu\"}},"),
            1,
        );
        ModelSpec::from_json(&json).unwrap()
    }

    fn batch(n: usize) -> Part<B> {
        let device = Default::default();
        let x: Vec<f32> = (0..n * 64)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let y: Vec<f32> = (0..n).map(|i| (i * 7 % 4) as f32).collect();
        let partner: Vec<f32> = (0..n).map(|i| (i * 3 % 4) as f32).collect();
        Part {
            x: Tensor::from_data(TensorData::new(x, [n, 64]), &device),
            y: Tensor::from_data(TensorData::new(y, [n]), &device),
            mixed: Some((
                0.7,
                Tensor::from_data(TensorData::new(partner, [n]), &device),
            )),
        }
    }

    fn read(t: Tensor<Flex, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn the_parts_gradients_add_up_to_the_whole_batchs() {
        let spec = ModelSpec::from_json(SPEC).unwrap();
        let device = Default::default();
        let mut model = spec.init::<B>(&device);
        let mut anchor = spec.init::<B>(&device);
        params::materialize(&mut model);
        params::materialize(&mut anchor);
        let loss = |m: &Model<B>, part: Part<B>| {
            let logits = m.forward(part.x);
            let (lambda, partner) = part.mixed.unwrap();
            objective::loss(&spec.loss, logits.clone(), part.y)
                .mul_scalar(lambda)
                .add(objective::loss(&spec.loss, logits, partner).mul_scalar(1.0 - lambda))
        };
        let proximal = |m: &Model<B>| {
            let (mut m, mut a) = (m.clone(), anchor.clone());
            let mut sum = Tensor::<B, 1>::zeros([1], &device);
            for ((_, w), (_, g)) in params::slots(&mut m).iter().zip(&params::slots(&mut a)) {
                sum = sum
                    + (w.trained().unwrap() - g.trained().unwrap().detach())
                        .powi_scalar(2)
                        .sum();
            }
            sum.mul_scalar(0.05)
        };
        let (whole_loss, whole) = gradients(&model, batch(13), 1, &loss, Some(&proximal));
        let (split_loss, split) = gradients(&model, batch(13), 3, &loss, Some(&proximal));
        let (a, b) = (read(whole_loss.inner())[0], read(split_loss.inner())[0]);
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "loss {a} vs {b}");
        let mut compared = 0;
        for (name, slot) in params::slots(&mut model) {
            let (a, b) = (
                slot.step_grad(&whole).unwrap(),
                slot.step_grad(&split).unwrap(),
            );
            for (a, b) in read(a).into_iter().zip(read(b)) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1e-2),
                    "{name}: {a} vs {b}"
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 3 * 9 + 3 + 48 * 5 + 5 + 5 * 4 + 4);
    }

    #[test]
    fn a_batch_splits_only_for_a_model_that_treats_each_example_alone() {
        let plain = ModelSpec::from_json(SPEC).unwrap();
        // 8·8·3·9 + 48·5 + 5·4 = 1,988 multiply-adds an example.
        assert_eq!(plain.multiply_adds(), 1_988);
        let two = (2 * MIN_PART_WORK).div_ceil(1_988);
        assert_eq!(parts(&plain, two, 2), 2);
        assert_eq!(parts(&plain, two, 1), 1);
        assert_eq!(parts(&plain, two - 1, 2), 1, "a part of too little work");
        assert_eq!(parts(&plain, (3 * MIN_PART_WORK).div_ceil(1_988), 8), 3);
        let cnn = ModelSpec::from_json(include_str!("../../protocol/models/mnist-cnn.json"));
        let cnn = cnn.unwrap();
        // 12.27 M multiply-adds an example: two parts from batch 8 (four examples a part), four
        // on two threads from batch 42 (128 M a part); on 16 threads, batch 32 makes eight.
        let cnn_parts = |batch, threads| parts(&cnn, batch, threads);
        assert_eq!(
            (cnn_parts(7, 2), cnn_parts(8, 2), cnn_parts(12, 8)),
            (1, 2, 3)
        );
        assert_eq!(
            (cnn_parts(41, 2), cnn_parts(42, 2), cnn_parts(32, 16)),
            (2, 4, 8)
        );
        let norm = spec_with(r#"{"type": "batchnorm2d", "num_features": 3},"#);
        assert_eq!(parts(&norm, two, 2), 1, "batch statistics");
        let drop = spec_with(r#"{"type": "dropout", "p": 0.2},"#);
        assert_eq!(parts(&drop, two, 2), 1, "dropout draws");
    }

    #[test]
    fn bounds_cover_the_batch_in_nearly_equal_runs() {
        assert_eq!(bounds(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(bounds(32, 2), vec![(0, 16), (16, 16)]);
        assert_eq!(bounds(3, 8), vec![(0, 1), (1, 1), (2, 1)]);
    }
}
