//! Finding and starting WebGPU. Burn's wgpu runtime panics when no adapter exists, and a
//! panic in this `panic = "abort"` module would kill it, so we ask the JS runtime for an
//! adapter ourselves first and only then hand the device to Burn.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Why WebGPU cannot be used here, in words for people; `Ok(())` when an adapter answered.
pub async fn find_adapter() -> Result<(), String> {
    // A field that is there: neither undefined nor null.
    let field = |of: &JsValue, name: &str| {
        Reflect::get(of, &JsValue::from_str(name))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    let gpu = field(&js_sys::global(), "navigator")
        .and_then(|navigator| field(&navigator, "gpu"))
        .ok_or("no WebGPU in this runtime (navigator.gpu is missing)")?;
    let request = field(&gpu, "requestAdapter")
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or("navigator.gpu.requestAdapter is not a function")?;
    let promise = request
        .call0(&gpu)
        .ok()
        .and_then(|p| p.dyn_into::<Promise>().ok())
        .ok_or("navigator.gpu.requestAdapter() threw")?;
    match JsFuture::from(promise).await {
        Ok(adapter) if !adapter.is_null() && !adapter.is_undefined() => Ok(()),
        Ok(_) => Err("no WebGPU adapter".into()),
        Err(e) => Err(format!("requestAdapter failed: {e:?}")),
    }
}

#[cfg(feature = "webgpu")]
mod device {
    use std::cell::Cell;

    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics, init_setup_async};

    thread_local! {
        // One wgpu device per module: every trainer shares it, as Burn expects.
        static STARTED: Cell<bool> = const { Cell::new(false) };
    }

    /// The default WebGPU device, initialised on first use (async, as wasm requires).
    pub async fn start() -> Result<WgpuDevice, String> {
        super::find_adapter().await?;
        let device = WgpuDevice::default();
        if !STARTED.get() {
            init_setup_async::<graphics::WebGpu>(&device, RuntimeOptions::default()).await;
            STARTED.set(true);
        }
        Ok(device)
    }
}

#[cfg(feature = "webgpu")]
pub use device::start;
