//! A job resumed from any of its checkpoints ends bit for bit where the uninterrupted job ends:
//! weights, optimizer state, batch order, augmentation, dropout and the reported loss. And a
//! checkpoint of another job, or a damaged one, is refused.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

use burn::backend::{Autodiff, Flex};
use pollen_trainer::config::TrainingConfig;
use pollen_trainer::learner::{Checkpoints, Learner, block_on};
use pollen_trainer::spec::ModelSpec;

type Cpu = Autodiff<Flex>;

/// A conv (rank-4 state), BatchNorm (running statistics), dropout (the backend's RNG) and two
/// linears (rank-2 and rank-1 state) on 1×6×6 images, so augmentation applies.
const SPEC: &str = r#"{"name": "resume", "input_shape": [1, 6, 6], "num_classes": 3, "layers": [
  {"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": 1},
  {"type": "batchnorm2d", "num_features": 2},
  {"type": "relu"},
  {"type": "flatten"},
  {"type": "dropout", "p": 0.3},
  {"type": "linear", "in_features": 72, "out_features": 8},
  {"type": "relu"},
  {"type": "linear", "in_features": 8, "out_features": 3}
]}"#;

const AUGMENT: &str = r#""augmentFlip": true, "augmentCrop": 1, "augmentMixup": 0.4"#;

