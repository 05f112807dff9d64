//! A [`Clock`] that follows tokio's time instead of the wall clock.
//!
//! Leases, heartbeats and deadlines compare epoch milliseconds, which do not
//! move under `tokio::time::pause`. [`TokioClock`] starts at a wall-clock
//! reading and then advances with tokio's [`Instant`], so on a paused runtime
//! a lease of ten seconds expires after ten simulated seconds. Outside a
//! paused runtime it runs at the wall clock's pace.

use dts_model::Clock;
use tokio::time::Instant;

/// Epoch milliseconds that advance with tokio's (possibly paused) time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    /// Epoch milliseconds at `start`.
    epoch_millis: u64,
    /// Tokio's time when the clock was made.
    start: Instant,
}

impl TokioClock {
    /// A clock reading `epoch_millis` now. Make it inside the runtime whose
    /// time it should follow.
    pub fn starting_at(epoch_millis: u64) -> Self {
        TokioClock {
            epoch_millis,
            start: Instant::now(),
        }
    }

    /// A clock reading the wall clock's time now.
    pub fn starting_now() -> Self {
        Self::starting_at(dts_model::now_millis())
    }
}

impl Clock for TokioClock {
    fn now_millis(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch_millis.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_clock_moves_with_paused_time_and_only_with_it() {
        let clock = TokioClock::starting_at(1_000);
        assert_eq!(clock.now_millis(), 1_000);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now_millis(), 91_000);
    }
}
