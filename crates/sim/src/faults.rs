//! Fault injection: the knobs ([`FaultConfig`]) and the random draws behind them ([`Faults`]).
//!
//! Request faults are drawn once per API request from one uniform number split into consecutive bands
//! (`rate_429`, then `rate_5xx`, `timeout_rate`, `malformed_rate`), so each rate is exactly the probability of its
//! fault and the rates must add up to at most 1. With `seed` set, the draws repeat from run to run (for requests
//! that arrive in the same order).

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How long a timed-out request hangs before it answers 504, unless configured.
const DEFAULT_TIMEOUT_HANG_MS: u64 = 60_000;

/// The 5xx statuses a `rate_5xx` fault picks from, uniformly.
const SERVER_ERRORS: [u16; 3] = [500, 502, 503];

/// What can go wrong, and how often; the default is a perfect provider.
///
/// Rates are probabilities in `0.0..=1.0`. Request faults apply to the provider API endpoints (Grsai and Seedance
/// create, status and cancel), not to `/sim/*` or the placeholder files. Set at start-up through
/// [`crate::SimConfig::faults`], or at runtime with `POST /sim/config` (read back with `GET /sim/config`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Seeds the random draws so that a run can be repeated; `None` seeds from the operating system.
    pub seed: Option<u64>,
    /// Probability that a request is answered 429.
    pub rate_429: f64,
    /// `Retry-After` (seconds) sent with every 429; `None` sends no header.
    pub retry_after_secs: Option<u64>,
    /// Probability that a request is answered 500, 502 or 503 (a faulted create creates nothing).
    pub rate_5xx: f64,
    /// Lower bound of the uniform extra latency added to each request, in milliseconds.
    pub latency_ms_min: u64,
    /// Upper bound of the uniform extra latency added to each request, in milliseconds.
    pub latency_ms_max: u64,
    /// Probability that a request hangs for `timeout_hang_ms` and then answers 504 (a hung create creates nothing).
    pub timeout_rate: f64,
    /// How long a timed-out request hangs, in milliseconds.
    pub timeout_hang_ms: u64,
    /// Probability that a request is answered 200 with a body that is not JSON (a malformed create creates nothing).
    pub malformed_rate: f64,
    /// Probability that a created task never finishes, as if its prompt said `[sim:never]`.
    pub never_finish_rate: f64,
    /// A request arriving while this many API requests are already in flight is answered 429 at once.
    pub max_concurrency: Option<u64>,
    /// Probability that a webhook delivery is silently dropped.
    pub webhook_drop_rate: f64,
    /// Probability that a webhook delivery is sent twice.
    pub webhook_duplicate_rate: f64,
    /// Upper bound of the uniform random delay of each webhook POST, in milliseconds (reorders deliveries).
    pub webhook_delay_ms_max: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: None,
            rate_429: 0.0,
            retry_after_secs: None,
            rate_5xx: 0.0,
            latency_ms_min: 0,
            latency_ms_max: 0,
            timeout_rate: 0.0,
            timeout_hang_ms: DEFAULT_TIMEOUT_HANG_MS,
            malformed_rate: 0.0,
            never_finish_rate: 0.0,
            max_concurrency: None,
            webhook_drop_rate: 0.0,
            webhook_duplicate_rate: 0.0,
            webhook_delay_ms_max: 0,
        }
    }
}

impl FaultConfig {
    /// Checks that every rate is a probability, the request fault rates add up to at most 1, and the latency bounds
    /// are ordered; says what is wrong otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("rate_429", self.rate_429),
            ("rate_5xx", self.rate_5xx),
            ("timeout_rate", self.timeout_rate),
            ("malformed_rate", self.malformed_rate),
            ("never_finish_rate", self.never_finish_rate),
            ("webhook_drop_rate", self.webhook_drop_rate),
            ("webhook_duplicate_rate", self.webhook_duplicate_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0..=1, got {rate}"));
            }
        }
        let request_faults = self.rate_429 + self.rate_5xx + self.timeout_rate + self.malformed_rate;
        if request_faults > 1.0 + f64::EPSILON {
            return Err(format!(
                "rate_429 + rate_5xx + timeout_rate + malformed_rate must be at most 1, got {request_faults}"
            ));
        }
        if self.latency_ms_min > self.latency_ms_max {
            return Err(format!(
                "latency_ms_min ({}) must not exceed latency_ms_max ({})",
                self.latency_ms_min, self.latency_ms_max
            ));
        }
        Ok(())
    }
}

/// A fault drawn for one API request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer 429.
    RateLimited,
    /// Answer with this 5xx status.
    ServerError(u16),
    /// Hang, then answer 504.
    Timeout,
    /// Answer 200 with a body that is not JSON.
    Malformed,
}

/// The current [`FaultConfig`] with its random number generator.
#[derive(Debug)]
pub(crate) struct Faults {
    config: FaultConfig,
    rng: StdRng,
}

impl Faults {
    /// Faults per `config`, seeded from `config.seed` when set.
    pub(crate) fn new(config: FaultConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { config, rng }
    }

