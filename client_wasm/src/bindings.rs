//! The JavaScript API. Methods that touch tensors return Promises, because reads from a
//! WebGPU device must be async; the CPU path resolves them without waiting.
//!
//! The `RefCell` borrow held across awaits is the trainer's busy lock: JS is single-threaded,
//! and a second call while one is in flight fails with "the trainer is busy" instead of racing.
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::rc::Rc;

use burn::backend::{Autodiff, Flex};
use js_sys::{Float32Array, Function, Int32Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::error::TrainerError;
use crate::session::Session;
use crate::spec::ModelSpec;
use crate::training::{Pause, TrainOptions};

type Cpu = Autodiff<Flex>;
#[cfg(feature = "webgpu")]
type Gpu = Autodiff<burn::backend::WebGpu>;

/// The session on whichever backend this trainer runs.
enum Engine {
    Cpu(Session<Cpu>),
    #[cfg(feature = "webgpu")]
    Gpu(Session<Gpu>),
}

/// Run `$body` with `$s` bound to the engine's session, whatever its backend.
macro_rules! session {
    ($engine:expr, $s:ident => $body:expr) => {
        match $engine {
            Engine::Cpu($s) => $body,
            #[cfg(feature = "webgpu")]
            Engine::Gpu($s) => $body,
        }
    };
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options for `Trainer.train`; names follow the protocol's config keys in camelCase. */
export interface TrainOptions {
  epochs?: number;          // local epochs (default 1)
  batchSize?: number;       // default 10
  lr?: number;              // default 0.05
  optimizer?: "sgd" | "adam" | "adamw";
  momentum?: number;        // SGD momentum (default 0)
  weightDecay?: number;
  proximalMu?: number;      // FedProx μ (default 0: off)
  shuffle?: boolean;        // default true
  seed?: number;            // shuffle seed; omitted: a fresh random seed
}
export interface TrainReport { loss: number; steps: number; examples: number; }
export interface EvalReport { loss: number; accuracy: number; examples: number; }
export interface DeltaReport {
  delta: Uint8Array;        // safetensors, PyTorch names and layouts
  norm: number;             // global L2 norm of what is returned
  clipped?: boolean;        // Flower's norm_bit, when clipping was asked for
}
/** Called after every batch; return a Promise to pause training until it settles (e.g. to let the event loop run). */
export type OnBatch = (epoch: number, batch: number, batches: number, loss: number) => void | Promise<unknown>;
"#;

fn js_err(e: TrainerError) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// Options from a plain JS object. Through JSON, because serde-wasm-bindgen skips unknown
/// fields, and a misspelt option (`learningRate`) must be an error, not a silent default.
fn train_options(options: &JsValue) -> Result<TrainOptions, TrainerError> {
    let json = if options.is_undefined() || options.is_null() {
        "{}".to_string()
    } else {
        js_sys::JSON::stringify(options)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| TrainerError::Config("options must be a plain object".into()))?
    };
    serde_json::from_str(&json).map_err(|e| TrainerError::Config(e.to_string()))
}

/// Copy images into wasm memory, refusing cleanly when there is no room for them.
fn images(x: &Float32Array) -> Result<Vec<f32>, JsValue> {
    crate::memory::ensure(u64::from(x.length()) * 4, "the images").map_err(js_err)?;
    Ok(x.to_vec())
}

/// Images and labels, copied in the same way.
fn examples(x: &Float32Array, y: &Int32Array) -> Result<(Vec<f32>, Vec<i32>), JsValue> {
    crate::memory::ensure(u64::from(y.length()) * 4, "the labels").map_err(js_err)?;
    Ok((images(x)?, y.to_vec()))
}

fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).expect("setting a plain object's field");
    }
    o.into()
}

/// A local trainer for one model. Create it, load the global weights, train, take the delta.
#[wasm_bindgen]
pub struct Trainer {
    inner: Rc<RefCell<Engine>>,
    backend: String,
    fallback: Option<String>,
}

const BUSY: &str = "the trainer is busy";

impl Trainer {
    fn cpu(spec: ModelSpec) -> Result<Trainer, JsValue> {
        let session = Session::new(spec, Default::default()).map_err(js_err)?;
        Ok(Trainer {
            inner: Rc::new(RefCell::new(Engine::Cpu(session))),
            backend: "cpu".into(),
            fallback: None,
        })
    }

