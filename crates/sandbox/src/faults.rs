//! Fault knobs set through `POST /admin/faults`, so tools can provoke SLO
//! breaches deterministically.
//!
//! ```json
//! {"latency_ms": 300, "error_rate": 0.05, "stall_every_ms": 10000, "stall_for_ms": 2000,
//!  "db_latency_ms": 50, "slow_query_ms": 1500, "down": ["cache"]}
//! ```
//! Latency, errors and stalls apply to the marketplace routes (`/api`, `/graphql`,
//! `/auth`), never to `/metrics`, `/healthz` or `/admin`. A dependency marked
//! down fails every call to it at once, as a refused connection would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A dependency that can be marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    /// The catalog store (PostgreSQL or the in-memory catalog).
    Database,
    /// The response cache (Redis or in-process).
    Cache,
}

impl Dependency {
    /// The `dependency` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Cache => "cache",
        }
    }
}

/// The faults requested by an operator or a test. All zero = no fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Added to every marketplace request, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of marketplace requests answered with HTTP 500, from 0 to 1. Spread
    /// evenly: 0.25 fails exactly every fourth request.
    #[serde(default)]
    pub error_rate: f64,
    /// Period of stalls (all requests pause), in milliseconds; 0 = no stalls.
    #[serde(default)]
    pub stall_every_ms: u64,
    /// Length of each stall, in milliseconds; shorter than `stall_every_ms`.
    #[serde(default)]
    pub stall_for_ms: u64,
    /// Added to every database query while it holds a pooled connection, in
    /// milliseconds: saturates the pool under load.
    #[serde(default)]
    pub db_latency_ms: u64,
    /// The catalog search statement runs this long inside PostgreSQL
    /// (`pg_sleep` in the statement), so the database itself records a slow
    /// query (`pg_stat_statements`); the in-memory catalog ignores it.
    #[serde(default)]
    pub slow_query_ms: u64,
    /// Dependencies that fail every call.
    #[serde(default)]
    pub down: Vec<Dependency>,
}

impl FaultSpec {
    /// Rejects values that cannot be honoured, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("error_rate must be between 0 and 1, got {}", self.error_rate));
        }
        if self.latency_ms > 600_000 {
            return Err(format!(
                "latency_ms must be at most 600000 (10 min), got {}",
                self.latency_ms
            ));
        }
        if self.slow_query_ms > 600_000 {
            return Err(format!(
                "slow_query_ms must be at most 600000, got {}",
                self.slow_query_ms
            ));
        }
        if self.db_latency_ms > 600_000 {
            return Err(format!(
                "db_latency_ms must be at most 600000, got {}",
                self.db_latency_ms
            ));
        }
        if self.stall_every_ms > 0 && self.stall_for_ms >= self.stall_every_ms {
            return Err(format!(
                "stall_for_ms ({}) must be shorter than stall_every_ms ({})",
                self.stall_for_ms, self.stall_every_ms
            ));
        }
        if self.stall_every_ms == 0 && self.stall_for_ms > 0 {
            return Err("stall_for_ms needs stall_every_ms".to_owned());
        }
        Ok(())
    }
}

/// What the fault middleware must do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// Wait this long before handling the request.
    pub delay: Duration,
    /// Answer with HTTP 500 instead of handling it.
    pub fail: bool,
}

#[derive(Debug)]
struct Active {
    spec: FaultSpec,
    since: Instant,
}

/// The live fault state, shared by handlers and dependencies.
#[derive(Debug, Clone)]
pub struct Faults {
    active: Arc<RwLock<Active>>,
    requests: Arc<AtomicU64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            active: Arc::new(RwLock::new(Active {
                spec: FaultSpec::default(),
                since: Instant::now(),
            })),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Faults {
    /// Replaces the active faults (validated by the caller) and restarts the
    /// error-rate and stall clocks.
    pub fn set(&self, spec: FaultSpec) {
        let mut active = self.active.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *active = Active { spec, since: Instant::now() };
        self.requests.store(0, Ordering::SeqCst);
    }

    /// The active faults.
    pub fn spec(&self) -> FaultSpec {
        self.active.read().unwrap_or_else(std::sync::PoisonError::into_inner).spec.clone()
    }

    /// Whether `dependency` is marked down.
    pub fn is_down(&self, dependency: Dependency) -> bool {
        self.active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .spec
            .down
            .contains(&dependency)
    }

    /// Decides the fate of the next marketplace request.
    pub fn next_request(&self) -> Injection {
        let active = self.active.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let spec = &active.spec;
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        // Request n fails when the running total of expected failures steps up.
        let fail = spec.error_rate > 0.0
            && ((n + 1) as f64 * spec.error_rate).floor() > (n as f64 * spec.error_rate).floor();
        let mut delay = Duration::from_millis(spec.latency_ms);
        if spec.stall_every_ms > 0 && spec.stall_for_ms > 0 {
            let elapsed = active.since.elapsed().as_millis() as u64;
            let phase = elapsed % spec.stall_every_ms;
            if phase < spec.stall_for_ms {
                delay += Duration::from_millis(spec.stall_for_ms - phase);
            }
        }
        Injection { delay, fail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_fails_exactly_that_share_spread_evenly() {
        let faults = Faults::default();
        faults.set(FaultSpec { error_rate: 0.25, ..FaultSpec::default() });
        let fails: Vec<bool> = (0..8).map(|_| faults.next_request().fail).collect();
        assert_eq!(fails, [false, false, false, true, false, false, false, true]);
    }

    #[test]
    fn full_error_rate_fails_everything_and_zero_nothing() {
        let faults = Faults::default();
        faults.set(FaultSpec { error_rate: 1.0, ..FaultSpec::default() });
        assert!((0..10).all(|_| faults.next_request().fail));
        faults.set(FaultSpec::default());
        assert!((0..10).all(|_| !faults.next_request().fail));
    }

    #[test]
    fn stalls_delay_requests_inside_the_stall_window() {
        let faults = Faults::default();
        faults.set(FaultSpec {
            stall_every_ms: 60_000,
            stall_for_ms: 30_000,
            ..FaultSpec::default()
        });
        let delay = faults.next_request().delay;
        assert!(delay > Duration::from_secs(29) && delay <= Duration::from_secs(30), "{delay:?}");
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let bad = FaultSpec { error_rate: 1.5, ..FaultSpec::default() };
        assert!(bad.validate().unwrap_err().contains("error_rate"));
        let bad = FaultSpec { stall_every_ms: 100, stall_for_ms: 100, ..FaultSpec::default() };
        assert!(bad.validate().unwrap_err().contains("stall_for_ms"));
    }
}
