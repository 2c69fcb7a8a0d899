//! The simulator's in-memory state: tasks, how far along they are, and the counters behind `/sim/stats`.
//!
//! Everything lives behind one `std::sync::Mutex` that is never held across an `.await`. Concurrency is measured
//! with RAII guards ([`RequestGuard`], [`PollGuard`]) that count a request in on creation and out on drop, so a
//! cancelled or panicking handler still leaves the counters right.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use crate::{
    stats::{SimStats, SimTaskInfo},
    SimConfig,
};

/// How a task ends, decided by markers in its prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeed,
    Fail,
    InputModeration,
    OutputModeration,
    Never,
}

impl Outcome {
    /// The outcome the prompt asks for; the first matching marker in table order wins.
    pub(crate) fn from_prompt(prompt: &str) -> Self {
        if prompt.contains("[sim:fail]") {
            Self::Fail
        } else if prompt.contains("[sim:moderation]") {
            Self::InputModeration
        } else if prompt.contains("[sim:output-moderation]") {
            Self::OutputModeration
        } else if prompt.contains("[sim:never]") {
            Self::Never
        } else {
            Self::Succeed
        }
    }
}

/// Whether the prompt asks the create call itself to be rejected.
pub(crate) fn wants_reject(prompt: &str) -> bool {
    prompt.contains("[sim:reject]")
}

/// Where a task stands at some instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Running {
        progress: u8,
    },
    Succeeded,
    Failed {
        reason: &'static str,
        error: &'static str,
    },
}

/// The phase of a task with `outcome` that takes `duration`, `elapsed` after its creation.
pub(crate) fn phase_at(outcome: Outcome, elapsed: Duration, duration: Duration) -> Phase {
    if elapsed < duration || outcome == Outcome::Never {
        let ratio = if duration.is_zero() {
            1.0
        } else {
            elapsed.as_secs_f64() / duration.as_secs_f64()
        };
        // Truncation is intended: 99.9% is still 99.
        let progress = (ratio * 100.0).clamp(0.0, 99.0) as u8;
        return Phase::Running { progress };
    }
    match outcome {
        Outcome::Succeed | Outcome::Never => Phase::Succeeded,
        Outcome::Fail => Phase::Failed {
            reason: "error",
            error: "simulated failure",
        },
        Outcome::InputModeration => Phase::Failed {
            reason: "input_moderation",
            error: "simulated input moderation",
        },
        Outcome::OutputModeration => Phase::Failed {
            reason: "output_moderation",
            error: "simulated output moderation",
        },
    }
}

/// What a create call hands to the state once it is validated.
#[derive(Debug)]
pub(crate) struct NewTask {
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) first_frame_url: Option<String>,
}

#[derive(Debug)]
struct Task {
    info: SimTaskInfo,
    started: Instant,
    duration: Duration,
    outcome: Outcome,
}

#[derive(Debug, Default)]
struct Inner {
    /// Never reset, so that ids stay unique for the life of the simulator.
    next_id: u64,
    tasks: Vec<Task>,
    by_id: HashMap<String, usize>,
    creates: u64,
    polls: u64,
    in_flight: u64,
    max_in_flight: u64,
    polls_in_flight: HashMap<String, u64>,
    max_polls_per_task: u64,
}

/// One simulator's configuration and state, shared by its handlers.
#[derive(Debug)]
pub(crate) struct Sim {
    config: SimConfig,
    base_url: String,
    inner: Mutex<Inner>,
}

impl Sim {
    /// A simulator with no tasks; `addr` is where it is bound, for the default result URLs.
    pub(crate) fn new(config: SimConfig, addr: SocketAddr) -> Self {
        let base_url = match &config.public_base_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => crate::local_base_url(addr),
        };
        Self {
            config,
            base_url,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The base of result URLs, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is a few plain assignments.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot of the counters and tasks.
    pub(crate) fn stats(&self) -> SimStats {
        let inner = self.lock();
        SimStats {
            creates: inner.creates,
            polls: inner.polls,
            max_concurrent_requests: inner.max_in_flight,
            max_concurrent_polls_per_task: inner.max_polls_per_task,
            tasks: inner.tasks.iter().map(|task| task.info.clone()).collect(),
        }
    }

    /// Forgets every task and clears the counters; requests in flight stay counted until they finish.
    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        inner.tasks.clear();
        inner.by_id.clear();
        inner.creates = 0;
        inner.polls = 0;
        inner.max_in_flight = inner.in_flight;
        inner.max_polls_per_task = inner.polls_in_flight.values().copied().max().unwrap_or(0);
    }

    /// Counts one create call, whatever its fate.
    pub(crate) fn count_create(&self) {
        self.lock().creates += 1;
    }

