//! The backend a trainer runs on: the choice JavaScript names, and the learner on that backend.
//! Burn's backends are types, so a learner on one or the other is an enum, and the macro
//! `on_learner!` runs the same code on whichever it holds.

use burn::backend::{Autodiff, Flex};

use crate::error::TrainerError;
use crate::learner::Learner;
use crate::spec::ModelSpec;

pub type Cpu = Autodiff<Flex>;
#[cfg(feature = "webgpu")]
pub type Gpu = Autodiff<burn::backend::WebGpu>;

/// The backend JavaScript asks for: `"cpu"` (or its old name `"wasm-cpu"`), `"webgpu"`, `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackendChoice {
    Cpu,
    WebGpu,
    Auto,
}

impl BackendChoice {
    pub fn parse(name: &str) -> Option<BackendChoice> {
        match name {
            "cpu" | "wasm-cpu" => Some(BackendChoice::Cpu),
            "webgpu" => Some(BackendChoice::WebGpu),
            "auto" => Some(BackendChoice::Auto),
            _ => None,
        }
    }
}

/// How many steps a WebGPU job runs between reads of its losses.
#[cfg(feature = "webgpu")]
const GPU_READ_EVERY: usize = 16;

/// A learner on whichever backend it started on.
pub enum Engine {
    Cpu(Learner<Cpu>),
    #[cfg(feature = "webgpu")]
    Gpu(Learner<Gpu>),
}

/// Run `$body` with `$l` bound to the engine's learner, whatever its backend.
macro_rules! on_learner {
    ($engine:expr, $l:ident => $body:expr) => {
        match $engine {
            $crate::engine::Engine::Cpu($l) => $body,
            #[cfg(feature = "webgpu")]
            $crate::engine::Engine::Gpu($l) => $body,
        }
    };
}
pub(crate) use on_learner;

/// A started engine and, when `"auto"` fell back to the CPU, why.
pub struct Started {
    pub engine: Engine,
    pub fallback: Option<String>,
}

impl Engine {
    /// `"cpu"` or `"webgpu"`: what JavaScript reads back as `backend`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu",
            #[cfg(feature = "webgpu")]
            Engine::Gpu(_) => "webgpu",
        }
    }

    /// A WebGPU engine's GPU memory as Burn's allocator counts it: bytes in use, bytes reserved,
    /// and the most reserved since the last training job began (sampled at every read from the
    /// GPU, and now). `None` on the CPU.
    pub fn gpu_memory(&self) -> Option<[u64; 3]> {
        match self {
            #[cfg(feature = "webgpu")]
            Engine::Gpu(_) => {
                let (used, reserved) = crate::webgpu::memory()?;
                Some([used, reserved, crate::webgpu::peak().max(reserved)])
            }
            _ => None,
        }
    }

    /// Start of a job: its GPU memory peak starts from what is reserved now (nothing on the CPU).
    pub fn gpu_job_started(&self) {
        #[cfg(feature = "webgpu")]
        if let Engine::Gpu(_) = self {
            crate::webgpu::reset_peak();
        }
    }

    /// Start without waiting, which only the CPU can: WebGPU's device starts asynchronously.
    pub fn start_now(spec: ModelSpec, backend: &str) -> Result<Engine, TrainerError> {
        match BackendChoice::parse(backend) {
            Some(BackendChoice::Cpu) => Engine::cpu(spec),
            Some(BackendChoice::WebGpu) => Err(TrainerError::Backend(
                "WebGPU initialises asynchronously: use `await Trainer.create(spec, \"webgpu\")`"
                    .into(),
            )),
            Some(BackendChoice::Auto) | None => Err(TrainerError::Backend(format!(
                "unknown backend {backend:?}: use \"cpu\" or \"webgpu\""
            ))),
        }
    }

    /// Start on `backend`; `"auto"` falls back to the CPU, `"webgpu"` fails instead.
    pub async fn start(spec: ModelSpec, backend: &str) -> Result<Started, TrainerError> {
        let started = |engine| Started {
            engine,
            fallback: None,
        };
        match BackendChoice::parse(backend) {
            Some(BackendChoice::Cpu) => Engine::cpu(spec).map(started),
            Some(BackendChoice::WebGpu) => Engine::webgpu(spec)
                .await
                .map(started)
                .map_err(|why| TrainerError::Backend(format!("WebGPU unavailable: {why}"))),
            Some(BackendChoice::Auto) => match Engine::webgpu(spec.clone()).await {
                Ok(engine) => Ok(started(engine)),
                Err(reason) => Ok(Started {
                    engine: Engine::cpu(spec)?,
                    fallback: Some(reason),
                }),
            },
            None => Err(TrainerError::Backend(format!(
                "unknown backend {backend:?}: use \"cpu\", \"webgpu\" or \"auto\""
            ))),
        }
    }

    fn cpu(spec: ModelSpec) -> Result<Engine, TrainerError> {
        Ok(Engine::Cpu(Learner::new(spec, Default::default())?))
    }

    /// WebGPU, or why not, in words for people.
    #[cfg(feature = "webgpu")]
    async fn webgpu(spec: ModelSpec) -> Result<Engine, String> {
        let (device, half) = crate::webgpu::start().await?;
        let mut learner = Learner::new(spec, device).map_err(|e| e.to_string())?;
        learner.read_every = GPU_READ_EVERY;
        learner.half = half;
        learner.lower_convolutions();
        Ok(Engine::Gpu(learner))
    }

    #[cfg(not(feature = "webgpu"))]
    async fn webgpu(_: ModelSpec) -> Result<Engine, String> {
        // Say whether an adapter exists, so a page on this build can tell people what they miss.
        crate::webgpu::find_adapter().await?;
        Err("WebGPU adapter found, but this build has no WebGPU backend".into())
    }
}
