//! The CPU backend's thread pool, in the threaded build (`--features threads`, compiled with
//! atomics and shared memory).
//!
//! Burn's CPU backend splits its convolutions, pooling and large matrix products over rayon's
//! global pool. WebAssembly cannot start a thread itself: the host starts workers (Web Workers
//! in a page, `worker_threads` under Node), each instantiates this module on the same memory
//! and calls [`run_pool_thread`], which blocks until rayon hands it a thread's loop. The host
//! then calls [`ThreadPool::start`], which builds rayon's global pool over those workers.
//!
//! ```js
//! const pool = new ThreadPool(n);
//! // in each of n workers, given sharedModule() and sharedMemory():
//! //   initSync({ module, memory }); runPoolThread(pool.handOut())
//! pool.start();  // once every worker is instantiated; before the first Trainer
//! ```
//!
//! Without a pool (one thread), rayon runs everything on the calling thread, as fast as the
//! single-threaded build; a pool of one would only add a hand-over per parallel operation.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use rayon::ThreadBuilder;
use wasm_bindgen::prelude::*;

type Threads = Mutex<Receiver<ThreadBuilder>>;

/// Builds rayon's global pool from threads the host starts (see the module's docs).
#[wasm_bindgen]
pub struct ThreadPool {
    threads: usize,
    sender: Sender<ThreadBuilder>,
    receiver: Arc<Threads>,
}

#[wasm_bindgen]
impl ThreadPool {
    /// A pool of `threads` workers (at least 1), not started yet.
    #[wasm_bindgen(constructor)]
    pub fn new(threads: usize) -> ThreadPool {
        let (sender, receiver) = channel();
        ThreadPool {
            threads: threads.max(1),
            sender,
            receiver: Arc::new(Mutex::new(receiver)),
        }
    }

    /// The token one worker passes to `runPoolThread`: call once per worker. Each token owns
    /// a reference to the pool's queue, so the queue outlives this object.
    #[wasm_bindgen(js_name = handOut)]
    pub fn hand_out(&self) -> usize {
        Arc::into_raw(Arc::clone(&self.receiver)) as usize
    }

    /// Build rayon's global pool over the workers. Throws if a pool was already built (one
    /// per module instance), since rayon's global pool cannot be replaced.
    pub fn start(&self) -> Result<(), JsError> {
        let sender = self.sender.clone();
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(|i| format!("pollen-cpu-{i}"))
            .spawn_handler(move |thread| {
                sender
                    .send(thread)
                    .map_err(|_| std::io::Error::other("the pool's queue is gone"))
            })
            .build_global()
            .map_err(|e| JsError::new(&format!("cannot start the trainer's threads: {e}")))
    }
}

/// A worker's whole life: wait for rayon's thread loop and run it. Never returns while the
/// pool lives; `token` is one `ThreadPool.handOut()`, used once.
#[wasm_bindgen(js_name = runPoolThread)]
pub fn run_pool_thread(token: usize) -> Result<(), JsError> {
    // Safety: `token` came from `hand_out`, which leaked one strong count for this call.
    let threads = unsafe { Arc::from_raw(token as *const Threads) };
    let thread = threads
        .lock()
        .map_err(|_| JsError::new("the pool's queue is poisoned"))?
        .recv()
        .map_err(|_| JsError::new("the pool was dropped before it started"))?;
    drop(threads);
    thread.run();
    Ok(())
}

/// Fault injection, for tests of the hosts: panic on one of the pool's threads while the calling
/// thread waits for it, as a bug in a parallel kernel would. In this `panic = "abort"` module
/// that thread traps (after the panic hook has told its host) and the caller waits for good:
/// the host must notice and replace the trainer (client_web's pool-thread scripts). Throws
/// without a pool, where the panic would trap the calling thread instead.
#[wasm_bindgen(js_name = crashPoolThread)]
pub fn crash_pool_thread() -> Result<(), JsError> {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        return Err(JsError::new(
            "no pool to crash: call from outside a started pool of 2 or more",
        ));
    }
    crate::fault::report_panics();
    rayon::scope(|scope| scope.spawn(|_| panic!("a fault injected on a pool thread")));
    Ok(())
}

/// This instance's compiled module, for the pool's workers to instantiate.
#[wasm_bindgen(js_name = sharedModule)]
pub fn shared_module() -> JsValue {
    wasm_bindgen::module()
}

/// This instance's shared memory, for the pool's workers to instantiate on.
#[wasm_bindgen(js_name = sharedMemory)]
pub fn shared_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// Threads the CPU backend runs on: rayon's pool size (1 before a pool is started).
#[wasm_bindgen(js_name = cpuThreads)]
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}
