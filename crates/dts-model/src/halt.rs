//! GNU parallel's `--halt WHEN,fail=N`: a task's `halt` field, and the
//! `--halt` flag of `dts run` and `dts submit`, parsed by one function so a
//! task stops at the same failure wherever it runs.
//!
//! The store applies the threshold in the same atomic step that counts a
//! failure (docs/design-notes.md, "Halting"), so two workers recording
//! failures at once cannot both miss it.

use std::fmt;

/// When a task stops at failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Halt {
    /// Kill the running items (`now`), or let them finish (`soon`).
    pub now: bool,
    /// How many failures stop the task.
    pub threshold: Threshold,
}

/// How many failed items stop a task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// This many items failed (1 or more).
    Count(u64),
    /// At least this percentage of all the items failed (over 0, at most 100).
    Percent(f64),
}

/// What a `halt` value says is wrong with it: a sentence naming the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HaltError(pub String);

const USAGE: &str = "takes never, now,fail=N, soon,fail=N or soon,fail=N% (N% of the items)";

impl Halt {
    /// `never` or `0` (`None`: no halt), `now,fail=N`, `soon,fail=N`,
    /// `WHEN,fail=N%`, or parallel's old numbers 1 (`soon,fail=1`) and 2
    /// (`now,fail=1`). parallel's `success=` and `done=` are refused,
    /// naming the value.
    pub fn parse(text: &str) -> Result<Option<Halt>, HaltError> {
        let refuse = |what: String| Err(HaltError(what));
        let (when, condition) = match text {
            "0" | "never" => return Ok(None),
            "1" => return Ok(Some(Halt::count(false, 1))),
            "2" => return Ok(Some(Halt::count(true, 1))),
            _ => match text.split_once(',') {
                Some(parts) => parts,
                None => return refuse(format!("{text:?}: halt {USAGE}")),
            },
        };
        let now = match when {
            "now" => true,
            "soon" => false,
            other => return refuse(format!("{other:?} in {text:?}: halt {USAGE}")),
        };
        let Some(n) = condition.strip_prefix("fail=") else {
            return refuse(format!(
                "{condition:?} in {text:?}: only fail=N is supported (halt {USAGE})"
            ));
        };
        let threshold = match n.strip_suffix('%') {
            Some(percent) => match percent.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Threshold::Percent(p),
                _ => return refuse(format!("{n:?} in {text:?}: a percentage from 0 to 100")),
            },
            None => match n.parse::<u64>() {
                Ok(count) if count > 0 => Threshold::Count(count),
                _ => return refuse(format!("{n:?} in {text:?}: a number of items from 1")),
            },
        };
        Ok(Some(Halt { now, threshold }))
    }

    /// `fail=n`, `now` or `soon`.
    pub fn count(now: bool, n: u64) -> Halt {
        Halt {
            now,
            threshold: Threshold::Count(n),
        }
    }

    /// Whether `failed` failures of `total` items cross the threshold:
    /// `fail=N%` when failed × 100 ≥ N × total, and at least one failed
    /// (so `fail=1%` of 10 items halts at the first failure, as parallel).
    pub fn crossed(&self, failed: u64, total: u64) -> bool {
        match self.threshold {
            Threshold::Count(n) => failed >= n,
            Threshold::Percent(p) => failed > 0 && failed as f64 * 100.0 >= p * total as f64,
        }
    }

    /// The fewest failed items of `total` that cross the threshold: what
    /// the store compares its failure counter with (a number, so a store
    /// script needs no floating point).
    pub fn failures_to_halt(&self, total: u64) -> u64 {
        match self.threshold {
            Threshold::Count(n) => n,
            Threshold::Percent(p) => {
                let mut n = ((p * total as f64) / 100.0).ceil().max(1.0) as u64;
                // ends: n moves at most a step or two from the rounded value.
                while n > 1 && self.crossed(n - 1, total) {
                    n -= 1;
                }
                // ends: crossed(total) holds for any percentage up to 100.
                while !self.crossed(n, total) && n < total.max(1) {
                    n += 1;
                }
                n
            }
        }
    }

    /// Why a task this halt stopped failed, once `failed` items had failed:
    /// `halted: 1 item failed (halt now,fail=1)`.
    pub fn reason(&self, failed: u64) -> String {
        let items = if failed == 1 { "item" } else { "items" };
        format!("halted: {failed} {items} failed (halt {self})")
    }
}

