//! The JavaScript API: `Trainer` for clients, and `ParityProbe` for the PyTorch-parity
//! harness. Methods that touch tensors return Promises, because reads from a WebGPU device
//! must be async; the CPU path resolves them without waiting.
//!
//! The engine's borrow is held across awaits on purpose: it is the busy lock (see `js::Shared`).
#![allow(clippy::await_holding_refcell_ref)]

use js_sys::{Float32Array, Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::encoding::Encoding;
use crate::engine::{Engine, on_learner};
use crate::js::{self, Shared};
use crate::spec::ModelSpec;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options for `Trainer.train`; names follow the protocol's config keys in camelCase. */
export interface TrainOptions {
  epochs?: number;          // local epochs (default 1)
  batchSize?: number | "auto"; // default 10; "auto": the largest power of two (≤ 256) whose step fits memoryBudgetMb
  memoryBudgetMb?: number;  // for batchSize "auto" (default 256)
  lr?: number;              // default 0.05
  optimizer?: "sgd" | "adam" | "adamw";
  momentum?: number;        // SGD momentum (default 0)
  weightDecay?: number;
  proximalMu?: number;      // FedProx μ (default 0: off)
  shuffle?: boolean;        // default true
  seed?: number;            // shuffle seed; omitted: a fresh random seed
  precision?: "fp32" | "fp16"; // "fp16": mixed precision where the WebGPU device has shader-f16 (see `fp16`)
}
export interface TrainReport { loss: number; steps: number; examples: number; batchSize: number; batchParts: number; precision: "fp32" | "fp16"; overflowSteps: number; }
export interface EvalReport { loss: number; accuracy: number | null; examples: number; }
export interface DeltaReport {
  delta: Uint8Array;        // safetensors, PyTorch names and layouts
  norm: number;             // global L2 norm of what is returned
  clipped?: boolean;        // Flower's norm_bit, when clipping was asked for
}
/**
 * Checkpoints of a training job (`Trainer.train`'s fifth argument). `save` receives a blob every
 * `everySteps` steps or `everySeconds` seconds (never after the last step); a later `train` of the
 * same job (same model, options and data, global weights loaded again) given it as `resume` goes on
 * from there and ends exactly as the uninterrupted job would have. A damaged blob, or one of
 * another job, is refused with an Error.
 */
export interface Checkpoints {
  resume?: Uint8Array;
  everySteps?: number;
  everySeconds?: number;
  save?: (checkpoint: Uint8Array) => void | Promise<unknown>;
}
/** Called after every batch; return a Promise to pause training until it settles (e.g. to let the event loop run). */
export type OnBatch = (epoch: number, batch: number, batches: number, loss: number) => void | Promise<unknown>;
"#;

/// A local trainer for one model. Create it, load the global weights, train, take the delta.
#[wasm_bindgen]
pub struct Trainer {
    engine: Shared<Engine>,
    backend: &'static str,
    fallback: Option<String>,
}

#[wasm_bindgen]
impl Trainer {
    /// Build a CPU trainer from a model-spec JSON string (`backend`: `"cpu"`). WebGPU needs
    /// async initialisation: use `await Trainer.create(spec, "webgpu")`.
    #[wasm_bindgen(constructor)]
    pub fn new(spec_json: &str, backend: &str) -> Result<Trainer, JsValue> {
        crate::fault::report_panics();
        let spec = ModelSpec::from_json(spec_json).map_err(js::error)?;
        let engine = Engine::start_now(spec, backend).map_err(js::error)?;
        Ok(Trainer {
            backend: engine.name(),
            engine: Shared::new(engine),
            fallback: None,
        })
    }

    /// Build a trainer on `"cpu"`, `"webgpu"` or `"auto"`. `"auto"` uses WebGPU when the
    /// runtime has an adapter and the device starts, and falls back to the CPU otherwise
    /// (`fallbackReason` says why). `"webgpu"` rejects instead of falling back.
    #[wasm_bindgen(unchecked_return_type = "Promise<Trainer>")]
    pub fn create(
        #[wasm_bindgen(js_name = specJson)] spec_json: String,
        #[wasm_bindgen(unchecked_param_type = "\"cpu\" | \"webgpu\" | \"auto\"")] backend: String,
    ) -> Promise {
        crate::fault::report_panics();
        future_to_promise(async move {
            let spec = ModelSpec::from_json(&spec_json).map_err(js::error)?;
            let started = Engine::start(spec, &backend).await.map_err(js::error)?;
            Ok(Trainer {
                backend: started.engine.name(),
                engine: Shared::new(started.engine),
                fallback: started.fallback,
            }
            .into())
        })
    }

    /// Whether this build multiplies and adds with relaxed SIMD's fused multiply-add (the
    /// `*-threads-relaxed` builds; `simd_lanes`), which only engines with relaxed SIMD load.
    #[wasm_bindgen(js_name = relaxedSimd)]
    pub fn relaxed_simd() -> bool {
        cfg!(target_feature = "relaxed-simd")
    }

    /// The module's linear memory in bytes. It only ever grows, so after a job it is that job's
    /// peak (with everything the module held before); GPU memory is not in it.
    #[wasm_bindgen(js_name = memoryBytes)]
    pub fn memory_bytes() -> f64 {
        #[cfg(target_arch = "wasm32")]
        return core::arch::wasm32::memory_size::<0>() as f64 * 65536.0;
        #[cfg(not(target_arch = "wasm32"))]
        0.0
    }

    /// Why this module's WebGPU device can no longer be used (lost, out of memory); undefined while
    /// it is sound. After a fault, WebGPU trainers fail their next read with it and new `"auto"`
    /// trainers start on the CPU.
    #[wasm_bindgen(js_name = gpuFault)]
    pub fn gpu_fault() -> Option<String> {
        crate::fault::fault()
    }

    /// Whether this build can train on WebGPU at all.
    #[wasm_bindgen(js_name = hasWebGpu)]
    pub fn has_webgpu() -> bool {
        cfg!(feature = "webgpu")
    }

    /// The backend actually in use: `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.into()
    }

    /// Why an `"auto"` trainer runs on the CPU (e.g. "no WebGPU adapter"); undefined otherwise.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback.clone()
    }

    /// Whether `precision: "fp16"` jobs run in mixed precision here (WebGPU with `shader-f16`);
    /// elsewhere they run in float32, and their report says `precision: "fp32"`.
    #[wasm_bindgen(getter)]
    pub fn fp16(&self) -> Result<bool, JsValue> {
        let engine = self.engine.read()?;
        Ok(on_learner!(&*engine, l => l.half))
    }

    /// On WebGPU, the GPU memory Burn's allocator holds: `{bytesInUse, bytesReserved,
    /// peakBytesReserved}`, the peak since the last `train` began; `null` on the CPU.
    #[wasm_bindgen(js_name = gpuMemory, unchecked_return_type = "{ bytesInUse: number; bytesReserved: number; peakBytesReserved: number } | null")]
    pub fn gpu_memory(&self) -> Result<JsValue, JsValue> {
        let engine = self.engine.read()?;
        Ok(engine
            .gpu_memory()
            .map_or(JsValue::NULL, js::gpu_memory_report))
    }

    /// Load global weights: safetensors bytes with PyTorch names and shapes.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, bytes: &[u8]) -> Result<(), JsValue> {
        let mut engine = self.engine.write()?;
        on_learner!(&mut *engine, l => l.load(bytes)).map_err(js::error)
    }

    /// Train on `x` (Float32Array, N × input values) and `y` (Int32Array of N labels, or a
    /// Float32Array of N targets for a regression),
    /// checkpointing and resuming as `checkpoints` says.
    #[wasm_bindgen(unchecked_return_type = "Promise<TrainReport>")]
    pub fn train(
        &self,
        x: Float32Array,
        #[wasm_bindgen(unchecked_param_type = "Int32Array | Float32Array")] y: JsValue,
        #[wasm_bindgen(unchecked_param_type = "TrainOptions")] options: JsValue,
        #[wasm_bindgen(js_name = onBatch, unchecked_param_type = "OnBatch | undefined")]
        on_batch: Option<Function>,
        #[wasm_bindgen(unchecked_param_type = "Checkpoints | undefined")] checkpoints: JsValue,
    ) -> Promise {
        let shared = self.engine.clone();
        future_to_promise(async move {
            let config = js::training_config(&options).map_err(js::error)?;
            let hooks = js::checkpoint_hooks(&checkpoints).map_err(js::error)?;
            let mut engine = shared.write()?;
            engine.gpu_job_started();
            let mut callback = js::on_batch(on_batch);
            let report = on_learner!(&mut *engine, l => {
                let (xs, ys) = js::examples(&x, &y)?;
                let data = l.dataset(xs, ys).map_err(js::error)?;
                let hooks = hooks.as_ref().map(js::CheckpointHooks::hooks);
                l.train(&data, &config, &mut callback, hooks).await.map_err(js::error)?
            });
            Ok(js::train_report(report))
        })
    }

    /// The spec's mean loss and accuracy (null for a regression) on `x`, `y`, in inference mode.
    #[wasm_bindgen(unchecked_return_type = "Promise<EvalReport>")]
    pub fn evaluate(
        &self,
        x: Float32Array,
        #[wasm_bindgen(unchecked_param_type = "Int32Array | Float32Array")] y: JsValue,
    ) -> Promise {
        let shared = self.engine.clone();
        future_to_promise(async move {
            let engine = shared.read()?;
            let report = on_learner!(&*engine, l => {
                let (xs, ys) = js::examples(&x, &y)?;
                let data = l.dataset(xs, ys).map_err(js::error)?;
                l.evaluate(&data).await.map_err(js::error)?
            });
            Ok(js::eval_report(report))
        })
    }

    /// trained − global as safetensors; optionally clipped to global L2 norm `clip`, then
    /// noised with N(0, noiseStd²) from a cryptographically seeded generator, and sent in
    /// `encoding` ("fp32" when undefined, "fp16", or "int8" rounded stochastically; SPEC §2.1).
    #[wasm_bindgen(unchecked_return_type = "Promise<DeltaReport>")]
    pub fn delta(
        &self,
        clip: Option<f64>,
        #[wasm_bindgen(js_name = noiseStd)] noise_std: Option<f64>,
        #[wasm_bindgen(unchecked_param_type = "\"fp32\" | \"fp16\" | \"int8\" | undefined")]
        encoding: Option<String>,
    ) -> Promise {
        let shared = self.engine.clone();
        future_to_promise(async move {
            let encoding = encoding
                .map_or(Ok(Encoding::Fp32), |e| Encoding::parse(&e))
                .map_err(js::error)?;
            let engine = shared.read()?;
            let out = on_learner!(&*engine, l => l
                .delta(clip, noise_std, encoding)
                .await
                .map_err(js::error)?);
            Ok(js::delta_report(out))
        })
    }

    /// The current weights as safetensors with PyTorch names.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn weights(&self) -> Promise {
        let shared = self.engine.clone();
        future_to_promise(async move {
            let engine = shared.read()?;
            let bytes = on_learner!(&*engine, l => l.weights().await.map_err(js::error)?);
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }
}

