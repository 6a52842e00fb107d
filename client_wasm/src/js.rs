//! Glue between JavaScript values and the trainer: errors become `Error`s, option objects
//! become a `TrainingConfig`, reports become plain objects, typed arrays are copied in only
//! when there is memory for them, and a shared engine refuses a second caller as busy.

use std::cell::{Ref, RefCell, RefMut};
use std::rc::Rc;

use js_sys::{Float32Array, Function, Int32Array, Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::config::TrainingConfig;
use crate::error::TrainerError;
use crate::evaluation::EvalReport;
use crate::learner::{Checkpoints, DeltaOut};
use crate::training::{Pause, TrainReport};

pub fn error(e: TrainerError) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// An engine shared between a JS object and the Promises its methods return. JS is
/// single-threaded, so a borrow that fails means another call is still in flight: that call
/// is refused with "the trainer is busy" instead of racing.
pub struct Shared<T>(Rc<RefCell<T>>);

const BUSY: &str = "the trainer is busy";

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Rc::new(RefCell::new(value)))
    }

    pub fn read(&self) -> Result<Ref<'_, T>, JsValue> {
        self.0.try_borrow().map_err(|_| JsValue::from_str(BUSY))
    }

    pub fn write(&self) -> Result<RefMut<'_, T>, JsValue> {
        self.0.try_borrow_mut().map_err(|_| JsValue::from_str(BUSY))
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

/// Options from a plain JS object. Through JSON, because serde-wasm-bindgen skips unknown
/// fields, and a misspelt option must be an error.
pub fn training_config(options: &JsValue) -> Result<TrainingConfig, TrainerError> {
    let json = if options.is_undefined() || options.is_null() {
        "{}".to_string()
    } else {
        js_sys::JSON::stringify(options)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| TrainerError::Config("options must be a plain object".into()))?
    };
    TrainingConfig::from_json(&json)
}

/// Copy images into wasm memory, refusing cleanly when there is no room for them.
pub fn images(x: &Float32Array) -> Result<Vec<f32>, JsValue> {
    crate::memory::ensure(u64::from(x.length()) * 4, "the images").map_err(error)?;
    Ok(x.to_vec())
}

/// Inputs and targets, copied in the same way: class indices as an `Int32Array`, or a regression's
/// values (or indices) as a `Float32Array`.
pub fn examples(x: &Float32Array, y: &JsValue) -> Result<(Vec<f32>, Vec<f32>), JsValue> {
    let targets = if let Some(y) = y.dyn_ref::<Int32Array>() {
        crate::memory::ensure(u64::from(y.length()) * 4, "the labels").map_err(error)?;
        y.to_vec().into_iter().map(|l| l as f32).collect()
    } else if let Some(y) = y.dyn_ref::<Float32Array>() {
        crate::memory::ensure(u64::from(y.length()) * 4, "the targets").map_err(error)?;
        y.to_vec()
    } else {
        return Err(error(TrainerError::Data(
            "y must be an Int32Array of labels or a Float32Array of targets".into(),
        )));
    };
    Ok((images(x)?, targets))
}

/// The per-batch callback: calls `f` and, when it returns a Promise, pauses until it settles.
pub fn on_batch(f: Option<Function>) -> impl FnMut(usize, usize, usize, f64) -> Option<Pause> {
    move |epoch, batch, batches, loss| {
        let f = f.as_ref()?;
        let args = js_sys::Array::of4(&epoch.into(), &batch.into(), &batches.into(), &loss.into());
        let promise = f
            .apply(&JsValue::NULL, &args)
            .ok()?
            .dyn_into::<Promise>()
            .ok()?;
        Some(Box::pin(async move {
            let _ = JsFuture::from(promise).await;
        }))
    }
}

/// What `Trainer.train`'s `checkpoints` object asks: the blob to resume from, and when and
/// where to save. A save that throws or rejects is ignored: losing a checkpoint only costs a
/// resumed job its progress, while stopping would cost the job.
pub struct CheckpointHooks {
    pub resume: Option<Vec<u8>>,
    every_steps: Option<usize>,
    every_ms: Option<f64>,
    save: Option<Function>,
}

const CHECKPOINT_KEYS: [&str; 4] = ["resume", "everySteps", "everySeconds", "save"];

