//! Memory asked for before the work that needs it. A failed allocation aborts a wasm module
//! (`panic = "abort"`, and std's allocation-error handler aborts anyway), so the trainer
//! estimates what a step will need, reserves it from the allocator, and gives it back: on
//! wasm that grows linear memory ahead of time, and a runtime that refuses becomes a
//! `TrainerError::Memory` that JavaScript can catch, with the module still alive.

use crate::error::{Result, TrainerError};
use crate::layer_spec::LayerSpec;
use crate::spec::ModelSpec;

/// A wasm32 module addresses at most 4 GiB (64-bit hosts: 256 TiB); nothing beyond can be reserved.
const ADDRESSABLE: u64 = if usize::BITS < 48 {
    1 << usize::BITS
} else {
    1 << 48
};
/// Reserved in pieces: one wasm32 allocation cannot exceed isize::MAX (2 GiB).
const PIECE: u64 = 64 << 20;

/// Make sure `bytes` can be allocated; `what` names the work in the error.
pub fn ensure(bytes: u64, what: &str) -> Result<()> {
    reserve(bytes, PIECE, what)
}

/// Make sure `bytes` can be allocated in pieces of `piece` bytes (1 MiB to `PIECE`); `what`
/// names the work in the error.
///
/// A training step's memory is many allocations, the largest of them one tensor, so its
/// reservation is made in pieces of that size (`largest_tensor_bytes`). Reserved as one block,
/// it needed that much contiguous free memory, which the heap a previous job leaves (the
/// weights and the delta it keeps lie between freed blocks) did not have: the second job of a
/// session grew linear memory by its whole estimate again (mnist-cnn at batch 32 under Node:
/// 84.9 MiB after the first job, 142.8 MiB after the second, level after that).
pub fn reserve(bytes: u64, piece: u64, what: &str) -> Result<()> {
    let piece = piece.clamp(1 << 20, PIECE);
    let refuse = || {
        TrainerError::Memory(format!(
            "{what} needs about {} MB, more than this runtime will give the trainer",
            bytes.div_ceil(1 << 20)
        ))
    };
    if bytes >= ADDRESSABLE {
        return Err(refuse());
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece);
        let mut piece = Vec::new();
        piece.try_reserve_exact(n as usize).map_err(|_| refuse())?;
        held.push(piece);
        left -= n;
    }
    Ok(())
}

fn f32s(n: u64) -> u64 {
    n * 4
}

/// The model's weights, its global copy and the conversions between them.
pub fn model_bytes(spec: &ModelSpec) -> u64 {
    f32s(spec.parameter_count() as u64) * 3
}

/// One training step at `batch` examples: weights, gradients, optimizer state (`slots` per
/// parameter: 1 for momentum, 2 for Adam), the global copy, and the activations autodiff keeps
/// (each layer's output, its gradient and a temporary).
pub fn training_bytes(spec: &ModelSpec, batch: usize, slots: u64) -> u64 {
    let params = f32s(spec.parameter_count() as u64);
    let activations = f32s((spec.activation_len() * batch) as u64);
    params * (4 + slots) + activations * 3
}

/// The most bytes one tensor of a training step at `batch` examples holds: the largest layer
/// output (or, inside an encoder layer, its attention scores or feed-forward hidden layer) at
/// that batch, or the largest parameter.
pub fn largest_tensor_bytes(spec: &ModelSpec, batch: usize) -> u64 {
    let Ok(walk) = spec.walk() else { return PIECE };
    let per_example = spec.nodes.iter().zip(&walk.outputs).map(|(node, out)| {
        let values = out.iter().product::<usize>();
        match (&node.layer, out.as_slice()) {
            (LayerSpec::TransformerEncoderLayer(e), [t, _]) => {
                values.max(e.nhead * t * t).max(t * e.dim_feedforward)
            }
            _ => values,
        }
    });
    let activations = per_example.max().unwrap_or(0).saturating_mul(batch);
    let params = walk
        .params
        .iter()
        .map(|p| p.shape.iter().product::<usize>());
    f32s(activations.max(params.max().unwrap_or(0)) as u64)
}

/// The largest batch, a power of two up to `MAX_AUTO_BATCH`, whose training step (`training_bytes`
/// with the model's own `model_bytes`) fits `budget`; never more than the data's `examples`.
pub fn largest_batch(spec: &ModelSpec, slots: u64, budget: u64, examples: usize) -> Result<usize> {
    let fits =
        |b: usize| model_bytes(spec) + training_bytes(spec, b.min(examples), slots) <= budget;
    if !fits(1) {
        return Err(TrainerError::Memory(format!(
            "a training step of this model needs about {} MB even at batch size 1, over the budget of {} MB",
            (model_bytes(spec) + training_bytes(spec, 1, slots)).div_ceil(1 << 20),
            budget >> 20
        )));
    }
    let mut batch = 1;
    while batch < MAX_AUTO_BATCH && batch < examples && fits(batch * 2) {
        batch *= 2;
    }
    Ok(batch.min(examples))
}

