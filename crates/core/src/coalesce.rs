//! Group commit for transitions: concurrent handlers hand a [`Coalescer`] their requests, and its task runs every
//! request waiting for the same partition as one multi-task script call. Under load one round trip carries many
//! transitions; when idle a request goes out at once, alone. Each request still gets its own answer, and the
//! scripts apply each task's transition as if it were alone, so the effects are the same as one call per task.

use std::{collections::BTreeMap, future::Future};

use tokio::sync::{mpsc, oneshot};

use crate::store::{Result, StoreError};

/// Most requests in one call.
const MOST_PER_CALL: usize = 256;

type Waiting<Req> = (u32, Req, oneshot::Sender<Result<bool>>);

/// One partition's requests, and where each one's answer goes.
type Group<Req> = (Vec<Req>, Vec<oneshot::Sender<Result<bool>>>);

/// Hands requests to the task that runs them in groups; cheap to clone. The task ends once every clone is gone.
pub struct Coalescer<Req> {
    queue: mpsc::UnboundedSender<Waiting<Req>>,
}

impl<Req> Clone for Coalescer<Req> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Req: Send + 'static> Coalescer<Req> {
    /// Starts the task; `run(partition, requests)` answers one bool per request, in order.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: Fn(u32, Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<bool>>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(serve(run, waiting));
        Self { queue }
    }

    /// Runs `request` (of `partition`) together with whatever else is waiting, and answers its own result.
    pub async fn call(&self, partition: u32, request: Req) -> Result<bool> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((partition, request, answer))
            .map_err(|_| StoreError::Corrupt("the transition batcher has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Corrupt("the transition batcher dropped a request".into()))?
    }
}

async fn serve<Req, F, Fut>(run: F, mut waiting: mpsc::UnboundedReceiver<Waiting<Req>>)
where
    F: Fn(u32, Vec<Req>) -> Fut,
    Fut: Future<Output = Result<Vec<bool>>>,
{
    let mut batch = Vec::with_capacity(MOST_PER_CALL);
    while waiting.recv_many(&mut batch, MOST_PER_CALL).await > 0 {
        let mut by_partition: BTreeMap<u32, Group<Req>> = BTreeMap::new();
        for (partition, request, answer) in batch.drain(..) {
            let group = by_partition.entry(partition).or_default();
            group.0.push(request);
            group.1.push(answer);
        }
        let calls = by_partition.into_iter().map(|(partition, (requests, answers))| {
            let call = run(partition, requests);
            async move {
                match call.await {
                    Ok(applied) => {
                        for (answer, applied) in answers.into_iter().zip(applied) {
                            let _ = answer.send(Ok(applied));
                        }
                    }
                    Err(e) => {
                        for answer in answers {
                            let _ = answer.send(Err(shared(&e)));
                        }
                    }
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}

/// A copy of one failed call's error for each request it carried.
fn shared(e: &StoreError) -> StoreError {
    match e {
        StoreError::Redis(e) => StoreError::Redis(e.clone()),
        StoreError::Corrupt(why) => StoreError::Corrupt(why.clone()),
    }
}
