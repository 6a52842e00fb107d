//! Mixed precision (`precision: "fp16"`) on Burn's CPU backend, which computes in f16 as WebGPU
//! does with `shader-f16`: it trains as float32 does, keeps float32 weights, zeroes a step whose
//! scaled gradients overflow and halves the scale; and a learner without f16 trains in float32.

use burn::backend::{Autodiff, Flex};
use pollen_trainer::config::TrainingConfig;
use pollen_trainer::learner::Learner;
use pollen_trainer::precision::{INITIAL_SCALE, LossScale, Precision};
use pollen_trainer::spec::ModelSpec;

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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a CPU read waited"),
    }
}

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

/// A learner with the same global weights every time, `half` as given.
fn learner(half: bool) -> Learner<Cpu> {
    let spec = ModelSpec::from_json(SPEC).unwrap();
    let mut l = Learner::<Cpu>::new(spec, Default::default()).unwrap();
    l.load(&GLOBAL.with(|g| g.clone())).unwrap();
    l.half = half;
    l
}

thread_local! {
    static GLOBAL: Vec<u8> = {
        let spec = ModelSpec::from_json(SPEC).unwrap();
        block_on(Learner::<Cpu>::new(spec, Default::default()).unwrap().weights()).unwrap()
    };
}

fn train(l: &mut Learner<Cpu>, options: &str) -> pollen_trainer::training::TrainReport {
    let (x, y) = data();
    let data = l.dataset(x, y).unwrap();
    let config = TrainingConfig::from_json(options).unwrap();
    block_on(l.train(&data, &config, &mut |_, _, _, _| None, None)).unwrap()
}

const JOB: &str = r#"{"epochs": 3, "batchSize": 16, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9, "shuffle": false"#;

#[test]
fn mixed_precision_trains_as_float32_does() {
    let mut full = learner(false);
    let fp32 = train(&mut full, &format!("{JOB}}}"));
    let mut mixed = learner(true);
    let fp16 = train(&mut mixed, &format!(r#"{JOB}, "precision": "fp16"}}"#));
    assert_eq!(
        (fp32.precision, fp16.precision),
        (Precision::Fp32, Precision::Fp16)
    );
    assert_eq!(fp16.overflow_steps, 0);
    let (x, y) = data();
    let eval =
        |l: &Learner<Cpu>| block_on(l.evaluate(&l.dataset(x.clone(), y.clone()).unwrap())).unwrap();
    let (a, b) = (eval(&full), eval(&mixed));
    println!(
        "fp32 loss {} acc {:?}; fp16 loss {} acc {:?}",
        a.loss, a.accuracy, b.loss, b.accuracy
    );
    assert!(a.accuracy.unwrap() > 0.9, "float32 learns the task: {a:?}");
    assert!(
        (a.accuracy.unwrap() - b.accuracy.unwrap()).abs() <= 0.05,
        "{a:?} vs {b:?}"
    );
    assert!((a.loss - b.loss).abs() <= 0.05 * a.loss, "{a:?} vs {b:?}");
    // f16 arithmetic rounds differently: identical weights would mean it never ran.
    assert_ne!(
        block_on(full.weights()).unwrap(),
        block_on(mixed.weights()).unwrap()
    );
    // The master weights stayed float32: the delta is float32 safetensors, not a rounding of f16.
    let delta = block_on(mixed.delta(None, None, Default::default())).unwrap();
    assert!(delta.norm > 0.0 && delta.norm.is_finite());
}

#[test]
fn a_step_whose_scaled_gradients_overflow_changes_no_weight_and_halves_the_scale() {
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