struct Fixture {
    global: Vec<u8>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn fixture() -> Fixture {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let learner =
        Learner::<Cpu>::new(ModelSpec::from_json(SPEC).unwrap(), Default::default()).unwrap();
    let global = block_on(learner.weights()).unwrap();
    let x = (0..22 * 36)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let y = (0..22).map(|i| (i * 7 % 3) as f32).collect();
    Fixture { global, x, y }
}

/// The backend's RNG (dropout's) is one per process: tests that train at once would draw from it
/// in turns, so each job holds this while it trains.
static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// Train the job; checkpoints it every `every` steps into the returned list. The final weights.
fn run(
    f: &Fixture,
    options: &str,
    resume: Option<&[u8]>,
    every: Option<usize>,
) -> pollen_trainer::error::Result<Outcome> {
    run_reading(f, options, resume, every, 1)
}

/// `run`, reading losses back every `read_every` steps (as on WebGPU).
fn run_reading(
    f: &Fixture,
    options: &str,
    resume: Option<&[u8]>,
    every: Option<usize>,
    read_every: usize,
) -> pollen_trainer::error::Result<Outcome> {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let mut learner =
        Learner::<Cpu>::new(ModelSpec::from_json(SPEC).unwrap(), Default::default()).unwrap();
    learner.load(&f.global).unwrap();
    learner.read_every = read_every;
    let data = learner.dataset(f.x.clone(), f.y.clone()).unwrap();
    let config = TrainingConfig::from_json(options).unwrap();
    let saved = Rc::new(RefCell::new(Vec::new()));
    let hooks = Checkpoints {
        resume,
        due: Box::new(move |steps| every.is_some_and(|n| steps % n == 0)),
        save: Box::new({
            let saved = saved.clone();
            move |blob| {
                saved.borrow_mut().push(blob);
                None
            }
        }),
    };
    let mut reported = Vec::new();
    let mut count = |epoch, batch, _, loss: f64| {
        reported.push((epoch, batch, loss.to_bits()));
        None
    };
    let report = block_on(learner.train(&data, &config, &mut count, Some(hooks)))?;
    Ok(Outcome {
        weights: block_on(learner.weights()).unwrap(),
        loss: report.loss,
        steps: report.steps,
        batches: reported.len(),
        reported,
        checkpoints: saved.borrow().clone(),
    })
}

struct Outcome {
    weights: Vec<u8>,
    loss: f64,
    steps: usize,
    /// Batches this run trained (a resumed one skips those its checkpoint had done).
    batches: usize,
    /// (epoch, batch, loss) as the per-batch callback heard them.
    reported: Vec<(usize, usize, u64)>,
    checkpoints: Vec<Vec<u8>>,
}

fn options(optimizer: &str) -> String {
    format!(r#"{{"epochs": 2, "batchSize": 4, "lr": 0.05, "seed": 9, {optimizer}, {AUGMENT}}}"#)
}

#[test]
fn a_job_resumed_from_any_checkpoint_ends_bit_for_bit_where_it_would_have() {
    let f = fixture();
    for optimizer in [
        r#""optimizer": "sgd", "momentum": 0.9, "nesterov": true, "weightDecay": 0.01"#,
        r#""optimizer": "adam""#,
        r#""optimizer": "adamw""#,
        r#""optimizer": "rmsprop""#,
    ] {
        let options = options(optimizer);
        let whole = run(&f, &options, None, Some(2)).unwrap();
        // 22 examples in batches of 4: 6 steps an epoch, 12 in all; none is saved after the last.
        assert_eq!(
            (whole.steps, whole.checkpoints.len()),
            (12, 5),
            "{optimizer}"
        );
        for (k, blob) in whole.checkpoints.iter().enumerate() {
            let resumed = run(&f, &options, Some(blob), None).unwrap();
            assert_eq!(
                resumed.batches,
                12 - 2 * (k + 1),
                "{optimizer}: batches after {k}"
            );
            assert_eq!(resumed.steps, 12);
            assert!(
                resumed.weights == whole.weights,
                "{optimizer}: resumed from checkpoint {k} differs"
            );
            assert_eq!(
                resumed.loss.to_bits(),
                whole.loss.to_bits(),
                "{optimizer}: loss"
            );
        }
    }
}

#[test]
fn the_seed_reaches_every_draw_and_checkpointing_changes_nothing() {
    let f = fixture();
    let options = options(r#""optimizer": "adam""#);
    let plain = run(&f, &options, None, None).unwrap();
    assert!(run(&f, &options, None, Some(1)).unwrap().weights == plain.weights);
    let other = options.replace(r#""seed": 9"#, r#""seed": 10"#);
    assert!(run(&f, &other, None, None).unwrap().weights != plain.weights);
}

#[test]
fn a_checkpoint_of_another_job_or_a_damaged_one_is_refused() {
    let f = fixture();
    let options = options(r#""optimizer": "adam""#);
    let blob = &run(&f, &options, None, Some(3)).unwrap().checkpoints[0];
    let other = options.replace("\"lr\": 0.05", "\"lr\": 0.06");
    let err = run(&f, &other, Some(blob), None).err().unwrap().to_string();
    assert!(err.contains("another job"), "{err}");
    let mut damaged = blob.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let err = run(&f, &options, Some(&damaged), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn rmsprop_with_momentum_says_it_cannot_checkpoint() {
    let f = fixture();
    let options = options(r#""optimizer": "rmsprop", "momentum": 0.9"#);
    let err = run(&f, &options, None, Some(2)).err().unwrap().to_string();
    assert!(
        err.contains("RMSprop with momentum cannot be checkpointed"),
        "{err}"
    );
    assert!(
        run(&f, &options, None, None).is_ok(),
        "without checkpoints it trains"
    );
}

#[test]
fn reading_losses_every_few_steps_changes_nothing_but_when_batches_are_reported() {
    let f = fixture();
    let options = options(r#""optimizer": "adam", "gradClipNorm": 0.5"#);
    let each = run(&f, &options, None, Some(4)).unwrap();
    let every5 = run_reading(&f, &options, None, Some(4), 5).unwrap();
    assert!(every5.weights == each.weights);
    assert_eq!(every5.loss.to_bits(), each.loss.to_bits());
    assert_eq!(
        every5.reported, each.reported,
        "every batch, in order, with its own loss"
    );
    assert_eq!(
        every5.checkpoints, each.checkpoints,
        "a checkpoint reads what is pending first"
    );
    let resumed = run_reading(&f, &options, Some(&every5.checkpoints[0]), None, 5).unwrap();
    assert!(resumed.weights == each.weights);
}