    #[cfg(feature = "webgpu")]
    async fn webgpu(spec: ModelSpec) -> Result<Trainer, String> {
        let device = crate::webgpu::start().await?;
        let session = Session::new(spec, device).map_err(|e| e.to_string())?;
        Ok(Trainer {
            inner: Rc::new(RefCell::new(Engine::Gpu(session))),
            backend: "webgpu".into(),
            fallback: None,
        })
    }

    #[cfg(not(feature = "webgpu"))]
    async fn webgpu(_: ModelSpec) -> Result<Trainer, String> {
        // Say whether an adapter exists, so a page on this build can tell people what they miss.
        crate::webgpu::find_adapter().await?;
        Err("WebGPU adapter found, but this build has no WebGPU backend".into())
    }

    /// WebGPU when it starts; the CPU otherwise, remembering why.
    async fn auto(spec: ModelSpec) -> Result<Trainer, JsValue> {
        match Trainer::webgpu(spec.clone()).await {
            Ok(trainer) => Ok(trainer),
            Err(reason) => Ok(Trainer {
                fallback: Some(reason),
                ..Trainer::cpu(spec)?
            }),
        }
    }
}

#[wasm_bindgen]
impl Trainer {
    /// Build a CPU trainer from a model-spec JSON string (`backend`: `"cpu"`). WebGPU needs
    /// async initialisation: use `await Trainer.create(spec, "webgpu")`.
    #[wasm_bindgen(constructor)]
    pub fn new(spec_json: &str, backend: &str) -> Result<Trainer, JsValue> {
        let spec = ModelSpec::from_json(spec_json).map_err(js_err)?;
        match backend {
            "cpu" | "wasm-cpu" => Trainer::cpu(spec),
            "webgpu" => Err(js_err(TrainerError::Backend(
                "WebGPU initialises asynchronously: use `await Trainer.create(spec, \"webgpu\")`"
                    .into(),
            ))),
            other => Err(js_err(TrainerError::Backend(format!(
                "unknown backend {other:?}: use \"cpu\" or \"webgpu\""
            )))),
        }
    }

    /// Build a trainer on `"cpu"`, `"webgpu"` or `"auto"`. `"auto"` uses WebGPU when the
    /// runtime has an adapter and the device starts, and falls back to the CPU otherwise
    /// (`fallbackReason` says why). `"webgpu"` rejects instead of falling back.
    #[wasm_bindgen(unchecked_return_type = "Promise<Trainer>")]
    pub fn create(
        #[wasm_bindgen(js_name = specJson)] spec_json: String,
        #[wasm_bindgen(unchecked_param_type = "\"cpu\" | \"webgpu\" | \"auto\"")] backend: String,
    ) -> Promise {
        future_to_promise(async move {
            let spec = ModelSpec::from_json(&spec_json).map_err(js_err)?;
            match backend.as_str() {
                "cpu" | "wasm-cpu" => Trainer::cpu(spec).map(Into::into),
                "webgpu" => Trainer::webgpu(spec).await.map(Into::into).map_err(|why| {
                    js_err(TrainerError::Backend(format!("WebGPU unavailable: {why}")))
                }),
                "auto" => Trainer::auto(spec).await.map(Into::into),
                other => Err(js_err(TrainerError::Backend(format!(
                    "unknown backend {other:?}: use \"cpu\", \"webgpu\" or \"auto\""
                )))),
            }
        })
    }

    /// Whether this build can train on WebGPU at all.
    #[wasm_bindgen(js_name = hasWebGpu)]
    pub fn has_webgpu() -> bool {
        cfg!(feature = "webgpu")
    }

