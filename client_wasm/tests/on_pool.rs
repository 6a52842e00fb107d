//! A training step goes onto rayon's pool only when it does parallel work (`batch_split::on_pool`),
//! and runs where it is when it is already on the pool. Native threads stand in for the workers
//! a host starts in the threaded build.
#![cfg(feature = "threads")]

use pollen_trainer::batch_split::on_pool;

#[test]
fn a_parallel_step_runs_on_the_pool_and_any_other_on_the_calling_thread() {
    // A pool of two whatever the machine's cores (the first global pool stays for the process).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global();
    assert_eq!(rayon::current_num_threads(), 2);
    assert_eq!(
        rayon::current_thread_index(),
        None,
        "the test runs on the host's thread"
    );
    assert_eq!(on_pool(false, rayon::current_thread_index), None);
    assert!(on_pool(true, rayon::current_thread_index).is_some());
    let (outer, inner) = rayon::scope(|_| {
        let outer = rayon::current_thread_index();
        (outer, on_pool(true, rayon::current_thread_index))
    });
    assert!(outer.is_some());
    assert_eq!(
        inner, outer,
        "a step already on the pool stays on its thread"
    );
}
