//! Pollen's local trainer: Burn models built from the protocol's JSON layer spec, trained on
//! the CPU (burn-flex, SIMD128 on wasm) or on WebGPU (the `webgpu` feature), and exported as
//! PyTorch-named safetensors deltas.
//!
//! `bindings` is the JavaScript API (wasm-bindgen); everything else is plain Rust, tested natively.

pub mod data;
pub mod error;
pub mod memory;
pub mod model;
pub mod noise;
pub mod session;
pub mod spec;
pub mod training;
pub mod weights;

mod bindings;
mod webgpu;

pub use bindings::Trainer;