    pub(crate) fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// The extra latency for one request.
    pub(crate) fn latency(&mut self) -> Duration {
        let (min, max) = (self.config.latency_ms_min, self.config.latency_ms_max);
        let ms = if max > min {
            self.rng.random_range(min..=max)
        } else {
            min
        };
        Duration::from_millis(ms)
    }

    /// The fault for one request, if any.
    pub(crate) fn draw(&mut self) -> Option<Fault> {
        let config = &self.config;
        let bands = [
            (config.rate_429, Fault::RateLimited),
            (config.rate_5xx, Fault::ServerError(0)),
            (config.timeout_rate, Fault::Timeout),
            (config.malformed_rate, Fault::Malformed),
        ];
        if bands.iter().all(|&(rate, _)| rate <= 0.0) {
            return None;
        }
        let draw: f64 = self.rng.random();
        let mut edge = 0.0;
        for (rate, fault) in bands {
            edge += rate;
            if draw < edge {
                return Some(match fault {
                    Fault::ServerError(_) => {
                        let index = self.rng.random_range(0..SERVER_ERRORS.len());
                        Fault::ServerError(SERVER_ERRORS.get(index).copied().unwrap_or(500))
                    }
                    other => other,
                });
            }
        }
        None
    }

    /// Whether a new task is to run forever.
    pub(crate) fn never_finishes(&mut self) -> bool {
        self.chance(self.config.never_finish_rate)
    }

    /// The delays of the POSTs for one webhook delivery: none when it is dropped, two when it is duplicated.
    pub(crate) fn delivery(&mut self) -> Vec<Duration> {
        if self.chance(self.config.webhook_drop_rate) {
            return Vec::new();
        }
        let copies = if self.chance(self.config.webhook_duplicate_rate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| Duration::from_millis(self.up_to(self.config.webhook_delay_ms_max)))
            .collect()
    }

    /// A uniform number in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        match max {
            0 => 0,
            max => self.rng.random_range(0..=max),
        }
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(config: FaultConfig) -> Faults {
        Faults::new(FaultConfig {
            seed: Some(7),
            ..config
        })
    }

    #[test]
    fn default_is_valid_and_draws_nothing() {
        let config = FaultConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.timeout_hang_ms, 60_000);
        let mut faults = faults(config);
        for _ in 0..100 {
            assert_eq!(faults.draw(), None);
            assert_eq!(faults.latency(), Duration::ZERO);
            assert!(!faults.never_finishes());
            assert_eq!(faults.delivery(), vec![Duration::ZERO]);
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = [
            FaultConfig {
                rate_429: 1.5,
                ..FaultConfig::default()
            },
            FaultConfig {
                webhook_drop_rate: f64::NAN,
                ..FaultConfig::default()
            },
            FaultConfig {
                rate_429: 0.6,
                rate_5xx: 0.6,
                ..FaultConfig::default()
            },
            FaultConfig {
                latency_ms_min: 10,
                latency_ms_max: 5,
                ..FaultConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn certain_faults_always_happen() {
        let mut always_429 = faults(FaultConfig {
            rate_429: 1.0,
            ..FaultConfig::default()
        });
        assert!((0..50).all(|_| always_429.draw() == Some(Fault::RateLimited)));
        let mut always_5xx = faults(FaultConfig {
            rate_5xx: 1.0,
            ..FaultConfig::default()
        });
        assert!((0..50).all(|_| matches!(always_5xx.draw(), Some(Fault::ServerError(500 | 502 | 503)))));
        let mut dropped = faults(FaultConfig {
            webhook_drop_rate: 1.0,
            ..FaultConfig::default()
        });
        assert!(dropped.delivery().is_empty());
        let mut doubled = faults(FaultConfig {
            webhook_duplicate_rate: 1.0,
            webhook_delay_ms_max: 30,
            ..FaultConfig::default()
        });
        let delays = doubled.delivery();
        assert_eq!(delays.len(), 2);
        assert!(delays.iter().all(|delay| *delay <= Duration::from_millis(30)));
    }

    #[test]
    fn rates_split_one_draw_and_a_seed_repeats_them() {
        let config = FaultConfig {
            rate_429: 0.25,
            rate_5xx: 0.25,
            timeout_rate: 0.25,
            malformed_rate: 0.25,
            latency_ms_min: 5,
            latency_ms_max: 10,
            ..FaultConfig::default()
        };
        let run = |config: &FaultConfig| {
            let mut faults = faults(config.clone());
            (0..400)
                .map(|_| (faults.draw(), faults.latency()))
                .collect::<Vec<_>>()
        };
        let first = run(&config);
        assert_eq!(first, run(&config));
        assert!(first.iter().all(|(fault, _)| fault.is_some()));
        let timeouts = first
            .iter()
            .filter(|(fault, _)| *fault == Some(Fault::Timeout))
            .count();
        assert!((50..150).contains(&timeouts), "{timeouts} timeouts in 400");
        assert!(first
            .iter()
            .all(|(_, latency)| (5..=10).contains(&latency.as_millis())));
    }
}
