//! Retry delays: exponential backoff with jitter, and `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// The delay before retry number `attempt` (0 for the first retry):
/// `base * 2^attempt`, at most `max`, then a random point in its upper
/// half, so that many clients failing at once do not retry in step.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let full = base
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(max);
    let half = full / 2;
    let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::thread_rng().gen_range(0..=jitter_ns))
}

/// A `Retry-After` header's delay, when it is a number of seconds
/// (`Retry-After: 3` or `Retry-After: 1.5`). The HTTP-date form is not
/// honoured: the backoff applies instead.
pub(crate) fn retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let secs: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_within_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..40 {
            let full = (base * 2u32.pow(attempt.min(10))).min(max);
            for _ in 0..20 {
                let d = backoff(attempt, base, max);
                assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn retry_after_seconds() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(retry_after(Some(&h("3"))), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some(&h(" 1.5 "))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(Some(&h("Wed, 21 Oct 2015 07:28:00 GMT"))), None);
        assert_eq!(retry_after(Some(&h("-1"))), None);
        assert_eq!(retry_after(None), None);
    }
}