/// The largest batch `batchSize: "auto"` picks: past it, a local epoch makes too few steps to learn much.
pub const MAX_AUTO_BATCH: usize = 256;

/// One inference pass at `batch` examples.
pub fn inference_bytes(spec: &ModelSpec, batch: usize) -> u64 {
    f32s(spec.parameter_count() as u64) + f32s((spec.activation_len() * batch) as u64) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_batch_is_the_largest_power_of_two_in_the_budget() {
        let spec =
            ModelSpec::from_json(include_str!("../../protocol/models/mnist-cnn.json")).unwrap();
        let step = |b| model_bytes(&spec) + training_bytes(&spec, b, 2);
        assert_eq!(largest_batch(&spec, 2, step(64), 10_000), Ok(64));
        assert_eq!(largest_batch(&spec, 2, step(64) - 1, 10_000), Ok(32));
        assert_eq!(
            largest_batch(&spec, 2, u64::MAX, 10_000),
            Ok(MAX_AUTO_BATCH)
        );
        assert_eq!(
            largest_batch(&spec, 2, u64::MAX, 40),
            Ok(40),
            "never past the data"
        );
        let err = largest_batch(&spec, 2, step(1) - 1, 100).unwrap_err();
        assert!(err.to_string().contains("even at batch size 1"), "{err}");
    }

    /// `protocol/vectors/auto-batch.json`, which the Python client's `step_memory` runs too.
    #[test]
    fn the_shared_vectors_pick_the_same_batches() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../protocol/vectors/auto-batch.json")).unwrap();
        let spec = |name: &str| {
            let text = match name {
                "mnist-mlp" => include_str!("../../protocol/models/mnist-mlp.json"),
                "mnist-2nn" => include_str!("../../protocol/models/mnist-2nn.json"),
                "mnist-cnn" => include_str!("../../protocol/models/mnist-cnn.json"),
                "mnist-cnn-bn" => include_str!("../../protocol/models/mnist-cnn-bn.json"),
                "mnist-vit" => include_str!("../../protocol/models/mnist-vit.json"),
                other => panic!("no built-in model {other}"),
            };
            ModelSpec::from_json(text).unwrap()
        };
        for (name, expected) in vectors["models"].as_object().unwrap() {
            let spec = spec(name);
            assert_eq!(
                spec.parameter_count() as u64,
                expected["parameters"],
                "{name}"
            );
            assert_eq!(
                spec.activation_len() as u64,
                expected["activation_len"],
                "{name}"
            );
        }
        let cases = vectors["cases"].as_array().unwrap();
        assert!(cases.len() > 100);
        for case in cases {
            let spec = spec(case["model"].as_str().unwrap());
            let budget = (case["budget_mb"].as_f64().unwrap() * (1u64 << 20) as f64) as u64;
            let examples = case["examples"].as_u64().unwrap() as usize;
            let got = largest_batch(&spec, case["slots"].as_u64().unwrap(), budget, examples);
            match (&got, case.get("batch"), case.get("error")) {
                (Ok(batch), Some(want), None) => assert_eq!(*batch as u64, *want, "{case}"),
                (Err(err), None, Some(want)) => {
                    assert!(
                        err.to_string().contains(want.as_str().unwrap()),
                        "{case}: {err}"
                    )
                }
                _ => panic!("{case}: got {got:?}"),
            }
        }
    }

    #[test]
    fn small_reservations_succeed() {
        assert_eq!(ensure(200 << 20, "this"), Ok(()));
        assert_eq!(reserve(200 << 20, 3 << 20, "this"), Ok(()));
    }

    #[test]
    fn a_step_is_reserved_in_pieces_of_its_largest_tensor() {
        let cnn = ModelSpec::from_json(include_str!("../../protocol/models/mnist-cnn.json"));
        let cnn = cnn.unwrap();
        // The first linear layer's weight, 3136 × 512, until the first convolution's output,
        // 32 × 28 × 28 an example, outgrows it past batch 64.
        assert_eq!(largest_tensor_bytes(&cnn, 32), 4 * 3136 * 512);
        assert_eq!(largest_tensor_bytes(&cnn, 128), 4 * 128 * 32 * 28 * 28);
        let vit = ModelSpec::from_json(include_str!("../../protocol/models/mnist-vit.json"));
        let vit = vit.unwrap();
        // The feed-forward hidden layer: 16 tokens × 128, twice a layer's output.
        assert_eq!(largest_tensor_bytes(&vit, 256), 4 * 256 * 16 * 128);
    }

    #[test]
    fn what_cannot_be_addressed_is_refused_with_its_size() {
        let err = ensure(u64::MAX, "the model").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("out of memory: the model needs about 17592186044416 MB"),
            "{err}"
        );
    }
}
