//! Retries and circuit breaking for drivers that talk to a service (a container engine, a cloud
//! API): the policy as plain values, no clock and no randomness of their own (callers pass the
//! time and a jitter fraction), so they are deterministic in tests and usable from any runtime.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Exponential backoff with full jitter: attempt `n` (0-based) waits a random fraction of
/// `min(max, base * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Tries in all, the first included.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_secs(2),
            attempts: 4,
        }
    }
}

impl Backoff {
    /// The wait before retry `attempt` (1 = the first retry); `jitter` in `[0, 1]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX));
        let cap = exp.min(self.max);
        cap.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What a breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// The cool-down ended: one trial call goes through; its result closes or reopens.
    HalfOpen,
}

/// Opens after `threshold` consecutive failures, stays open for `cool_down`, then lets one call
/// try.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    cool_down: Duration,
    failures: u32,
    open_until: Option<Instant>,
    trial_out: bool,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            cool_down,
            failures: 0,
            open_until: None,
            trial_out: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go now; `Err` carries how long until it may.
    pub fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => Err(self.open_until.map(|u| u - now).unwrap_or_default()),
            BreakerState::HalfOpen if self.trial_out => Err(Duration::ZERO),
            BreakerState::HalfOpen => {
                self.trial_out = true;
                Ok(())
            }
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.trial_out = false;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        self.trial_out = false;
        if self.failures >= self.threshold || self.open_until.is_some() {
            self.open_until = Some(now + self.cool_down);
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
            attempts: 5,
        };
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(4, 1.0), Duration::from_millis(500));
        assert_eq!(b.delay(40, 1.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn breaker_opens_cools_down_and_tries_once() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(cb.allow(t0).is_ok());
            cb.failure(t0);
        }
        assert_eq!(cb.state(t0), BreakerState::Closed);
        cb.failure(t0);
        assert_eq!(cb.state(t0), BreakerState::Open);
        assert_eq!(cb.allow(t0 + Duration::from_secs(4)), Err(Duration::from_secs(6)));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(cb.state(later), BreakerState::HalfOpen);
        assert!(cb.allow(later).is_ok());
        assert!(cb.allow(later).is_err(), "only one trial at a time");
        cb.failure(later);
        assert_eq!(cb.state(later), BreakerState::Open);
        let much_later = later + Duration::from_secs(11);
        assert!(cb.allow(much_later).is_ok());
        cb.success();
        assert_eq!(cb.state(much_later), BreakerState::Closed);
        assert_eq!(cb.failures(), 0);
    }
}
