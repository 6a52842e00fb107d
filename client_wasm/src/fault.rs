//! What went wrong with the GPU, and what a panic said, told to JavaScript instead of lost.
//!
//! A WebGPU device can be lost mid-job (a driver reset, the browser reclaiming the GPU, the
//! page's `device.destroy()`), or run out of memory. wgpu's default answer to a WebGPU error
//! nobody scoped is a panic, and Burn's runtime panics when a read cannot map its buffer; in this
//! `panic = "abort"` module a panic traps and kills the whole instance, and every promise then
//! pending on it would never settle. So:
//!
//! * the device's loss and its uncaught errors are recorded here (`watch`), never panicked on;
//! * once the browser has reported a fault, every WebGPU read fails with it (`before_read`): the
//!   job rejects with the reason and the module lives on, on the CPU for the next job. (Waiting
//!   for a timer before each read, to catch a loss reported meanwhile, cost up to a tenth of the
//!   speed at small batches on an H100 and still missed a loss mid-job in Chromium.)
//! * a panic that happens anyway (a loss while a read is in flight) is handed, with the recorded
//!   fault, to `globalThis.pollenTrainerPanic(message)` before the module traps, so the JS side
//!   can reject what was pending and start a fresh instance (`client_web/src/trainer-guard.js`).

use std::sync::{Mutex, Once};

use crate::error::{Result, TrainerError};

static FAULT: Mutex<Option<String>> = Mutex::new(None);

/// Why the GPU can no longer be trusted; None while nothing went wrong.
pub fn fault() -> Option<String> {
    FAULT.lock().ok().and_then(|f| f.clone())
}

/// Record the first fault: a lost device then errs on everything, and the cause is the loss.
pub fn record(what: String) {
    if let Ok(mut fault) = FAULT.lock() {
        fault.get_or_insert(what);
    }
}

/// Ok while the GPU is sound; the recorded fault as an error otherwise.
pub fn healthy() -> Result<()> {
    fault().map_or(Ok(()), |why| Err(TrainerError::Backend(why)))
}

/// Before a read from a tensor of backend `B`: a WebGPU read fails with the recorded fault, if any.
/// The CPU backend is never at fault: after a GPU fault the same module trains on, on the CPU.
pub fn before_read<B: burn::tensor::backend::Backend>() -> Result<()> {
    #[cfg(feature = "webgpu")]
    if std::any::type_name::<B::Device>()
        == std::any::type_name::<burn::backend::wgpu::WgpuDevice>()
    {
        // Every read is also where a job's GPU memory peak is sampled (`webgpu::note_memory`).
        crate::webgpu::note_memory();
        return healthy();
    }
    Ok(())
}

/// Record `device`'s loss and its uncaught errors instead of wgpu's default (a panic).
#[cfg(feature = "webgpu")]
pub fn watch(device: &wgpu::Device) {
    device.set_device_lost_callback(|reason, message| {
        record(format!(
            "the WebGPU device was lost ({reason:?}): {message}"
        ));
    });
    device.on_uncaptured_error(std::sync::Arc::new(|error: wgpu::Error| {
        record(match error {
            wgpu::Error::OutOfMemory { .. } => "the GPU ran out of memory".to_string(),
            other => format!("WebGPU error: {other}"),
        });
    }));
}

/// Hand every panic's message to JavaScript before the module traps (see the module's docs).
pub fn report_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let mut message = format!("the trainer stopped: {info}");
            if let Some(why) = fault() {
                message = format!("{message} ({why})");
            }
            tell_js(&message);
        }));
    });
}

#[cfg(target_arch = "wasm32")]
fn tell_js(message: &str) {
    use js_sys::{Function, Reflect};
    use wasm_bindgen::{JsCast, JsValue};
    let function = |of: &JsValue, name: &str| {
        Reflect::get(of, &JsValue::from_str(name))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
    };
    let global = js_sys::global();
    // Nobody watching: the console at least says why the module is about to trap.
    let console = Reflect::get(&global, &JsValue::from_str("console")).unwrap_or_default();
    let (call, this) = match function(&global, "pollenTrainerPanic") {
        Some(hook) => (Some(hook), JsValue::UNDEFINED),
        None => (function(&console, "error"), console),
    };
    if let Some(call) = call {
        let _ = call.call1(&this, &JsValue::from_str(message));
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn tell_js(message: &str) {
    eprintln!("{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_is_kept_and_fails_every_check() {
        assert!(healthy().is_ok());
        record("the WebGPU device was lost (Destroyed): gone".into());
        record("WebGPU error: a consequence".into());
        let err = healthy().unwrap_err().to_string();
        assert!(err.contains("lost (Destroyed): gone"), "{err}");
        assert!(!err.contains("consequence"));
        *FAULT.lock().unwrap() = None;
    }
}
