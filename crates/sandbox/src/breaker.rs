//! A circuit breaker per dependency, its state exported as
//! `circuit_breaker_state{dependency,state}`.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures open it.
//! Open: calls are rejected at once for `open_for`, then one trial call is let
//! through (half-open). A successful trial closes the breaker, a failed one opens
//! it again.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec};

/// The three states of a breaker, as exported in the `state` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass through.
    Closed,
    /// Calls are rejected without reaching the dependency.
    Open,
    /// One trial call is in flight; its outcome decides the next state.
    HalfOpen,
}

impl BreakerState {
    const ALL: [BreakerState; 3] =
        [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];

    /// The label value: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a guarded call did not succeed.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// The breaker is open: the dependency was not called.
    Open {
        /// The guarded dependency.
        dependency: &'static str,
        /// How long until the breaker lets a trial call through.
        retry_after: Duration,
    },
    /// The dependency was called and failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open { dependency, .. } => {
                write!(f, "{dependency} circuit breaker is open")
            }
            BreakerError::Inner(e) => e.fmt(f),
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
}

/// Guards calls to one dependency.
#[derive(Debug)]
pub struct CircuitBreaker {
    dependency: &'static str,
    failure_threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
    state_gauge: IntGaugeVec,
    transitions: IntCounterVec,
}

impl CircuitBreaker {
    /// A closed breaker for `dependency`, exporting its state into the given series.
    pub fn new(
        dependency: &'static str,
        failure_threshold: u32,
        open_for: Duration,
        state_gauge: IntGaugeVec,
        transitions: IntCounterVec,
    ) -> Self {
        let breaker = Self {
            dependency,
            failure_threshold: failure_threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
            }),
            state_gauge,
            transitions,
        };
        breaker.export(BreakerState::Closed);
        breaker
    }

    /// The current state (an open breaker whose wait is over still reads open
    /// until the next call tries it).
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// The dependency it guards.
    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    /// How long a caller should wait before trying again: the rest of the
    /// open period, or the whole period when the breaker is not open (a trial
    /// is in flight, or a call just failed).
    pub fn retry_after(&self) -> Duration {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open => self.open_for.saturating_sub(inner.opened_at.elapsed()),
            _ => self.open_for,
        }
    }

    /// Runs `call` unless the breaker is open, and records its outcome.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        if !self.admit() {
            return Err(BreakerError::Open {
                dependency: self.dependency,
                retry_after: self.retry_after(),
            });
        }
        let outcome = call.await;
        self.record(outcome.is_ok());
        outcome.map_err(BreakerError::Inner)
    }

    fn admit(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open if inner.opened_at.elapsed() >= self.open_for => {
                self.transition(&mut inner, BreakerState::HalfOpen);
                true
            }
            BreakerState::Open => false,
        }
    }

    fn record(&self, success: bool) {
        let mut inner = self.lock();
        if success {
            inner.consecutive_failures = 0;
            if inner.state != BreakerState::Closed {
                self.transition(&mut inner, BreakerState::Closed);
            }
            return;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trips = match inner.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => inner.consecutive_failures >= self.failure_threshold,
            BreakerState::Open => false,
        };
        if trips {
            inner.opened_at = Instant::now();
            self.transition(&mut inner, BreakerState::Open);
        }
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState) {
        let from = inner.state;
        inner.state = to;
        self.transitions.with_label_values(&[self.dependency, from.as_str(), to.as_str()]).inc();
        self.export(to);
        tracing::warn!(dependency = self.dependency, %from, %to, "circuit breaker state change");
    }

    fn export(&self, current: BreakerState) {
        for state in BreakerState::ALL {
            self.state_gauge
                .with_label_values(&[self.dependency, state.as_str()])
                .set(i64::from(state == current));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the state itself is still valid.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn breaker(open_for: Duration) -> (CircuitBreaker, IntGaugeVec) {
        let gauge = IntGaugeVec::new(Opts::new("state", "s"), &["dependency", "state"]).unwrap();
        let transitions =
            IntCounterVec::new(Opts::new("t", "t"), &["dependency", "from", "to"]).unwrap();
        (CircuitBreaker::new("database", 3, open_for, gauge.clone(), transitions), gauge)
    }

    async fn fail(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
        b.call(async { Err::<(), _>("boom") }).await
    }

    async fn succeed(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
        b.call(async { Ok::<(), &str>(()) }).await
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_rejects_without_calling() {
        let (b, gauge) = breaker(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(matches!(fail(&b).await, Err(BreakerError::Inner("boom"))));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(gauge.with_label_values(&["database", "open"]).get(), 1);
        assert_eq!(gauge.with_label_values(&["database", "closed"]).get(), 0);
        let mut called = false;
        let outcome = b
            .call(async {
                called = true;
                Ok::<(), &str>(())
            })
            .await;
        assert!(matches!(outcome, Err(BreakerError::Open { dependency: "database", .. })));
        assert!(!called);
    }

    #[tokio::test]
    async fn a_success_resets_the_failure_count() {
        let (b, _) = breaker(Duration::from_secs(60));
        fail(&b).await.ok();
        fail(&b).await.ok();
        succeed(&b).await.unwrap();
        fail(&b).await.ok();
        fail(&b).await.ok();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn half_open_trial_closes_on_success_and_reopens_on_failure() {
        let (b, _) = breaker(Duration::from_millis(20));
        for _ in 0..3 {
            fail(&b).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(matches!(fail(&b).await, Err(BreakerError::Inner(_))));
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(30)).await;
        succeed(&b).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