/// The PyTorch-parity harness's view of a model: built like a `Trainer` (`new` for the CPU,
/// `create` for any backend), it loads weights and answers with logits and gradients,
/// which training never needs.
#[wasm_bindgen]
pub struct ParityProbe {
    engine: Shared<Engine>,
    backend: &'static str,
}

#[wasm_bindgen]
impl ParityProbe {
    /// A CPU probe from a model-spec JSON string (`backend`: `"cpu"`).
    #[wasm_bindgen(constructor)]
    pub fn new(spec_json: &str, backend: &str) -> Result<ParityProbe, JsValue> {
        let spec = ModelSpec::from_json(spec_json).map_err(js::error)?;
        let engine = Engine::start_now(spec, backend).map_err(js::error)?;
        Ok(ParityProbe {
            backend: engine.name(),
            engine: Shared::new(engine),
        })
    }

    /// A probe on `"cpu"`, `"webgpu"` or `"auto"`, started as `Trainer.create` starts one.
    #[wasm_bindgen(unchecked_return_type = "Promise<ParityProbe>")]
    pub fn create(
        #[wasm_bindgen(js_name = specJson)] spec_json: String,
        #[wasm_bindgen(unchecked_param_type = "\"cpu\" | \"webgpu\" | \"auto\"")] backend: String,
    ) -> Promise {
        future_to_promise(async move {
            let spec = ModelSpec::from_json(&spec_json).map_err(js::error)?;
            let started = Engine::start(spec, &backend).await.map_err(js::error)?;
            Ok(ParityProbe {
                backend: started.engine.name(),
                engine: Shared::new(started.engine),
            }
            .into())
        })
    }

