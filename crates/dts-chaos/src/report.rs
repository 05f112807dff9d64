//! The soak's report: a markdown table of what ran, what was injected and
//! what broke, and, when something broke, the seed and the whole fault
//! schedule for a replay.

use crate::checker::Checked;
use crate::cluster::Cluster;
use crate::faults::{FaultKind, FaultRecord};
use crate::probe::Silence;
use crate::workload::TaskPlan;
use crate::{Config, Shared};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A finished soak.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// How long the stream ran, in seconds.
    pub seconds: u64,
    /// Tasks planned and accepted.
    pub planned: usize,
    /// What the checker found.
    pub checked: Checked,
    /// Planned tasks no API accepted.
    pub refused: usize,
    /// Every fault, in the order they ended.
    pub faults: Vec<FaultRecord>,
    /// Planned faults skipped (their target was busy).
    pub faults_skipped: usize,
    /// Faults a service would not take, with why.
    pub faults_refused: Vec<String>,
    /// The longest silence of each API.
    pub longest_silence: BTreeMap<String, Silence>,
    /// Why the root-only faults were not injected, if they were not.
    pub root_faults_absent: Option<String>,
    /// Full disks injected (root).
    pub full_disk: bool,
    /// Partitions injected (root).
    pub partitions: bool,
    /// Where the nodes' logs are.
    pub logs: String,
}

impl Report {
    /// Gathers the figures.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        config: &Config,
        shared: &Shared,
        plans: &[TaskPlan],
        checked: Checked,
        silences: Vec<Silence>,
        cluster: &Cluster,
        root_faults_absent: Option<String>,
    ) -> Report {
        let state = shared.lock();
        let mut faults = state.faults.clone();
        faults.sort_by_key(|f| f.start_ms);
        let mut longest_silence: BTreeMap<String, Silence> = BTreeMap::new();
        for silence in silences {
            let entry = longest_silence
                .entry(silence.api.clone())
                .or_insert(silence.clone());
            if silence.ms() > entry.ms() {
                *entry = silence;
            }
        }
        Report {
            seed: config.seed,
            seconds: config.length.as_secs(),
            planned: plans.len(),
            checked,
            refused: state.refused,
            faults,
            faults_skipped: state.faults_skipped,
            faults_refused: state.faults_refused.clone(),
            longest_silence,
            root_faults_absent,
            full_disk: cluster.small_disk.is_some(),
            partitions: cluster.partitions.is_some(),
            logs: cluster.dir.display().to_string(),
        }
    }

    /// Whether nothing broke.
    pub fn passed(&self) -> bool {
        self.checked.violations.is_empty()
    }

    /// The markdown table, and after it the violations, the seed and the
    /// fault schedule when there are any.
    pub fn markdown(&self) -> String {
        let c = &self.checked;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| dts-chaos, seed {}, {} s of stream | |",
            self.seed, self.seconds
        );
        let _ = writeln!(out, "|---|---|");
        let statuses: Vec<String> = c
            .by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        let _ = writeln!(
            out,
            "| tasks | {} accepted of {} planned ({}); {} refused while every API was down |",
            c.tasks,
            self.planned,
            statuses.join(", "),
            self.refused
        );
        let _ = writeln!(
            out,
            "| items | {} results, {} starts |",
            c.results, c.starts
        );
        for kind in FaultKind::ALL {
            let n = self.faults.iter().filter(|f| f.kind == kind).count();
            let note = match kind {
                FaultKind::PartitionRedis | FaultKind::PartitionBroker if !self.partitions => {
                    " (off: needs root for network namespaces)".to_string()
                }
                FaultKind::FullDisk if !self.full_disk => {
                    " (off: needs root for a tmpfs)".to_string()
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "| faults: {kind} | {n}{note} |");
        }
        let _ = writeln!(
            out,
            "| faults skipped (target busy) | {} |",
            self.faults_skipped
        );
        if !self.faults_refused.is_empty() {
            let _ = writeln!(
                out,
                "| faults refused by the service (not injected) | {}: {} |",
                self.faults_refused.len(),
                self.faults_refused.join("; ")
            );
        }
        let _ = writeln!(out, "| violations | {} |", c.violations.len());
        if !c.missing_events.is_empty() {
            let missing: Vec<String> = c
                .missing_events
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            let _ = writeln!(
                out,
                "| tasks without their completion event | {} |",
                missing.join(", ")
            );
        }
        let silence = self
            .longest_silence
            .values()
            .max_by_key(|s| s.ms())
            .map(|s| {
                format!(
                    "{:.1} s ({}, from {} to {})",
                    s.ms() as f64 / 1000.0,
                    s.api,
                    s.from_ms,
                    s.to_ms
                )
            })
            .unwrap_or_else(|| "none over 1 s".to_string());
        let _ = writeln!(out, "| longest API unavailability | {silence} |");
        let _ = writeln!(
            out,
            "| longest time from a fault to work resuming | {} |",
            c.longest_resume
                .as_ref()
                .map(|(ms, fault)| format!("{:.1} s (after {fault})", *ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".to_string())
        );
        if !self.passed() {
            let _ = writeln!(out, "\n## Violations (seed {})\n", self.seed);
            for v in &c.violations {
                let _ = writeln!(out, "- {v}");
            }
            let _ = writeln!(
                out,
                "\n## Fault schedule (replay: `dts-chaos --minutes {} --seed {}`)\n",
                self.seconds.div_ceil(60),
                self.seed
            );
            for f in &self.faults {
                let _ = writeln!(out, "- {f}");
            }
            let _ = writeln!(out, "\nThe nodes' logs: {}", self.logs);
        }
        out
    }
}