pub fn checkpoint_hooks(o: &JsValue) -> Result<Option<CheckpointHooks>, TrainerError> {
    if o.is_undefined() || o.is_null() {
        return Ok(None);
    }
    let bad = |m: &str| TrainerError::Config(format!("checkpoints: {m}"));
    let object: &Object = o.dyn_ref().ok_or_else(|| bad("must be an object"))?;
    for key in Object::keys(object).iter() {
        let key = key.as_string().unwrap_or_default();
        if !CHECKPOINT_KEYS.contains(&key.as_str()) {
            return Err(bad(&format!("unknown option {key:?}")));
        }
    }
    let get = |k: &str| Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
    let resume = match get("resume") {
        v if v.is_undefined() || v.is_null() => None,
        v => Some(
            v.dyn_into::<js_sys::Uint8Array>()
                .map_err(|_| bad("resume must be a Uint8Array"))?
                .to_vec(),
        ),
    };
    let positive = |k: &str| -> Result<Option<f64>, TrainerError> {
        match get(k) {
            v if v.is_undefined() || v.is_null() => Ok(None),
            v => match v.as_f64() {
                Some(n) if n > 0.0 && n.is_finite() => Ok(Some(n)),
                _ => Err(bad(&format!("{k} must be a positive number"))),
            },
        }
    };
    let every_steps = positive("everySteps")?.map(|n| n.ceil() as usize);
    let every_ms = positive("everySeconds")?.map(|s| s * 1000.0);
    let save = match get("save") {
        v if v.is_undefined() || v.is_null() => None,
        v => Some(
            v.dyn_into::<Function>()
                .map_err(|_| bad("save must be a function"))?,
        ),
    };
    if save.is_some() && every_steps.is_none() && every_ms.is_none() {
        return Err(bad("save needs everySteps or everySeconds"));
    }
    Ok(Some(CheckpointHooks {
        resume,
        every_steps,
        every_ms,
        save,
    }))
}

impl CheckpointHooks {
    /// The learner's view: `due` after every `everySteps` steps or `everySeconds` since the last.
    pub fn hooks(&self) -> Checkpoints<'_> {
        let (every_steps, every_ms) = (self.every_steps, self.every_ms);
        let mut last = js_sys::Date::now();
        let save = self.save.clone();
        Checkpoints {
            resume: self.resume.as_deref(),
            due: Box::new(move |steps| {
                if save.is_none() {
                    return false;
                }
                let now = js_sys::Date::now();
                let due = every_steps.is_some_and(|n| steps % n == 0)
                    || every_ms.is_some_and(|ms| now - last >= ms);
                if due {
                    last = now;
                }
                due
            }),
            save: Box::new({
                let save = self.save.clone();
                move |blob| {
                    let f = save.as_ref()?;
                    let bytes = js_sys::Uint8Array::from(blob.as_slice());
                    let promise = f
                        .call1(&JsValue::NULL, &bytes)
                        .ok()?
                        .dyn_into::<Promise>()
                        .ok()?;
                    Some(Box::pin(async move {
                        let _ = JsFuture::from(promise).await;
                    }))
                }
            }),
        }
    }
}

fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).expect("setting a plain object's field");
    }
    o.into()
}

pub fn train_report(r: TrainReport) -> JsValue {
    object(&[
        ("loss", r.loss.into()),
        ("steps", r.steps.into()),
        ("examples", r.examples.into()),
        ("batchSize", r.batch_size.into()),
        ("batchParts", r.batch_parts.into()),
        ("precision", r.precision.name().into()),
        ("overflowSteps", r.overflow_steps.into()),
    ])
}

/// `Engine::gpu_memory`'s bytes in use, reserved, and the job's peak reserved.
pub fn gpu_memory_report([used, reserved, peak]: [u64; 3]) -> JsValue {
    object(&[
        ("bytesInUse", (used as f64).into()),
        ("bytesReserved", (reserved as f64).into()),
        ("peakBytesReserved", (peak as f64).into()),
    ])
}

pub fn eval_report(r: EvalReport) -> JsValue {
    object(&[
        ("loss", r.loss.into()),
        ("accuracy", r.accuracy.map_or(JsValue::NULL, JsValue::from)),
        ("examples", r.examples.into()),
    ])
}

pub fn delta_report(out: DeltaOut) -> JsValue {
    let mut pairs = vec![
        (
            "delta",
            js_sys::Uint8Array::from(out.bytes.as_slice()).into(),
        ),
        ("norm", out.norm.into()),
    ];
    if let Some(c) = out.clipped {
        pairs.push(("clipped", c.into()));
    }
    object(&pairs)
}
