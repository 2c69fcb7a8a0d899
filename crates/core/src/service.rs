//! The shape every worker service shares: take work from a [`Source`] (stream deliveries, due polls), run each item
//! through the service's handler with at most `concurrency` in flight, and on shutdown stop taking work and let
//! what is in flight finish within the grace period. Periodic side jobs (samplers, the recovery sweep) run with
//! [`every`].
//!
//! Services plug in a source and a handler; connecting (`Store::connect_when_ready`), the semaphore, the join set
//! and the drain live here once.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Where a worker's work comes from.
pub trait Source: Send {
    /// The unit of work handed to the handler.
    type Item: Send + 'static;

    /// The next items, at most `max` (a source may wait, e.g. a blocking stream read, or a pause when nothing is
    /// due, and may answer none); `None` once `shutdown` is cancelled.
    fn next(
        &mut self,
        max: usize,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Option<Vec<Self::Item>>> + Send;
}

/// How many items run at once, and how long they may finish after shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub concurrency: usize,
    pub grace: Duration,
}

/// Runs `handle` on every item of `source`, at most `limits.concurrency` at once, until `shutdown`; then waits for
/// the items in flight at most `limits.grace` (the rest are aborted: their messages stay pending, their claims
/// expire, and another process takes them over).
pub async fn run<S, H, Fut>(source: &mut S, limits: Limits, shutdown: &CancellationToken, handle: H)
where
    S: Source,
    H: Fn(S::Item) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    while !shutdown.is_cancelled() {
        while in_flight.try_join_next().is_some() {}
        let free = permits.available_permits();
        if free == 0 {
            // Every slot is busy: wait for one to free up.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = in_flight.join_next() => continue,
            }
        }
        let Some(items) = source.next(free, shutdown).await else {
            break;
        };
        for item in items {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let handle = handle.clone();
            in_flight.spawn(async move {
                handle(item).await;
                drop(permit);
            });
        }
    }
    drain(&mut in_flight, limits.grace, "work in flight").await;
}

/// Runs `step` now and then every `period` until `shutdown`. Steps never overlap; a slow step delays the next one
/// rather than piling up.
pub async fn every<F, Fut>(period: Duration, shutdown: &CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => step().await,
        }
    }
}

/// Waits `pause`, or less if `shutdown` comes first.
pub async fn pause(shutdown: &CancellationToken, pause: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(pause) => {}
    }
}

/// Waits for the tasks of `in_flight` (`what` they are, for the log) to finish, at most `grace`; the rest are
/// aborted.
pub async fn drain<T: 'static>(in_flight: &mut JoinSet<T>, grace: Duration, what: &'static str) {
    let all = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            left = in_flight.len(),
            what,
            "shutdown grace period over; aborting the rest"
        );
        in_flight.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Hands out `left` numbers, `max` at a time, then cancels the shutdown token.
    struct Numbers {
        left: usize,
        done: CancellationToken,
    }

    impl Source for Numbers {
        type Item = usize;

        async fn next(&mut self, max: usize, shutdown: &CancellationToken) -> Option<Vec<usize>> {
            if shutdown.is_cancelled() {
                return None;
            }
            let n = max.min(self.left);
            self.left -= n;
            if self.left == 0 {
                self.done.cancel();
            }
            Some((0..n).collect())
        }
    }

    #[tokio::test]
    async fn every_item_runs_and_concurrency_is_bounded() {
        let shutdown = CancellationToken::new();
        let (running, peak, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut source = Numbers {
            left: 50,
            done: shutdown.clone(),
        };
        let limits = Limits {
            concurrency: 3,
            grace: Duration::from_secs(10),
        };
        let (r, p, d) = (running.clone(), peak.clone(), done.clone());
        run(&mut source, limits, &shutdown, move |_| {
            let (r, p, d) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            50,
            "the drain lets every started item finish"
        );
        assert!(
            peak.load(Ordering::SeqCst) <= 3,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
    }
}
