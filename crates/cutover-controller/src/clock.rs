//! Time as the state machine counts it: milliseconds since the Unix epoch. Persisted
//! timestamps survive a restart, so timers keep their meaning across one.
//!
//! The controller reads the time only through the [`Clock`] it was started with: the wall
//! clock in production, and in seeded simulations a clock that follows tokio's (paused)
//! time, so that a thousand rollouts with minutes of timers each run in seconds and the
//! same seed always sees the same times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_core::rollout::Timestamp;

/// Where the controller reads the time.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// The system's wall clock: what a controller in production runs on.
    #[default]
    Wall,
    /// `epoch` plus the tokio time elapsed since `start`: under `tokio::time::pause()` it
    /// moves only when the runtime advances time, and it is the same in every run.
    Simulated {
        /// The time at `start`.
        epoch: Timestamp,
        /// The tokio instant `epoch` corresponds to.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's time from `epoch` on, starting now. Meant for tests
    /// under `tokio::time::pause()`; a controller restarted in a simulation is given the
    /// same clock, so persisted timestamps keep their meaning.
    pub fn simulated(epoch: Timestamp) -> Clock {
        Clock::Simulated {
            epoch,
            start: tokio::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Wall => Timestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            Clock::Simulated { epoch, start } => {
                let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                Timestamp(epoch.0.saturating_add(elapsed))
            }
        }
    }

    /// How long from now until `at` (zero if past).
    pub fn until(&self, at: Timestamp) -> Duration {
        Duration::from_millis(at.0.saturating_sub(self.now().0))
    }

    /// The tokio instant at which this clock reads `at` (now, if past): what the driver's
    /// timers sleep until.
    pub fn deadline(&self, at: Timestamp) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.until(at)
    }

    /// Sleeps until `at`.
    pub async fn sleep_until(&self, at: Timestamp) {
        tokio::time::sleep(self.until(at)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_clock_moves_with_paused_time_only() {
        let clock = Clock::simulated(Timestamp(1_000));
        assert_eq!(clock.now(), Timestamp(1_000));
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now(), Timestamp(3_500));
        assert_eq!(clock.until(Timestamp(4_000)), Duration::from_millis(500));
        assert_eq!(clock.until(Timestamp(10)), Duration::ZERO, "past: now");
        clock.sleep_until(Timestamp(5_000)).await;
        assert_eq!(clock.now(), Timestamp(5_000));
    }

    #[test]
    fn the_wall_clock_reads_the_system_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let now = u128::from(Clock::Wall.now().0);
        assert!(now >= before && now < before + 60_000, "{now} vs {before}");
    }
}
