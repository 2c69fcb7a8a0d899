//! Acknowledging stream messages in batches: handlers hand their acks to an [`Acker`], whose task sends every ack
//! waiting for the same stream as one `XACK`. Under load one round trip acknowledges many messages; when idle, an
//! ack goes out at once. An ack is only ever sent after its handler's effect is durable, so a crash before the
//! flush only means the message is delivered again, and the state-checked transitions make that a no-op.

use std::collections::BTreeMap;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::Store;

/// Most acks sent in one `XACK`.
const MOST_PER_ACK: usize = 512;

/// Hands acks to the flushing task; cheap to clone. The task ends, after a last flush, once every clone is gone.
#[derive(Clone)]
pub struct Acker {
    queue: mpsc::UnboundedSender<(String, String)>,
}

impl Acker {
    /// Starts the flushing task for `group`.
    pub fn spawn(store: Store, group: &str) -> (Self, JoinHandle<()>) {
        let (queue, waiting) = mpsc::unbounded_channel();
        let task = tokio::spawn(flush(store, group.to_owned(), waiting));
        (Self { queue }, task)
    }

    /// Acknowledges message `id` of `stream` (soon, together with any other acks waiting).
    pub fn ack(&self, stream: &str, id: &str) {
        // Only fails once the task is gone, at shutdown: the message is then delivered again, which is safe.
        let _ = self.queue.send((stream.to_owned(), id.to_owned()));
    }
}

async fn flush(store: Store, group: String, mut waiting: mpsc::UnboundedReceiver<(String, String)>) {
    let mut batch = Vec::with_capacity(MOST_PER_ACK);
    while waiting.recv_many(&mut batch, MOST_PER_ACK).await > 0 {
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (stream, id) in batch.drain(..) {
            by_stream.entry(stream).or_default().push(id);
        }
        for (stream, ids) in by_stream {
            if let Err(e) = store.ack_all(&stream, &group, &ids).await {
                tracing::warn!(error = %e, stream, count = ids.len(), "ack failed; the messages will be delivered again");
            }
        }
    }
}