/// The value as written in a task: `now,fail=1`, `soon,fail=10%`.
impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = if self.now { "now" } else { "soon" };
        match self.threshold {
            Threshold::Count(n) => write!(f, "{when},fail={n}"),
            Threshold::Percent(p) => write!(f, "{when},fail={p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_takes_parallels_forms_and_refuses_others_naming_them() {
        assert_eq!(Halt::parse("now,fail=1"), Ok(Some(Halt::count(true, 1))));
        assert_eq!(Halt::parse("soon,fail=3"), Ok(Some(Halt::count(false, 3))));
        assert_eq!(Halt::parse("2"), Ok(Some(Halt::count(true, 1))));
        assert_eq!(Halt::parse("1"), Ok(Some(Halt::count(false, 1))));
        assert_eq!(Halt::parse("0"), Ok(None));
        assert_eq!(Halt::parse("never"), Ok(None));
        assert_eq!(
            Halt::parse("soon,fail=10%").map(|h| h.map(|h| h.threshold)),
            Ok(Some(Threshold::Percent(10.0)))
        );
        assert_eq!(
            Halt::parse("now,success=1").unwrap_err().0,
            "\"success=1\" in \"now,success=1\": only fail=N is supported (halt takes never, now,fail=N, soon,fail=N or soon,fail=N% (N% of the items))"
        );
        assert_eq!(
            Halt::parse("soon,done=2").unwrap_err().0,
            "\"done=2\" in \"soon,done=2\": only fail=N is supported (halt takes never, now,fail=N, soon,fail=N or soon,fail=N% (N% of the items))"
        );
        assert_eq!(
            Halt::parse("later,fail=1").unwrap_err().0,
            "\"later\" in \"later,fail=1\": halt takes never, now,fail=N, soon,fail=N or soon,fail=N% (N% of the items)"
        );
        assert!(Halt::parse("now,fail=0").is_err());
        assert!(Halt::parse("now,fail=101%").is_err());
    }

    #[test]
    fn a_percentage_counts_against_all_the_items_and_needs_one_failure() {
        let halt = Halt::parse("soon,fail=25%").unwrap().unwrap();
        assert!(!halt.crossed(0, 8));
        assert!(!halt.crossed(1, 8));
        assert!(halt.crossed(2, 8));
        assert_eq!(halt.failures_to_halt(8), 2);
        assert_eq!(halt.failures_to_halt(9), 3);
        assert_eq!(halt.failures_to_halt(0), 1);
        let one = Halt::parse("now,fail=1%").unwrap().unwrap();
        assert_eq!(one.failures_to_halt(10), 1);
        assert_eq!(
            Halt::parse("now,fail=100%")
                .unwrap()
                .unwrap()
                .failures_to_halt(7),
            7
        );
        assert_eq!(
            Halt::parse("now,fail=33.3%")
                .unwrap()
                .unwrap()
                .failures_to_halt(3),
            1
        );
    }

    #[test]
    fn the_failures_to_halt_are_exactly_where_the_threshold_is_first_crossed() {
        for text in [
            "soon,fail=10%",
            "now,fail=33.3%",
            "soon,fail=50%",
            "now,fail=99.9%",
        ] {
            let halt = Halt::parse(text).unwrap().unwrap();
            for total in 1..200u64 {
                let n = halt.failures_to_halt(total);
                assert!(halt.crossed(n, total), "{text} {total} {n}");
                assert!(n == 1 || !halt.crossed(n - 1, total), "{text} {total} {n}");
            }
        }
    }

    #[test]
    fn the_reason_names_the_failures_and_the_halt_as_written() {
        let halt = Halt::parse("now,fail=1").unwrap().unwrap();
        assert_eq!(halt.reason(1), "halted: 1 item failed (halt now,fail=1)");
        let halt = Halt::parse("soon,fail=20%").unwrap().unwrap();
        assert_eq!(
            halt.reason(3),
            "halted: 3 items failed (halt soon,fail=20%)"
        );
    }
}
