//! A time-boxed proptest runner for the fuzz targets of dts-model and dts-api.
//!
//! Each target runs for `DTS_FUZZ_SECS` seconds (3 by default, so CI stays
//! fast) and prints how many cases it ran; a long run sets a larger value.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// How long each target runs: `DTS_FUZZ_SECS`, or 3 s.
fn budget() -> Duration {
    let secs = std::env::var("DTS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Runs `test` on values from `strategy` until the budget is spent; a failure
/// (or panic) is shrunk by proptest and reported with the smallest input.
pub fn fuzz<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let start = Instant::now();
    let cases = AtomicU64::new(0);
    let config = Config {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 10_000,
        ..Config::default()
    };
    // ends: when the budget is spent.
    while start.elapsed() < budget {
        // A fresh runner per batch: each has its own random seed.
        let mut runner = TestRunner::new(config.clone());
        let result = runner.run(&strategy, |value| {
            cases.fetch_add(1, Ordering::Relaxed);
            test(value)
        });
        if let Err(e) = result {
            panic!(
                "fuzz target {target} failed after {} cases: {e}",
                cases.load(Ordering::Relaxed)
            );
        }
    }
    let n = cases.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz {target}: {n} cases in {secs:.1} s ({:.0}/s), no failure",
        n as f64 / secs
    );
}
