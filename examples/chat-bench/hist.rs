//! A lock-free latency histogram in microseconds: log-linear buckets (64
//! per power of two, under 1.6 % error), shared by every task through
//! relaxed atomics. Each thread records into its own shard, so the
//! runtime's worker threads do not fight over cache lines at a million
//! records per second; reading merges the shards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Values below this are counted exactly.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 6;
/// Largest exponent tracked (2^40 µs is about 12 days); larger values are
/// clamped into the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = LINEAR as usize + ((MAX_EXP - 7 + 1) as usize) * (1 << SUB_BITS);

/// Shards per histogram (threads beyond this share shards).
const SHARDS: usize = 8;

struct Shard {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    max: AtomicU64,
}

/// Latency histogram (µs).
pub struct Histogram {
    shards: Vec<Shard>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                    count: AtomicU64::new(0),
                    max: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

/// This thread's shard number.
pub fn shard_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static MINE: usize = (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % SHARDS;
    }
    MINE.with(|m| *m)
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = (63 - v.leading_zeros()).min(MAX_EXP);
    let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
    let mant = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    LINEAR as usize + ((e - 7) as usize) * (1 << SUB_BITS) + mant as usize
}

/// The largest value that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let e = (j >> SUB_BITS) as u32 + 7;
    let mant = (j & ((1 << SUB_BITS) - 1)) as u64;
    let step = 1u64 << (e - SUB_BITS);
    (1u64 << e) + mant * step + step - 1
}

impl Histogram {
    /// Records one value in microseconds.
    pub fn record(&self, us: u64) {
        let s = &self.shards[shard_index()];
        s.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        s.count.fetch_add(1, Ordering::Relaxed);
        s.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Records a duration.
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.max.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// The value at quantile `q` (0..=1), as the upper bound of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for i in 0..BUCKETS {
            seen += self
                .shards
                .iter()
                .map(|s| s.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            if seen >= rank {
                return upper(i).min(self.max());
            }
        }
        self.max()
    }

    /// The counts in a mergeable text form, for another process to
    /// [`import`](Self::import): `max=<µs>` then `<bucket>:<count>` for every
    /// bucket that is not empty, comma-separated (or `-`).
    pub fn export(&self) -> String {
        let buckets: Vec<String> = (0..BUCKETS)
            .filter_map(|i| {
                let n: u64 = self
                    .shards
                    .iter()
                    .map(|s| s.buckets[i].load(Ordering::Relaxed))
                    .sum();
                (n > 0).then(|| format!("{i}:{n}"))
            })
            .collect();
        let list = if buckets.is_empty() {
            "-".to_owned()
        } else {
            buckets.join(",")
        };
        format!("max={} {list}", self.max())
    }

    /// Adds the counts of an [`export`](Self::export)ed histogram.
    pub fn import(&self, text: &str) -> Result<(), String> {
        let bad = || {
            format!(
                "bad histogram {:?}",
                text.chars().take(60).collect::<String>()
            )
        };
        let mut words = text.split_whitespace();
        let max: u64 = words
            .next()
            .and_then(|w| w.strip_prefix("max="))
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        let list = words.next().ok_or_else(bad)?;
        let mut parsed = Vec::new();
        if list != "-" {
            for pair in list.split(',') {
                let (i, n) = pair.split_once(':').ok_or_else(bad)?;
                let i: usize = i.parse().map_err(|_| bad())?;
                let n: u64 = n.parse().map_err(|_| bad())?;
                if i >= BUCKETS {
                    return Err(bad());
                }
                parsed.push((i, n));
            }
        }
        let s = &self.shards[shard_index()];
        for (i, n) in parsed {
            s.buckets[i].fetch_add(n, Ordering::Relaxed);
            s.count.fetch_add(n, Ordering::Relaxed);
        }
        s.max.fetch_max(max, Ordering::Relaxed);
        Ok(())
    }

    /// `p50=… p99=… p999=… max=…` in milliseconds.
    pub fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50={:.2}ms p99={:.2}ms p999={:.2}ms max={:.2}ms",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms(self.max()),
        )
    }
}

/// One counter per cache line.
#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A counter sharded like [`Histogram`], for hot paths.
#[derive(Default)]
pub struct Counter {
    shards: [Padded; SHARDS],
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.shards[shard_index()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last);
            last = i;
            assert!(upper(i) >= v);
            assert!(upper(i) - v <= v / 60 + 1, "v={v} upper={}", upper(i));
        }
    }

    #[test]
    fn export_then_import_merges_exactly() {
        let (a, b, both) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 0..5_000u64 {
            let h = if v % 3 == 0 { &a } else { &b };
            h.record(v * 37);
            both.record(v * 37);
        }
        let merged = Histogram::default();
        merged.import(&a.export()).unwrap();
        merged.import(&b.export()).unwrap();
        merged.import(&Histogram::default().export()).unwrap();
        assert_eq!(merged.count(), both.count());
        assert_eq!(merged.summary(), both.summary());
        assert!(merged.import("max=1 9999999:1").is_err());
        assert!(merged.import("nonsense").is_err());
    }
}