    /// The backend in use: `"cpu"` or `"webgpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.into()
    }

    /// Load weights: safetensors bytes with PyTorch names and shapes.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, bytes: &[u8]) -> Result<(), JsValue> {
        let mut engine = self.engine.write()?;
        on_learner!(&mut *engine, l => l.load(bytes)).map_err(js::error)
    }

    /// Logits for `x`. `train`: dropout and batch statistics on.
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn forward(&self, x: Float32Array, train: bool) -> Promise {
        let shared = self.engine.clone();
        future_to_promise(async move {
            let engine = shared.read()?;
            let logits = on_learner!(&*engine, l => l.forward(js::images(&x)?, train).await.map_err(js::error)?);
            Ok(Float32Array::from(logits.as_slice()).into())
        })
    }

    /// Gradients of the mean cross-entropy over all of `x`, `y`, as PyTorch-named safetensors.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn gradients(
        &self,
        x: Float32Array,
        #[wasm_bindgen(unchecked_param_type = "Int32Array | Float32Array")] y: JsValue,
    ) -> Promise {
        let shared = self.engine.clone();
        future_to_promise(async move {
            let engine = shared.read()?;
            let bytes = on_learner!(&*engine, l => {
                let (xs, ys) = js::examples(&x, &y)?;
                let data = l.dataset(xs, ys).map_err(js::error)?;
                l.gradients(&data).await.map_err(js::error)?
            });
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }
}
