//! The simulator's in-memory state: tasks, how far along they are, the current faults and the counters behind
//! `/sim/stats`.
//!
//! Tasks and counters live behind one `std::sync::Mutex`, the faults and their random generator behind another;
//! neither is ever held across an `.await`. Traffic (requests in flight, arrivals per second, polls per task) is
//! measured in `traffic`.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use traffic::Counter;

use crate::{
    faults::Faults,
    stats::{SimStats, SimTaskInfo},
    task::{phase_at, Api, Outcome, Phase},
    webhook::{self, Callback},
    FaultConfig, SimConfig,
};

mod traffic;

/// What a create call hands to the state once it is validated.
#[derive(Debug)]
pub(crate) struct NewTask {
    pub(crate) api: Api,
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) first_frame_url: Option<String>,
    /// Whether a succeeded task reports its last frame (Seedance's `return_last_frame`; always for Grsai).
    pub(crate) report_last_frame: bool,
    /// Where to send callbacks about the task, if anywhere.
    pub(crate) callback: Option<Callback>,
}

/// A task as an answer or a callback describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) id: String,
    pub(crate) api: Api,
    pub(crate) model: String,
    pub(crate) phase: Phase,
    pub(crate) created_at_ms: u64,
    pub(crate) report_last_frame: bool,
}

#[derive(Debug)]
struct Task {
    info: SimTaskInfo,
    api: Api,
    started: Instant,
    duration: Duration,
    outcome: Outcome,
    report_last_frame: bool,
}

impl Task {
    fn phase(&self, now: Instant) -> Phase {
        if self.info.cancelled {
            return Phase::Cancelled;
        }
        phase_at(
            self.outcome,
            now.saturating_duration_since(self.started),
            self.duration,
        )
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            id: self.info.id.clone(),
            api: self.api,
            model: self.info.model.clone(),
            phase: self.phase(now),
            created_at_ms: self.info.created_at_ms,
            report_last_frame: self.report_last_frame,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Never reset, so that ids stay unique for the life of the simulator.
    next_id: u64,
    tasks: Vec<Task>,
    by_id: HashMap<String, usize>,
    /// The tasks of each prompt, so a create finds a live duplicate without scanning every task.
    by_prompt: HashMap<String, Vec<usize>>,
    /// Every counter of [`SimStats`]; `tasks` is filled in when a snapshot is taken.
    stats: SimStats,
    in_flight: u64,
    polls_in_flight: HashMap<String, u64>,
    /// Arrival instants of the API requests of the last [`RATE_WINDOW`].
    arrivals: VecDeque<Instant>,
}

/// One simulator's configuration and state, shared by its handlers.
#[derive(Debug)]
pub(crate) struct Sim {
    config: SimConfig,
    base_url: String,
    inner: Mutex<Inner>,
    faults: Mutex<Faults>,
    shutdown: CancellationToken,
    webhooks: reqwest::Client,
}

impl Sim {
    /// A simulator with no tasks; `addr` is where it is bound, for the default result URLs. `shutdown` ends hung
    /// requests and pending webhook deliveries.
    pub(crate) fn new(
        config: SimConfig,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        config.faults.validate()?;
        let base_url = match &config.public_base_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => crate::local_base_url(addr),
        };
        let webhooks = webhook::client().map_err(|error| format!("webhook client: {error}"))?;
        Ok(Self {
            faults: Mutex::new(Faults::new(config.faults.clone())),
            config,
            base_url,
            inner: Mutex::default(),
            shutdown,
            webhooks,
        })
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The base of result URLs, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Cancelled when the server stops.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn webhook_client(&self) -> &reqwest::Client {
        &self.webhooks
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is a few plain assignments.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The faults and their generator, for one draw.
    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the faults (and reseeds the generator); the caller has validated `config`.
    pub(crate) fn set_faults(&self, config: FaultConfig) {
        *self.faults() = Faults::new(config);
    }

    /// A snapshot of the counters and tasks.
    pub(crate) fn stats(&self) -> SimStats {
        let now = Instant::now();
        let inner = self.lock();
        let tasks = inner.tasks.iter().map(|task| {
            let mut info = task.info.clone();
            if task.report_last_frame && task.phase(now) == Phase::Succeeded {
                info.last_frame_url = Some(last_frame_url(&self.base_url, &info.id));
            }
            info
        });
        SimStats {
            tasks: tasks.collect(),
            ..inner.stats.clone()
        }
    }

    /// Forgets every task and clears the counters; requests in flight stay counted until they finish. The faults
    /// stay as they are.
    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        inner.tasks.clear();
        inner.by_id.clear();
        inner.by_prompt.clear();
        inner.arrivals.clear();
        inner.stats = SimStats {
            max_concurrent_requests: inner.in_flight,
            max_concurrent_polls_per_task: inner.polls_in_flight.values().copied().max().unwrap_or(0),
            ..SimStats::default()
        };
    }

