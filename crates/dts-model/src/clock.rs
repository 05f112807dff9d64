//! Where dts reads the time of day: every timestamp it stores and every lease,
//! heartbeat and deadline it compares against "now".
//!
//! Production code uses [`SystemClock`] (the default everywhere). The clock is
//! a trait so tests can run the engine on a clock that follows tokio's paused
//! time, where leases expire and deadlines pass in simulated seconds.

use std::fmt;
use std::sync::Arc;

/// A source of the current time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch, as this clock sees them.
    fn now_millis(&self) -> u64;
}

/// A shared handle to a clock.
pub type DynClock = Arc<dyn Clock>;

/// The machine's wall clock ([`crate::now_millis`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        crate::now_millis()
    }
}

/// The machine's wall clock as a [`DynClock`]: the default of every component.
pub fn system_clock() -> DynClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let before = crate::now_millis();
        let read = system_clock().now_millis();
        let after = crate::now_millis();
        assert!(
            before <= read && read <= after,
            "{before} <= {read} <= {after}"
        );
    }
}
