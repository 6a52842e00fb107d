//! Mixed precision against float32 on the same job, on Burn's CPU backend (whose f16 arithmetic
//! stands in for a WebGPU device with `shader-f16`): the test accuracy each reaches.
//!
//!     cargo run --release --example precision_accuracy -- JOB_DIR EPOCHS BATCH LR MOMENTUM SEED
//!
//! JOB_DIR holds `bench.wasm_speed.write_job`'s spec.json, w.safetensors and d.safetensors, and a
//! test set t.safetensors of the same form (`x` float32 [N, inputs], `y` int32 [N]). Prints one
//! JSON line per precision.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use pollen_trainer::config::TrainingConfig;
use pollen_trainer::learner::{Learner, block_on};
use pollen_trainer::spec::ModelSpec;
use safetensors::SafeTensors;

/// `x` as float32 values and `y` as floats, from a data file.
fn examples(path: &Path) -> (Vec<f32>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("a safetensors data file");
    let words = |name: &str| -> Vec<[u8; 4]> {
        let t = file.tensor(name).expect("tensors x and y");
        t.data()
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect()
    };
    let x = words("x").into_iter().map(f32::from_le_bytes).collect();
    let y = words("y")
        .into_iter()
        .map(|w| i32::from_le_bytes(w) as f32)
        .collect();
    (x, y)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, epochs, batch, lr, momentum, seed] = &args[..] else {
        panic!("usage: JOB_DIR EPOCHS BATCH LR MOMENTUM SEED");
    };
    let dir = PathBuf::from(dir);
    let spec =
        ModelSpec::from_json(&std::fs::read_to_string(dir.join("spec.json")).unwrap()).unwrap();
    let weights = std::fs::read(dir.join("w.safetensors")).unwrap();
    let (x, y) = examples(&dir.join("d.safetensors"));
    let (tx, ty) = examples(&dir.join("t.safetensors"));
    for precision in ["fp32", "fp16"] {
        let mut learner = Learner::<Autodiff<Flex>>::new(spec.clone(), Default::default()).unwrap();
        learner.half = true;
        learner.load(&weights).unwrap();
        let options = format!(
            r#"{{"epochs": {epochs}, "batchSize": {batch}, "lr": {lr}, "momentum": {momentum},
                "optimizer": "sgd", "seed": {seed}, "precision": "{precision}"}}"#
        );
        let config = TrainingConfig::from_json(&options).unwrap();
        let data = learner.dataset(x.clone(), y.clone()).unwrap();
        let started = Instant::now();
        let report = block_on(learner.train(&data, &config, &mut |_, _, _, _| None, None)).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let test = learner.dataset(tx.clone(), ty.clone()).unwrap();
        let eval = block_on(learner.evaluate(&test)).unwrap();
        println!(
            r#"{{"precision": "{}", "overflow_steps": {}, "loss": {:.4}, "test_loss": {:.4}, "test_accuracy": {}, "seconds": {seconds:.1}}}"#,
            report.precision.name(),
            report.overflow_steps,
            report.loss,
            eval.loss,
            eval.accuracy.unwrap_or(f64::NAN)
        );
    }
}