    /// Stores a new task, arranges its callbacks and returns its id.
    pub(crate) fn create(self: &Arc<Self>, new: NewTask) -> String {
        let (duration, never) = {
            let mut faults = self.faults();
            let jitter = faults.up_to(self.config.duration_jitter_ms);
            let duration = Duration::from_millis(self.config.task_duration_ms.saturating_add(jitter));
            (duration, faults.never_finishes())
        };
        let outcome = match Outcome::from_prompt(&new.prompt) {
            Outcome::Succeed if never => Outcome::Never,
            outcome => outcome,
        };
        let created_at_ms = unix_ms();
        let now = Instant::now();
        let mut inner = self.lock();
        let duplicate = inner
            .by_prompt
            .get(&new.prompt)
            .is_some_and(|same| same.iter().any(|&i| inner.tasks[i].phase(now).is_live()));
        if duplicate {
            inner.stats.duplicate_live_creates += 1;
            tracing::debug!(prompt = %new.prompt, "create duplicates a live task");
        }
        inner.next_id += 1;
        let id = match new.api {
            Api::Grsai => format!("sim-{}", inner.next_id),
            Api::Seedance => format!("cgt-sim-{}", inner.next_id),
        };
        let info = SimTaskInfo {
            id: id.clone(),
            provider: new.api.as_str().to_owned(),
            model: new.model,
            prompt: new.prompt,
            first_frame_url: new.first_frame_url,
            last_frame_url: None,
            created_at_ms,
            finishes_at_ms: created_at_ms.saturating_add(duration_ms(duration)),
            polls: 0,
            cancelled: false,
        };
        let index = inner.tasks.len();
        inner.tasks.push(Task {
            info,
            api: new.api,
            started: now,
            duration,
            outcome,
            report_last_frame: new.report_last_frame,
        });
        inner.by_id.insert(id.clone(), index);
        let prompt = inner.tasks[index].info.prompt.clone();
        inner.by_prompt.entry(prompt).or_default().push(index);
        drop(inner);
        if let Some(callback) = new.callback {
            webhook::schedule(self, id.clone(), callback);
        }
        id
    }

    /// Task `id` of `api` as of now, counting the poll against it; `None` if there is no such task.
    pub(crate) fn poll(&self, id: &str, api: Api) -> Option<Snapshot> {
        let now = Instant::now();
        let mut inner = self.lock();
        let index = *inner.by_id.get(id)?;
        let task = inner.tasks.get_mut(index).filter(|task| task.api == api)?;
        task.info.polls += 1;
        Some(task.snapshot(now))
    }

    /// Task `id` as of now, without counting a poll (for callbacks).
    pub(crate) fn peek(&self, id: &str) -> Option<Snapshot> {
        let inner = self.lock();
        let task = inner.by_id.get(id).and_then(|&index| inner.tasks.get(index))?;
        Some(task.snapshot(Instant::now()))
    }

    /// When task `id` started and how long it takes.
    pub(crate) fn timing(&self, id: &str) -> Option<(Instant, Duration)> {
        let inner = self.lock();
        let task = inner.by_id.get(id).and_then(|&index| inner.tasks.get(index))?;
        Some((task.started, task.duration))
    }

    /// Cancels live task `id` of `api`: `None` if there is no such task, `Some(Err(phase))` if it is no longer live.
    pub(crate) fn cancel(&self, id: &str, api: Api) -> Option<Result<(), Phase>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let index = *inner.by_id.get(id)?;
        let task = inner.tasks.get_mut(index).filter(|task| task.api == api)?;
        match task.phase(now) {
            phase if phase.is_live() => {
                task.info.cancelled = true;
                Some(Ok(()))
            }
            phase => Some(Err(phase)),
        }
    }

    /// Whether `id` names a task that has succeeded (its result files exist).
    pub(crate) fn has_result(&self, id: &str) -> bool {
        self.peek(id).is_some_and(|task| task.phase == Phase::Succeeded)
    }
}

/// Where the last frame of task `id` is served once it has succeeded.
pub(crate) fn last_frame_url(base_url: &str, id: &str) -> String {
    format!("{base_url}/frames/{id}-last.jpg")
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulator bound nowhere, for unit tests.
    pub(super) fn sim(config: SimConfig) -> Arc<Sim> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        Arc::new(Sim::new(config, addr, CancellationToken::new()).expect("valid config"))
    }

    fn new(prompt: &str, api: Api) -> NewTask {
        NewTask {
            api,
            model: "sora-2".into(),
            prompt: prompt.into(),
            first_frame_url: None,
            report_last_frame: true,
            callback: None,
        }
    }

    #[tokio::test]
    async fn reset_clears_counters_and_keeps_ids_unique() {
        let sim = sim(SimConfig::default());
        drop(sim.enter_poll("sim-1"));
        let id = sim.create(new("p", Api::Grsai));
        sim.bump(Counter::RateLimited);
        assert_ne!(sim.stats(), SimStats::default());
        sim.reset();
        assert_eq!(sim.stats(), SimStats::default());
        assert_ne!(sim.create(new("p", Api::Grsai)), id);
        assert_eq!(sim.poll("sim-404", Api::Grsai), None);
    }

    #[tokio::test]
    async fn duplicates_cancellation_and_apis() {
        let sim = sim(SimConfig {
            task_duration_ms: 60_000,
            ..SimConfig::default()
        });
        let first = sim.create(new("same", Api::Seedance));
        assert!(first.starts_with("cgt-"));
        sim.create(new("other", Api::Grsai));
        assert_eq!(sim.stats().duplicate_live_creates, 0);
        sim.create(new("same", Api::Grsai));
        assert_eq!(sim.stats().duplicate_live_creates, 1);

        assert_eq!(sim.poll(&first, Api::Grsai), None);
        assert_eq!(sim.cancel(&first, Api::Grsai), None);
        assert_eq!(sim.cancel(&first, Api::Seedance), Some(Ok(())));
        assert_eq!(sim.cancel(&first, Api::Seedance), Some(Err(Phase::Cancelled)));
        assert!(sim.stats().tasks[0].cancelled);
        let seen = sim.poll(&first, Api::Seedance).expect("known task");
        assert_eq!(seen.phase, Phase::Cancelled);
        assert_eq!(sim.stats().tasks[0].polls, 1);
    }
}
