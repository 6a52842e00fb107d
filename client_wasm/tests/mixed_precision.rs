//! Mixed precision (`precision: "fp16"`) on Burn's CPU backend, which computes in f16 as WebGPU
//! does with `shader-f16`: it trains as float32 does, keeps float32 weights, zeroes a step whose
//! scaled gradients overflow and halves the scale; and a learner without f16 trains in float32.

use std::sync::{Mutex, MutexGuard};

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use pollen_trainer::config::TrainingConfig;
use pollen_trainer::learner::{Learner, block_on};
use pollen_trainer::precision::{INITIAL_SCALE, LossScale, Precision};
use pollen_trainer::spec::ModelSpec;
use pollen_trainer::weights;

type Cpu = Autodiff<Flex>;

/// A small CNN: conv, pooling, linear layers, on 1×8×8 images.
const SPEC: &str = r#"{"name": "mixed", "input_shape": [1, 8, 8], "num_classes": 4, "layers": [
  {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
  {"type": "relu"},
  {"type": "maxpool2d", "kernel_size": 2},
  {"type": "flatten"},
  {"type": "linear", "in_features": 64, "out_features": 16},
  {"type": "relu"},
  {"type": "linear", "in_features": 16, "out_features": 4}
]}"#;

/// 64 images whose label is the bright quadrant, with a little deterministic texture.
fn data() -> (Vec<f32>, Vec<f32>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..64usize {
        let label = i % 4;
        for p in 0..64usize {
            let (r, c) = (p / 8, p % 8);
            let quadrant = (r / 4) * 2 + c / 4;
            let texture = ((i * 31 + p * 17) % 13) as f32 / 26.0;
            x.push(if quadrant == label { 1.0 } else { 0.0 } + texture);
        }
        y.push(label as f32);
    }
    (x, y)
}

/// The backend's RNG is one per process: weight initialisation draws from it and every training
/// step reseeds it, so each test holds this from start to end.
static BACKEND_RNG: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A learner with the same global weights every time (drawn from a fixed seed), `half` as given.
fn learner(half: bool) -> Learner<Cpu> {
    Cpu::seed(&Default::default(), SEED);
    let spec = ModelSpec::from_json(SPEC).unwrap();
    let global = block_on(
        Learner::<Cpu>::new(spec.clone(), Default::default())
            .unwrap()
            .weights(),
    )
    .unwrap();
    let mut l = Learner::<Cpu>::new(spec, Default::default()).unwrap();
    l.load(&global).unwrap();
    l.half = half;
    l
}

const SEED: u64 = 7;

fn train(l: &mut Learner<Cpu>, options: &str) -> pollen_trainer::training::TrainReport {
    let (x, y) = data();
    let data = l.dataset(x, y).unwrap();
    let config = TrainingConfig::from_json(options).unwrap();
    block_on(l.train(&data, &config, &mut |_, _, _, _| None, None)).unwrap()
}

#[test]
fn a_mixed_precision_step_moves_the_weights_as_a_float32_step_within_f16_rounding() {
    let _serial = serial();
    let one_step = |half: bool, precision: &str| {
        let mut l = learner(half);
        let options = format!(
            r#"{{"epochs": 1, "batchSize": 64, "lr": 0.1, "shuffle": false, "precision": "{precision}"}}"#
        );
        let report = train(&mut l, &options);
        let delta = block_on(l.delta(None, None, Default::default())).unwrap();
        let named = weights::decode(&delta.bytes, &ModelSpec::from_json(SPEC).unwrap()).unwrap();
        (report, named.into_values().flatten().collect::<Vec<f32>>())
    };
    let (fp32, full) = one_step(false, "fp32");
    let (fp16, mixed) = one_step(true, "fp16");
    assert_eq!(
        (fp32.precision, fp16.precision, fp16.overflow_steps),
        (Precision::Fp32, Precision::Fp16, 0)
    );
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let gap: Vec<f32> = full.iter().zip(&mixed).map(|(a, b)| a - b).collect();
    let relative = norm(&gap) / norm(&full);
    println!("one step: |fp16 - fp32| / |fp32| = {relative:.2e}");
    // f16 keeps 11 significant bits (relative rounding 2^-11 ≈ 5e-4): the step's direction and
    // size agree to about that, and not exactly (identical would mean f16 never ran). A scale
    // left in the gradients would make them 1,024 times off.
    assert!(relative > 0.0 && relative < 1e-2, "{relative}");
    assert!((fp16.loss - fp32.loss).abs() < 1e-2 * fp32.loss);
}

#[test]
fn mixed_precision_trains_as_float32_does() {
    let _serial = serial();
    let job = r#"{"epochs": 8, "batchSize": 16, "lr": 0.1, "momentum": 0.9, "optimizer": "sgd", "shuffle": false"#;
    let mut full = learner(false);
    train(&mut full, &format!("{job}}}"));
    let mut mixed = learner(true);
    let fp16 = train(&mut mixed, &format!(r#"{job}, "precision": "fp16"}}"#));
    assert_eq!((fp16.precision, fp16.overflow_steps), (Precision::Fp16, 0));
    let (x, y) = data();
    let eval =
        |l: &Learner<Cpu>| block_on(l.evaluate(&l.dataset(x.clone(), y.clone()).unwrap())).unwrap();
    let (a, b) = (eval(&full), eval(&mixed));
    println!("fp32 {a:?}; fp16 {b:?}");
    assert!(
        a.accuracy.unwrap() >= 0.9 && b.accuracy.unwrap() >= 0.9,
        "{a:?} vs {b:?}"
    );
}

#[test]
fn a_step_whose_scaled_gradients_overflow_changes_no_weight_and_halves_the_scale() {
    let _serial = serial();
    let mut l = learner(true);
    let before = block_on(l.weights()).unwrap();
    // 2^24 times a loss gradient overflows f16 (largest 65,504) at once.
    l.loss_scale = LossScale::starting_at(16_777_216.0);
    let one_step =
        r#"{"epochs": 1, "batchSize": 64, "lr": 0.1, "shuffle": false, "precision": "fp16"}"#;
    let report = train(&mut l, one_step);
    assert_eq!((report.steps, report.overflow_steps), (1, 1));
    assert_eq!(l.loss_scale.scale, 8_388_608.0);
    assert!(
        report.loss.is_finite(),
        "the reported loss is the unscaled one: {}",
        report.loss
    );
    assert_eq!(
        block_on(l.weights()).unwrap(),
        before,
        "plain SGD on a zeroed gradient"
    );
}

#[test]
fn without_f16_a_fp16_job_trains_in_float32_and_says_so() {
    let _serial = serial();
    let mut l = learner(false);
    let report = train(
        &mut l,
        r#"{"epochs": 1, "batchSize": 16, "precision": "fp16"}"#,
    );
    assert_eq!(
        (report.precision, report.overflow_steps),
        (Precision::Fp32, 0)
    );
    assert_eq!(l.loss_scale.scale, INITIAL_SCALE);
}
