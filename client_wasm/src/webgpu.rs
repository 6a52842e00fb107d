//! Finding and starting WebGPU. Burn's wgpu runtime panics when no adapter exists or the adapter
//! refuses a device, and a panic in this `panic = "abort"` module would kill it, so we ask the JS
//! runtime for an adapter and a device ourselves first and only then let Burn start its own.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Why WebGPU cannot be used here, in words for people; the adapter when one answered.
pub async fn find_adapter() -> Result<JsValue, String> {
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
        Ok(adapter) if !adapter.is_null() && !adapter.is_undefined() => Ok(adapter),
        Ok(_) => Err("no WebGPU adapter".into()),
        Err(e) => Err(format!("requestAdapter failed: {e:?}")),
    }
}

/// Ask `adapter` for the device Burn will ask for (every feature, the adapter's own limits), and
/// let it go. Burn's request panics when the adapter refuses, which would abort this module, so
/// a refusal must be found here first, as an error to fall back on.
#[cfg(feature = "webgpu")]
async fn try_device(adapter: &JsValue) -> Result<(), String> {
    let get = |of: &JsValue, name: &str| Reflect::get(of, &JsValue::from_str(name)).ok();
    let failed = |e: JsValue| {
        let message = get(&e, "message").and_then(|m| m.as_string());
        format!(
            "the WebGPU device request failed: {}",
            message.unwrap_or_else(|| format!("{e:?}"))
        )
    };
    let features = get(adapter, "features")
        .map(|f| js_sys::Array::from(&f))
        .unwrap_or_default();
    let required = js_sys::Object::new();
    if let Some(limits) = get(adapter, "limits") {
        // A GPUSupportedLimits keeps its values behind getters on its prototype.
        let proto = js_sys::Object::get_prototype_of(&limits);
        for holder in [&limits, proto.as_ref()] {
            for key in Reflect::own_keys(holder)
                .map(|k| k.to_vec())
                .unwrap_or_default()
            {
                if let Some(value) = Reflect::get(&limits, &key)
                    .ok()
                    .filter(|v| v.as_f64().is_some())
                {
                    let _ = Reflect::set(&required, &key, &value);
                }
            }
        }
    }
    let descriptor = js_sys::Object::new();
    let _ = Reflect::set(&descriptor, &"requiredFeatures".into(), &features);
    let _ = Reflect::set(&descriptor, &"requiredLimits".into(), &required);
    let request = get(adapter, "requestDevice")
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or("the WebGPU adapter has no requestDevice")?;
    let promise = request
        .call1(adapter, &descriptor)
        .map_err(failed)?
        .dyn_into::<Promise>()
        .map_err(|_| "requestDevice() returned no Promise".to_string())?;
    let device = JsFuture::from(promise).await.map_err(failed)?;
    if let Some(destroy) = get(&device, "destroy").and_then(|f| f.dyn_into::<Function>().ok()) {
        let _ = destroy.call0(&device);
    }
    Ok(())
}

#[cfg(feature = "webgpu")]
mod device {
    use std::cell::Cell;

    use burn::backend::wgpu::{
        RuntimeOptions, WgpuDevice, WgpuRuntime, graphics, init_setup_async,
    };
    use cubecl::Runtime;

    thread_local! {
        // One wgpu device per module: every trainer shares it, as Burn expects.
        static STARTED: Cell<bool> = const { Cell::new(false) };
        // Whether that device computes in f16 (`shader-f16`, which Burn asks for when offered).
        static HALF: Cell<bool> = const { Cell::new(false) };
        // The most GPU memory Burn's allocator has held since `reset_peak`, in bytes.
        static PEAK: Cell<u64> = const { Cell::new(0) };
    }

    /// The GPU memory Burn's allocator holds now: (bytes in use, bytes reserved), `None` before
    /// the device started. Counted by the allocator, without a read from the GPU.
    pub fn memory() -> Option<(u64, u64)> {
        if !STARTED.get() {
            return None;
        }
        let usage = WgpuRuntime::client(&WgpuDevice::default())
            .memory_usage()
            .ok()?;
        Some((usage.bytes_in_use, usage.bytes_reserved))
    }

    /// Count the reserved memory now towards the peak.
    pub fn note_memory() {
        if let Some((_, reserved)) = memory() {
            PEAK.set(PEAK.get().max(reserved));
        }
    }

    /// Start a new peak from what is reserved now.
    pub fn reset_peak() {
        PEAK.set(0);
        note_memory();
    }

    /// The most reserved since `reset_peak`, as sampled by `note_memory`.
    pub fn peak() -> u64 {
        PEAK.get()
    }

    /// The default WebGPU device, initialised on first use (async, as wasm requires), and
    /// whether it has `shader-f16`.
    pub async fn start() -> Result<(WgpuDevice, bool), String> {
        let adapter = super::find_adapter().await?;
        // A device that was lost or failed stays so: later trainers go to the CPU, saying why.
        if let Some(why) = crate::fault::fault() {
            return Err(why);
        }
        let device = WgpuDevice::default();
        if !STARTED.get() {
            super::try_device(&adapter).await?;
            let setup =
                init_setup_async::<graphics::WebGpu>(&device, RuntimeOptions::default()).await;
            crate::fault::watch(&setup.device);
            HALF.set(setup.device.features().contains(wgpu::Features::SHADER_F16));
            STARTED.set(true);
        }
        Ok((device, HALF.get()))
    }
}

#[cfg(feature = "webgpu")]
pub use device::{memory, note_memory, peak, reset_peak, start};
