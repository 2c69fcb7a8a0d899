//! Pure task logic: which API a task came through, how it ends (from markers in its prompt), and where it stands at
//! a given instant. No clocks, no locks: the state module feeds in elapsed times.

use std::time::Duration;

/// Which provider API a request or task belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// Grsai: `/v1/...`, errors shaped `{code, msg}`.
    Grsai,
    /// Seedance on BytePlus ModelArk: `/api/v3/...`, errors shaped `{error: {code, message}}`.
    Seedance,
}

impl Api {
    /// The API a request path belongs to.
    pub(crate) fn of_path(path: &str) -> Self {
        if path.starts_with("/api/v3/") {
            Self::Seedance
        } else {
            Self::Grsai
        }
    }

    /// The name reported in [`crate::SimTaskInfo::provider`].
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Grsai => "grsai",
            Self::Seedance => "seedance",
        }
    }
}

/// How a task ends, decided by markers in its prompt (or by the `never_finish_rate` fault).
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

/// Why a task failed, in the simulator's own terms; each API words it its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Error,
    InputModeration,
    OutputModeration,
}

/// Where a task stands at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Running {
        progress: u8,
    },
    Succeeded,
    Failed(Failure),
    /// Cancelled through the Seedance API.
    Cancelled,
}

impl Phase {
    /// Neither finished nor failed nor cancelled.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Self::Running { .. })
    }
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
        Outcome::Fail => Phase::Failed(Failure::Error),
        Outcome::InputModeration => Phase::Failed(Failure::InputModeration),
        Outcome::OutputModeration => Phase::Failed(Failure::OutputModeration),
    }
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
        assert_eq!(
            phase_at(Outcome::InputModeration, 3 * SEC, 2 * SEC),
            Phase::Failed(Failure::InputModeration)
        );
        assert!(at(10).is_live());
        assert!(!at(2000).is_live());
        assert!(!Phase::Cancelled.is_live());
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
    fn paths_name_their_api() {
        assert_eq!(Api::of_path("/v1/draw/result"), Api::Grsai);
        assert_eq!(Api::of_path("/api/v3/contents/generations/tasks"), Api::Seedance);
        assert_eq!(Api::Seedance.as_str(), "seedance");
    }
}
