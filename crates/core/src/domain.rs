//! Gantry's vocabulary: batch modes, task and batch states, models, providers and failure codes.
//!
//! This is the one module that knows how each of them is spelled on the wire and in Redis. Everything else
//! holds the enums and converts at the edges: `as_str` to write, `parse` (or `str::parse`, or serde) to read. An
//! unknown spelling is an error ([`UnknownValue`]), never a default.

use std::{fmt, str::FromStr};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A spelling that names no value of a vocabulary type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

/// Declares a vocabulary enum with its canonical spelling (and accepted aliases), `ALL`, `as_str`, `parse`,
/// `Display`, `FromStr` and serde through the same spellings.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $kind:literal $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The canonical spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The value spelled `s` (canonical or alias), if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text $(| $alias)* => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| UnknownValue {
                    kind: $kind,
                    value: s.to_owned(),
                    expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// How the tasks of a batch run.
    "mode" Mode {
        /// All tasks at once, under the provider's limits.
        Parallel = "parallel",
        /// Shot i+1 starts after shot i succeeded, from shot i's last frame.
        Chain = "chain",
    }
}

vocabulary! {
    /// `queued → submitting → running → succeeded | failed`, and `cancelled` from any non-terminal state.
    "task status" TaskStatus {
        Queued = "queued",
        /// A submitter holds a lease and is calling the provider.
        Submitting = "submitting",
        /// The provider has the task.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Whether no provider holds the task yet (a submit may still start or restart it).
    pub fn is_before_provider(self) -> bool {
        matches!(self, Self::Queued | Self::Submitting)
    }
}

vocabulary! {
    /// `queued → in_progress → settling → completed`, or `cancelling → cancelled`.
    "batch status" BatchStatus {
        Queued = "queued",
        InProgress = "in_progress",
        /// Every task is terminal; settlement has not finished yet.
        Settling = "settling",
        Completed = "completed",
        /// Cancelled by the client; settles to `cancelled` once every task is terminal.
        Cancelling = "cancelling",
        Cancelled = "cancelled",
    }
}

impl BatchStatus {
    /// Whether nothing will change any more (the live stream closes).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// Whether settlement may run for the batch (its tasks are, or are being made, terminal).
    pub fn awaits_settlement(self) -> bool {
        matches!(self, Self::Settling | Self::Cancelling)
    }
}

vocabulary! {
    /// A model Gantry can generate with, by its canonical name; the old app's aliases are accepted on input.
    "model" Model {
        Sora2 = "sora-2",
        Veo31Fast = "veo3.1-fast" | "veo-flash",
        Veo31Pro = "veo3.1-pro" | "veo-pro",
    }
}

vocabulary! {
    /// A provider Gantry can talk to (its config section, limiter key and callback path segment).
    "provider" ProviderName {
        Grsai = "grsai",
        Seedance = "seedance",
    }
}

vocabulary! {
    /// Why a task did not succeed, as the API shows it.
    "failure code" FailureCode {
        /// The provider refused the prompt or inputs on content policy.
        InputModeration = "input_moderation",
        /// The provider refused to return what it generated.
        OutputModeration = "output_moderation",
        /// The provider failed, or kept failing until Gantry gave up.
        ProviderError = "provider_error",
        /// Still running past `poller.deadline_ms`.
        Timeout = "timeout",
        /// The provider refused the request for good (4xx).
        Rejected = "rejected",
        /// Cancelled by the client, or by a broken chain.
        Cancelled = "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_spelling_and_serde() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + Serialize + for<'de> Deserialize<'de>,
        {
            for value in all {
                let text = value.to_string();
                assert_eq!(text.parse::<T>().ok(), Some(*value));
                let json = serde_json::to_string(value).expect("serialize");
                assert_eq!(json, format!("\"{text}\""));
                assert_eq!(serde_json::from_str::<T>(&json).expect("deserialize"), *value);
            }
        }
        check(Mode::ALL);
        check(TaskStatus::ALL);
        check(BatchStatus::ALL);
        check(Model::ALL);
        check(ProviderName::ALL);
        check(FailureCode::ALL);
    }

    #[test]
    fn aliases_parse_and_unknown_values_are_errors() {
        assert_eq!(Model::parse("veo-flash"), Some(Model::Veo31Fast));
        assert_eq!(Model::parse("veo-pro"), Some(Model::Veo31Pro));
        assert_eq!(Model::Veo31Fast.as_str(), "veo3.1-fast");
        let err = "Running".parse::<TaskStatus>().expect_err("case matters");
        assert_eq!(err.kind, "task status");
        assert!(err.to_string().contains("queued, submitting"), "{err}");
        assert!(serde_json::from_str::<ProviderName>("\"acme\"").is_err());
    }
}
