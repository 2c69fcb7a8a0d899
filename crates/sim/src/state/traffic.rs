//! Traffic measurements (requests in flight, arrivals per second, status calls in flight per task) and the event
//! counters of faults and callbacks.
//!
//! Concurrency is measured with RAII guards ([`RequestGuard`], [`PollGuard`]) that count a request in on creation and
//! out on drop, so a cancelled or panicking handler still leaves the counters right.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::Sim;

/// A counter bumped by one event.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    RateLimited,
    ServerError,
    Timeout,
    Malformed,
    WebhookSent,
    WebhookDropped,
    WebhookDuplicated,
    WebhookFailed,
}

/// The window of [`crate::SimStats::max_requests_in_one_second`].
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Sim {
    /// Counts one event.
    pub(crate) fn bump(&self, counter: Counter) {
        let mut inner = self.lock();
        let stats = &mut inner.stats;
        let field = match counter {
            Counter::RateLimited => &mut stats.rate_limited,
            Counter::ServerError => &mut stats.server_errors,
            Counter::Timeout => &mut stats.timeouts,
            Counter::Malformed => &mut stats.malformed,
            Counter::WebhookSent => &mut stats.webhooks_sent,
            Counter::WebhookDropped => &mut stats.webhooks_dropped,
            Counter::WebhookDuplicated => &mut stats.webhooks_duplicated,
            Counter::WebhookFailed => &mut stats.webhooks_failed,
        };
        *field += 1;
    }

    /// Counts one create call that reached its handler, whatever its fate.
    pub(crate) fn count_create(&self) {
        self.lock().stats.creates += 1;
    }

    /// Counts an API request in until the guard is dropped (and among the HTTP/2 ones when `http2`); also returns
    /// how many are in flight, this one included.
    pub(crate) fn enter_request(self: &Arc<Self>, http2: bool) -> (RequestGuard, u64) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.stats.http2_requests += u64::from(http2);
        inner.in_flight += 1;
        inner.stats.max_concurrent_requests = inner.stats.max_concurrent_requests.max(inner.in_flight);
        while inner
            .arrivals
            .front()
            .is_some_and(|&first| now.saturating_duration_since(first) >= RATE_WINDOW)
        {
            inner.arrivals.pop_front();
        }
        inner.arrivals.push_back(now);
        let in_window = u64::try_from(inner.arrivals.len()).unwrap_or(u64::MAX);
        inner.stats.max_requests_in_one_second = inner.stats.max_requests_in_one_second.max(in_window);
        let guard = RequestGuard {
            sim: Arc::clone(self),
        };
        (guard, inner.in_flight)
    }

    /// Counts a status call for `id` (known or not) in until the guard is dropped.
    pub(crate) fn enter_poll(self: &Arc<Self>, id: &str) -> PollGuard {
        let mut inner = self.lock();
        inner.stats.polls += 1;
        let in_flight = {
            let count = inner.polls_in_flight.entry(id.to_owned()).or_insert(0);
            *count += 1;
            *count
        };
        inner.stats.max_concurrent_polls_per_task = inner.stats.max_concurrent_polls_per_task.max(in_flight);
        PollGuard {
            sim: Arc::clone(self),
            id: id.to_owned(),
        }
    }
}

/// Holds one API request in the in-flight count.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    sim: Arc<Sim>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut inner = self.sim.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
    }
}

/// Holds one status call in the per-task in-flight count.
#[derive(Debug)]
pub(crate) struct PollGuard {
    sim: Arc<Sim>,
    id: String,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        let mut inner = self.sim.lock();
        if let Some(count) = inner.polls_in_flight.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.polls_in_flight.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sim;
    use crate::SimConfig;

    #[tokio::test]
    async fn poll_guards_track_concurrency_per_task() {
        let sim = sim(SimConfig::default());
        let first = sim.enter_poll("sim-1");
        let second = sim.enter_poll("sim-1");
        let other = sim.enter_poll("sim-2");
        drop((first, second, other));
        let again = sim.enter_poll("sim-1");
        drop(again);
        assert_eq!(sim.stats().max_concurrent_polls_per_task, 2);
        assert_eq!(sim.stats().polls, 4);
    }

    #[tokio::test]
    async fn arrivals_are_counted_per_second() {
        let sim = sim(SimConfig::default());
        let guards: Vec<_> = (0..3).map(|_| sim.enter_request(false)).collect();
        assert_eq!(guards.last().map(|(_, in_flight)| *in_flight), Some(3));
        drop(guards);
        let (_guard, in_flight) = sim.enter_request(true);
        assert_eq!(in_flight, 1);
        let stats = sim.stats();
        assert_eq!(stats.max_requests_in_one_second, 4);
        assert_eq!(stats.max_concurrent_requests, 3);
        assert_eq!(stats.http2_requests, 1);
    }
}
