//! When to try a model call again, how long to wait, and when to stop asking a provider.
//!
//! Invariants: at most [`MAX_RETRIES`] retries per call; a wait never exceeds
//! [`MAX_WAIT`], whatever `Retry-After` says; a client error other than 408/409/429 is never
//! retried (the same request would fail the same way).

use std::time::{Duration, Instant, SystemTime};

/// Retries after the first attempt.
pub const MAX_RETRIES: u32 = 3;
/// The first wait; each further one doubles, plus jitter.
pub const BASE_WAIT: Duration = Duration::from_millis(500);
/// No wait is longer, not even one a server asks for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// What to do about an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Worth another try: a timeout, a conflict, rate limiting, a server error.
    Retry,
    /// The request itself is wrong (bad key, unknown model, bad request).
    Fatal,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        408 | 409 | 425 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Fatal,
    }
}

/// `Retry-After` as a wait: delta-seconds or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before retry number `retry` (1-based): the server's `Retry-After` if it gave
/// one, else exponential backoff with up to 50% jitter; capped at [`MAX_WAIT`].
pub fn wait(retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let wait = retry_after.unwrap_or_else(|| {
        let exp = BASE_WAIT.saturating_mul(1 << retry.saturating_sub(1).min(16));
        exp.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5)
    });
    wait.min(MAX_WAIT)
}

/// A jitter in [0, 1) from the clock: enough to keep clients from retrying in step.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // std's hasher keys are random per process, so builders that failed together spread out
    // even on a clock with coarse resolution.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}

/// Stands in for a cool-down past what `Instant` can hold (about a century).
const FOR_GOOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Stops calling a provider that keeps failing, for a cool-down.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold: threshold.max(1), cooldown, failures: 0, open_until: None }
    }

    /// Whether the provider may be called at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// How long the provider stays skipped, if it is.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        self.open_until.filter(|until| *until > now).map(|until| until - now)
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    /// A call failed after its retries; past the threshold, skip the provider a while.
    /// After a cool-down the provider is on probation: its first failure opens the breaker
    /// again at once (half-open), rather than costing `threshold` more failed calls.
    pub fn failure(&mut self, now: Instant) {
        let probation = self.open_until.is_some();
        self.failures = self.failures.saturating_add(1);
        if probation || self.failures >= self.threshold {
            // A cool-down too long for the clock means "for good", not a panic.
            self.open_until = Some(now.checked_add(self.cooldown).unwrap_or(now + FOR_GOOD));
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(verdict(200), Verdict::Ok);
        for s in [408, 409, 429, 500, 502, 503, 529] {
            assert_eq!(verdict(s), Verdict::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(verdict(s), Verdict::Fatal, "{s}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(12)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn waits_grow_with_jitter_and_are_capped() {
        assert_eq!(wait(1, None, 0.0), BASE_WAIT);
        assert_eq!(wait(2, None, 0.0), BASE_WAIT * 2);
        assert_eq!(wait(3, None, 1.0), (BASE_WAIT * 4).mul_f64(1.5));
        assert_eq!(wait(40, None, 0.5), MAX_WAIT);
        assert_eq!(wait(1, Some(Duration::from_secs(3)), 0.9), Duration::from_secs(3));
        assert_eq!(wait(1, Some(Duration::from_secs(3600)), 0.0), MAX_WAIT);
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_closes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(60));
        b.failure(t0);
        assert!(b.allows(t0));
        b.failure(t0);
        assert!(!b.allows(t0 + Duration::from_secs(59)));
        assert!(b.allows(t0 + Duration::from_secs(60)));
        // Half-open: one failure after the cool-down opens it again.
        let t1 = t0 + Duration::from_secs(61);
        b.failure(t1);
        assert!(!b.allows(t1 + Duration::from_secs(1)));
        b.success();
        assert!(b.allows(t0));
        b.failure(t1);
        assert!(b.allows(t1), "after a success the threshold counts again");
    }
}
