//! What the Grsai and Seedance tests share: waiting, by polling the client, for a remote task to end.

use std::time::Duration;

use gantry_provider::{Provider, RemoteStatus};
use tokio::time::Instant;

/// How long a task may take to end before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls until the task is neither pending nor running.
pub async fn wait_for_end(client: &impl Provider, id: &str) -> RemoteStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client.status(id).await.unwrap() {
            RemoteStatus::Pending | RemoteStatus::Running { .. } => {}
            end => return end,
        }
        assert!(Instant::now() < deadline, "task {id} never ended");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
