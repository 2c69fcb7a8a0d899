//! One watcher of the batches' event streams per gateway process, shared by every open SSE response.
//!
//! A response registers the batch it streams; the hub waits for new entries on all registered batches with a
//! single blocking read on its own connection and bumps a per-batch counter; each response then fetches its new
//! entries with a short read on the shared connection. So a gateway holds the same Redis connections whatever the
//! number of open streams. The hub also counts each tenant's streams (`gateway.sse_max_per_tenant`).
//!
//! On a Redis Cluster the watcher reads per hash slot instead (one blocking connection per slot in use, at most one
//! per partition), since a cluster refuses a read over several slots; see `gantry_core::store::EventWatcher`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use gantry_core::{service, store::EventWatcher, Store};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// How long the hub's read waits before it takes in newly registered batches.
const BLOCK: Duration = Duration::from_secs(1);

pub(crate) struct EventHub {
    inner: Mutex<Inner>,
    registered: Notify,
    max_per_tenant: usize,
}

#[derive(Default)]
struct Inner {
    batches: HashMap<String, Watched>,
    per_tenant: HashMap<String, usize>,
}

struct Watched {
    /// The newest entry the hub has seen (`None` until the hub has looked).
    cursor: Option<String>,
    /// Bumped whenever the batch may have new entries.
    changes: watch::Sender<u64>,
    subscribers: usize,
}

/// A tenant already has `gateway.sse_max_per_tenant` streams open.
#[derive(Debug)]
pub(crate) struct TooManyStreams;

/// One open stream's registration; dropping it unregisters.
pub(crate) struct Subscription {
    hub: Arc<EventHub>,
    tenant: String,
    batch_id: String,
    /// Changes when the batch may have new entries.
    pub(crate) changes: watch::Receiver<u64>,
}

impl EventHub {
    pub(crate) fn new(max_per_tenant: usize) -> Self {
        Self {
            inner: Mutex::default(),
            registered: Notify::new(),
            max_per_tenant,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a stream of `batch_id` for `tenant`, unless the tenant has too many open.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        batch_id: &str,
    ) -> Result<Subscription, TooManyStreams> {
        let mut inner = self.lock();
        let open = inner.per_tenant.entry(tenant.to_owned()).or_default();
        if *open >= self.max_per_tenant {
            return Err(TooManyStreams);
        }
        *open += 1;
        let watched = inner
            .batches
            .entry(batch_id.to_owned())
            .or_insert_with(|| Watched {
                cursor: None,
                changes: watch::Sender::new(0),
                subscribers: 0,
            });
        watched.subscribers += 1;
        let changes = watched.changes.subscribe();
        drop(inner);
        self.registered.notify_one();
        Ok(Subscription {
            hub: self.clone(),
            tenant: tenant.to_owned(),
            batch_id: batch_id.to_owned(),
            changes,
        })
    }

    /// Watches the registered batches until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, store: Store, shutdown: CancellationToken) {
        let mut watcher: Option<EventWatcher> = None;
        while !shutdown.is_cancelled() {
            if let Err(e) = self.step(&store, &mut watcher, &shutdown).await {
                tracing::warn!(error = %e, "watching batch events failed; retrying");
                watcher = None;
                service::pause(&shutdown, Duration::from_secs(1)).await;
            }
        }
    }

    async fn step(
        &self,
        store: &Store,
        watcher: &mut Option<EventWatcher>,
        shutdown: &CancellationToken,
    ) -> gantry_core::store::Result<()> {
        // Newly registered batches: start from their newest entry, then wake their streams once, so an entry
        // written before the hub looked is not left unannounced.
        let new: Vec<String> = {
            let inner = self.lock();
            inner
                .batches
                .iter()
                .filter(|(_, w)| w.cursor.is_none())
                .map(|(id, _)| id.clone())
                .collect()
        };
        for batch_id in new {
            let last = store.last_batch_event(&batch_id).await?;
            if let Some(watched) = self.lock().batches.get_mut(&batch_id) {
                watched.cursor = Some(last);
                watched.changes.send_modify(|n| *n += 1);
            }
        }
        let cursors: HashMap<String, String> = self
            .lock()
            .batches
            .iter()
            .filter_map(|(id, w)| Some((id.clone(), w.cursor.clone()?)))
            .collect();
        if cursors.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.registered.notified() => {}
            }
            return Ok(());
        }
        let watcher = match watcher {
            Some(watcher) => watcher,
            None => watcher.insert(store.event_watcher(BLOCK).await?),
        };
        let changed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = watcher.wait(&cursors) => changed?,
        };
        let mut inner = self.lock();
        for (batch_id, newest) in changed {
            if let Some(watched) = inner.batches.get_mut(&batch_id) {
                watched.cursor = Some(newest);
                watched.changes.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(open) = inner.per_tenant.get_mut(&self.tenant) {
            *open -= 1;
            if *open == 0 {
                inner.per_tenant.remove(&self.tenant);
            }
        }
        if let Some(watched) = inner.batches.get_mut(&self.batch_id) {
            watched.subscribers -= 1;
            if watched.subscribers == 0 {
                inner.batches.remove(&self.batch_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_at_most_its_streams_and_gets_them_back_on_drop() {
        let hub = Arc::new(EventHub::new(2));
        let a = hub.subscribe("t1", "b1").expect("first");
        let b = hub.subscribe("t1", "b2").expect("second");
        assert!(hub.subscribe("t1", "b1").is_err());
        let other = hub.subscribe("t2", "b1").expect("another tenant");
        drop(a);
        let c = hub.subscribe("t1", "b3").expect("a slot came back");
        drop((b, c, other));
        let inner = hub.lock();
        assert!(inner.batches.is_empty() && inner.per_tenant.is_empty());
    }
}
