//! What the kernel tells about a process: open-files limit, RSS, CPU time
//! (whole process and per thread), and the machine's load average. All read
//! from /proc; absent on other systems, where the figures print as `?`.

use std::collections::BTreeMap;

/// `Max open files` (soft hard) of this process.
pub fn open_files_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    // "Max open files <soft> <hard> files"
                    match w.len() {
                        n if n >= 6 => format!("soft={} hard={}", w[3], w[4]),
                        _ => l.to_owned(),
                    }
                })
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `RssAnon`, `VmHWM`, ...).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resident set size of `pid` (or `self`) in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Clock ticks per second of /proc `stat` times (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

/// (comm, utime+stime seconds) from a /proc `stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // Fields after ")": state(3) ... utime is field 14, stime 15 (1-based).
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS))
}

/// CPU seconds used by the whole process so far.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat")).map(|(_, c)| c)
}

/// CPU seconds per thread name (threads with one name are summed).
pub fn thread_cpu(pid: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        if let Some((comm, c)) = stat_cpu(&format!("/proc/{pid}/task/{tid}/stat")) {
            *out.entry(comm).or_insert(0.0) += c;
        }
    }
    out
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

/// A snapshot of a process' CPU use, to print the difference later.
pub struct CpuSnapshot {
    pid: String,
    at: std::time::Instant,
    total: Option<f64>,
    threads: BTreeMap<String, f64>,
}

impl CpuSnapshot {
    /// Takes a snapshot of `pid` (or `self`).
    pub fn take(pid: &str) -> Self {
        CpuSnapshot {
            pid: pid.to_owned(),
            at: std::time::Instant::now(),
            total: cpu_secs(pid),
            threads: thread_cpu(pid),
        }
    }

    /// `cpu=1.83 cores (tokio-runtime-w 1.52, sqlite-writer 0.20, ...)`:
    /// CPU used since the snapshot, in cores of wall time, with the busiest
    /// thread groups.
    pub fn report(&self) -> String {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let total = match (self.total, cpu_secs(&self.pid)) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) / wall),
            _ => "?".to_owned(),
        };
        let now = thread_cpu(&self.pid);
        let mut per: Vec<(String, f64)> = now
            .into_iter()
            .map(|(k, v)| {
                let d = v - self.threads.get(&k).copied().unwrap_or(0.0);
                (k, d / wall)
            })
            .filter(|(_, v)| *v >= 0.005)
            .collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        let threads: Vec<String> = per
            .iter()
            .take(6)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        format!("cpu={total} cores over {wall:.1}s ({})", threads.join(", "))
    }
}