    /// Stores a new task and returns its id.
    pub(crate) fn create(&self, new: NewTask) -> String {
        let duration = self.task_duration();
        let outcome = Outcome::from_prompt(&new.prompt);
        let created_at_ms = unix_ms();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = format!("sim-{}", inner.next_id);
        let info = SimTaskInfo {
            id: id.clone(),
            model: new.model,
            prompt: new.prompt,
            first_frame_url: new.first_frame_url,
            created_at_ms,
            finishes_at_ms: created_at_ms.saturating_add(duration_ms(duration)),
            polls: 0,
        };
        let index = inner.tasks.len();
        inner.tasks.push(Task {
            info,
            started: Instant::now(),
            duration,
            outcome,
        });
        inner.by_id.insert(id.clone(), index);
        id
    }

    /// The current phase of task `id`, counting the poll against it; `None` if the id is unknown.
    pub(crate) fn poll(&self, id: &str) -> Option<Phase> {
        let now = Instant::now();
        let mut inner = self.lock();
        let index = *inner.by_id.get(id)?;
        let task = inner.tasks.get_mut(index)?;
        task.info.polls += 1;
        Some(phase_at(
            task.outcome,
            now.saturating_duration_since(task.started),
            task.duration,
        ))
    }

    /// Whether `id` names a task that has succeeded (its result files exist).
    pub(crate) fn has_result(&self, id: &str) -> bool {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .by_id
            .get(id)
            .and_then(|&index| inner.tasks.get(index))
            .is_some_and(|task| {
                let elapsed = now.saturating_duration_since(task.started);
                phase_at(task.outcome, elapsed, task.duration) == Phase::Succeeded
            })
    }

    /// Counts an API request in until the guard is dropped.
    pub(crate) fn enter_request(self: &Arc<Self>) -> RequestGuard {
        let mut inner = self.lock();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        RequestGuard {
            sim: Arc::clone(self),
        }
    }

    /// Counts a status call for `id` (known or not) in until the guard is dropped.
    pub(crate) fn enter_poll(self: &Arc<Self>, id: &str) -> PollGuard {
        let mut inner = self.lock();
        inner.polls += 1;
        let in_flight = {
            let count = inner.polls_in_flight.entry(id.to_owned()).or_insert(0);
            *count += 1;
            *count
        };
        inner.max_polls_per_task = inner.max_polls_per_task.max(in_flight);
        PollGuard {
            sim: Arc::clone(self),
            id: id.to_owned(),
        }
    }

    fn task_duration(&self) -> Duration {
        let jitter = match self.config.duration_jitter_ms {
            0 => 0,
            max => rand::random_range(0..=max),
        };
        Duration::from_millis(self.config.task_duration_ms.saturating_add(jitter))
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

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn markers_pick_the_outcome() {
        assert_eq!(Outcome::from_prompt("a cat"), Outcome::Succeed);
        assert_eq!(Outcome::from_prompt("a cat [sim:fail]"), Outcome::Fail);
        assert_eq!(
            Outcome::from_prompt("[sim:moderation] x"),
            Outcome::InputModeration
        );
        assert_eq!(
            Outcome::from_prompt("[sim:output-moderation]"),
            Outcome::OutputModeration
        );
        assert_eq!(Outcome::from_prompt("[sim:never]"), Outcome::Never);
        assert!(wants_reject("no [sim:reject] thanks"));
        assert!(!wants_reject("a cat"));
    }

    #[test]
    fn progress_grows_linearly_then_the_outcome_shows() {
        let at = |ms| phase_at(Outcome::Succeed, Duration::from_millis(ms), 2 * SEC);
        assert_eq!(at(0), Phase::Running { progress: 0 });
        assert_eq!(at(1000), Phase::Running { progress: 50 });
        assert_eq!(at(1999), Phase::Running { progress: 99 });
        assert_eq!(at(2000), Phase::Succeeded);
        assert!(matches!(
            phase_at(Outcome::InputModeration, 3 * SEC, 2 * SEC),
            Phase::Failed {
                reason: "input_moderation",
                ..
            }
        ));
    }

    #[test]
    fn never_caps_progress_at_99() {
        assert_eq!(
            phase_at(Outcome::Never, 100 * SEC, SEC),
            Phase::Running { progress: 99 }
        );
        assert_eq!(
            phase_at(Outcome::Never, SEC, Duration::ZERO),
            Phase::Running { progress: 99 }
        );
    }

    #[test]
    fn guards_track_concurrency_and_reset_keeps_ids_unique() {
        let sim = Arc::new(Sim::new(
            SimConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 1)),
        ));
        let first = sim.enter_poll("sim-1");
        let second = sim.enter_poll("sim-1");
        let other = sim.enter_poll("sim-2");
        drop((first, second, other));
        let again = sim.enter_poll("sim-1");
        drop(again);
        assert_eq!(sim.stats().max_concurrent_polls_per_task, 2);
        assert_eq!(sim.stats().polls, 4);

        let new = || NewTask {
            model: "sora-2".into(),
            prompt: "p".into(),
            first_frame_url: None,
        };
        let id = sim.create(new());
        sim.reset();
        assert_eq!(sim.stats(), SimStats::default());
        assert_ne!(sim.create(new()), id);
        assert_eq!(sim.poll("sim-404"), None);
    }
}
