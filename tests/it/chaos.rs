//! The CI chaos soak (issue 14): three minutes of a seeded stream of tasks
//! and faults against a real cluster and `dts up`, then the independent
//! checker (crates/dts-chaos). Longer runs: `cargo run -p dts-chaos --
//! --minutes 60 --seed N` (docs/reliability.md).

use crate::common::dts_binary;

/// The CI seed: a violation names it, and `dts-chaos --minutes 3 --seed
/// 14` replays the same workload and fault schedule.
const SEED: u64 = 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_of_three_minutes_loses_nothing_and_counts_nothing_twice() {
    let config = dts_chaos::Config::for_minutes(dts_binary().into(), SEED, 3, false);
    let report = dts_chaos::run(&config)
        .await
        .expect("the soak's cluster starts");
    let table = report.markdown();
    eprintln!("{table}");
    // Work ran, faults happened, and every check held.
    assert!(report.checked.tasks >= 50, "{table}");
    assert!(report.checked.starts >= 1000, "{table}");
    assert!(report.faults.len() >= 8, "{table}");
    assert_eq!(report.checked.violations, Vec::<String>::new(), "{table}");
}
