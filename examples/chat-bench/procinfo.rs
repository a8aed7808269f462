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

/// Open file descriptors of `pid` (sockets included).
pub fn open_fds(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The parent pid from a /proc `stat` file.
fn stat_ppid(path: &std::path::Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    let close = s.rfind(')')?;
    // Fields after ")": state, ppid, ...
    s[close + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and every process descended from it (e.g. a PostgreSQL
/// postmaster and its backends).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_ppid(&e.path().join("stat")) {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// CPU seconds used so far by `pid` and its descendants (those alive now).
pub fn tree_cpu_secs(pid: u32) -> f64 {
    process_tree(pid)
        .iter()
        .filter_map(|p| cpu_secs(&p.to_string()))
        .sum()
}

/// The whole machine's CPU time so far, from the first line of /proc/stat:
/// user (with nice), system, interrupts (irq + softirq: loopback TCP is
/// mostly here, and is charged to no process), idle (with iowait), steal.
fn machine_ticks() -> Option<[f64; 5]> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    Some([at(0) + at(1), at(2), at(5) + at(6), at(3) + at(4), at(7)])
}

/// A snapshot of the machine's CPU time, to print where it went since.
pub struct MachineCpu {
    at: std::time::Instant,
    ticks: Option<[f64; 5]>,
}

impl MachineCpu {
    /// Takes a snapshot.
    pub fn take() -> Self {
        MachineCpu {
            at: std::time::Instant::now(),
            ticks: machine_ticks(),
        }
    }

    /// `user=… system=… irq=… idle=… steal=…` in cores since the snapshot.
    pub fn report(&self) -> String {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        match (self.ticks, machine_ticks()) {
            (Some(a), Some(b)) => {
                let c = |i: usize| (b[i] - a[i]) / TICKS / wall;
                format!(
                    "user={:.2} system={:.2} irq={:.2} idle={:.2} steal={:.2} cores",
                    c(0),
                    c(1),
                    c(2),
                    c(3),
                    c(4)
                )
            }
            _ => "?".to_owned(),
        }
    }
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

    /// CPU used since the snapshot, in cores of wall time.
    pub fn cores(&self) -> Option<f64> {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        Some((cpu_secs(&self.pid)? - self.total?) / wall)
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