    /// The backend actually in use: `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// Why an `"auto"` trainer runs on the CPU (e.g. "no WebGPU adapter"); undefined otherwise.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback.clone()
    }

    /// Load global weights: safetensors bytes with PyTorch names and shapes.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, bytes: &[u8]) -> Result<(), JsValue> {
        let mut engine = self
            .inner
            .try_borrow_mut()
            .map_err(|_| JsValue::from_str(BUSY))?;
        session!(&mut *engine, s => s.load(bytes)).map_err(js_err)
    }

    /// Train on `x` (Float32Array, N × input values) and `y` (Int32Array of N labels).
    #[wasm_bindgen(unchecked_return_type = "Promise<TrainReport>")]
    pub fn train(
        &self,
        x: Float32Array,
        y: Int32Array,
        #[wasm_bindgen(unchecked_param_type = "TrainOptions")] options: JsValue,
        #[wasm_bindgen(js_name = onBatch, unchecked_param_type = "OnBatch | undefined")]
        on_batch: Option<Function>,
    ) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let options = train_options(&options).map_err(js_err)?;
            let mut engine = inner
                .try_borrow_mut()
                .map_err(|_| JsValue::from_str(BUSY))?;
            let mut callback = |epoch: usize,
                                batch: usize,
                                batches: usize,
                                loss: f64|
             -> Option<Pause> {
                let f = on_batch.as_ref()?;
                let args =
                    js_sys::Array::of4(&epoch.into(), &batch.into(), &batches.into(), &loss.into());
                let promise = f
                    .apply(&JsValue::NULL, &args)
                    .ok()?
                    .dyn_into::<Promise>()
                    .ok()?;
                Some(Box::pin(async move {
                    let _ = JsFuture::from(promise).await;
                }))
            };
            let report = session!(&mut *engine, s => {
                let (xs, ys) = examples(&x, &y)?;
                let data = s.dataset(xs, ys).map_err(js_err)?;
                s.train(&data, &options, &mut callback).await.map_err(js_err)?
            });
            Ok(object(&[
                ("loss", report.loss.into()),
                ("steps", report.steps.into()),
                ("examples", report.examples.into()),
            ]))
        })
    }

    /// Mean cross-entropy and accuracy on `x`, `y`, in inference mode.
    #[wasm_bindgen(unchecked_return_type = "Promise<EvalReport>")]
    pub fn evaluate(&self, x: Float32Array, y: Int32Array) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let engine = inner.try_borrow().map_err(|_| JsValue::from_str(BUSY))?;
            let r = session!(&*engine, s => {
                let (xs, ys) = examples(&x, &y)?;
                let data = s.dataset(xs, ys).map_err(js_err)?;
                s.evaluate(&data).await.map_err(js_err)?
            });
            Ok(object(&[
                ("loss", r.loss.into()),
                ("accuracy", r.accuracy.into()),
                ("examples", r.examples.into()),
            ]))
        })
    }

    /// trained − global as safetensors; optionally clipped to global L2 norm `clip`, then
    /// noised with N(0, noiseStd²) from a cryptographically seeded generator.
    #[wasm_bindgen(unchecked_return_type = "Promise<DeltaReport>")]
    pub fn delta(
        &self,
        clip: Option<f64>,
        #[wasm_bindgen(js_name = noiseStd)] noise_std: Option<f64>,
    ) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let engine = inner.try_borrow().map_err(|_| JsValue::from_str(BUSY))?;
            let out = session!(&*engine, s => s.delta(clip, noise_std).await.map_err(js_err)?);
            let mut pairs = vec![
                ("delta", Uint8Array::from(out.bytes.as_slice()).into()),
                ("norm", out.norm.into()),
            ];
            if let Some(c) = out.clipped {
                pairs.push(("clipped", c.into()));
            }
            Ok(object(&pairs))
        })
    }

    /// The current weights as safetensors with PyTorch names.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn weights(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let engine = inner.try_borrow().map_err(|_| JsValue::from_str(BUSY))?;
            let bytes = session!(&*engine, s => s.weights().await.map_err(js_err)?);
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Logits for `x` (for checks against PyTorch). `train`: dropout and batch statistics on.
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn forward(&self, x: Float32Array, train: bool) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let engine = inner.try_borrow().map_err(|_| JsValue::from_str(BUSY))?;
            let logits =
                session!(&*engine, s => s.forward(images(&x)?, train).await.map_err(js_err)?);
            Ok(Float32Array::from(logits.as_slice()).into())
        })
    }

    /// Gradients of the mean cross-entropy over all of `x`, `y`, as PyTorch-named safetensors.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn gradients(&self, x: Float32Array, y: Int32Array) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let engine = inner.try_borrow().map_err(|_| JsValue::from_str(BUSY))?;
            let bytes = session!(&*engine, s => {
                let (xs, ys) = examples(&x, &y)?;
                let data = s.dataset(xs, ys).map_err(js_err)?;
                s.gradients(&data).await.map_err(js_err)?
            });
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }
}
