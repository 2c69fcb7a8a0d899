//! When to poll a running task next: first at the model's expected duration, then at an interval that grows
//! after each poll (up to a cap), shortened when the provider's progress says the task is nearly done.

use std::time::Duration;

use crate::config::PollerConfig;

/// The delay before the next poll of a task that has been polled `polls` times, reported `progress` (0-100)
/// and has been running for `elapsed`.
pub fn next_poll_delay(config: &PollerConfig, polls: u32, progress: u8, elapsed: Duration) -> Duration {
    let grown = config.interval_ms as f64 * config.interval_factor.powi(polls.min(64) as i32);
    let interval = Duration::from_millis(grown.min(config.max_interval_ms as f64) as u64);
    if (1..100).contains(&progress) {
        // Linear estimate of what is left; never poll more often than the floor.
        let left = elapsed.mul_f64(f64::from(100 - progress) / f64::from(progress));
        let floor = Duration::from_millis(config.min_interval_ms).min(interval);
        return left.clamp(floor, interval);
    }
    interval
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PollerConfig {
        crate::Config::load_from(None, Vec::new())
            .expect("defaults")
            .poller
    }

    #[test]
    fn the_interval_grows_to_its_cap() {
        let c = config();
        let delays: Vec<_> = (0..12)
            .map(|n| next_poll_delay(&c, n, 0, Duration::ZERO).as_millis() as u64)
            .collect();
        assert_eq!(delays[0], 5000);
        assert_eq!(delays[1], 7500);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap_or(&0), 60_000);
    }

    #[test]
    fn progress_shortens_the_wait_but_not_below_the_floor() {
        let c = config();
        let ninety = next_poll_delay(&c, 8, 90, Duration::from_secs(90));
        assert_eq!(ninety, Duration::from_secs(10));
        let nearly = next_poll_delay(&c, 8, 99, Duration::from_secs(10));
        assert_eq!(nearly, Duration::from_millis(c.min_interval_ms));
        let early = next_poll_delay(&c, 0, 5, Duration::from_secs(10));
        assert_eq!(
            early,
            Duration::from_millis(c.interval_ms),
            "never later than the growing interval"
        );
    }
}
