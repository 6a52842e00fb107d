//! Pollen's local trainer: Burn models built from the protocol's JSON layer spec, trained on
//! the CPU (burn-flex, SIMD128 on wasm) or on WebGPU (the `webgpu` feature), and exported as
//! PyTorch-named safetensors deltas.
//!
//! `bindings` is the JavaScript API (wasm-bindgen), `js` and `engine` its glue; everything else
//! is plain Rust, tested natively.

pub mod activations;
pub mod augment;
pub mod batch_split;
pub mod checkpoint;
pub mod config;
pub mod conv_gemm;
pub mod cpu_conv;
pub mod cpu_conv_op;
pub mod cpu_gemm;
pub mod cpu_linear_op;
pub mod cpu_pool;
pub mod cpu_pool_op;
pub mod cpu_relu_op;
pub mod data;
pub mod encoder;
pub mod encoding;
pub mod error;
pub mod evaluation;
pub mod fault;
pub mod flex_backend;
pub mod layer_spec;
pub mod learner;
pub mod memory;
pub mod model;
pub mod norm;
pub mod objective;
pub mod optim_state;
pub mod params;
pub mod precision;
pub mod privacy;
pub mod schedule;

pub mod shapes;
pub mod simd_lanes;
pub mod spec;
pub mod training;
pub mod weights;

mod bindings;
mod engine;
mod js;
mod probe;
#[cfg(feature = "threads")]
mod threads;
mod webgpu;

pub use bindings::{ParityProbe, Trainer};
#[cfg(feature = "threads")]
pub use threads::{ThreadPool, cpu_threads, run_pool_thread, shared_memory, shared_module};
