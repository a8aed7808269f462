//! `cluster --spawn-services`: a throw-away `redis-server` and PostgreSQL
//! on free loopback ports, each in a temporary folder.
//!
//! Each service runs under a small guard shell that holds a pipe from this
//! process: when the pipe closes (a clean [`Service::stop`], a drop on an
//! error path, or this process dying however it dies) the shell stops the
//! service and deletes its folder. So nothing outlives the run.
//!
//! The binaries: `$REDIS_SERVER`, else `redis-server` on `PATH`, else
//! `/usr/bin/redis-server`; PostgreSQL's from `$PG_BIN`, else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's packages; see
//! `scripts/services-setup.sh`). `initdb` refuses to run as root, so as root
//! the cluster is created and run as the `postgres` user (`runuser`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Longest wait for a service to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a service to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The guard shell (`sh -c GUARD sh SIGNAL DIR LOG PROGRAM ARGS...`):
/// starts the program in the background with its output in LOG, prints its
/// pid, waits for its stdin to close, then stops it with SIGNAL, waits for
/// it and removes DIR.
const GUARD: &str = r#"sig=$1 dir=$2 log=$3
shift 3
"$@" >"$log" 2>&1 &
pid=$!
echo "pid $pid"
read _ignored
kill -"$sig" "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;

/// A service under its guard shell.
pub struct Service {
    guard: Child,
    /// Closing it stops the service.
    pipe: Option<ChildStdin>,
    /// The service's own pid (for CPU figures).
    pub pid: u32,
    pub port: u16,
    pub url: String,
    log: PathBuf,
}

impl Service {
    /// The last lines of the service's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Stops the service and waits (bounded) for its guard to clean up.
    pub async fn stop(mut self) {
        self.pipe.take();
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.guard.wait()).await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A command, run as the `postgres` user when `as_postgres` (and root).
fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Starts `program args` under a guard shell; returns the guard and the
/// service's pid.
async fn guarded(
    as_postgres: bool,
    signal: &str,
    dir: &Path,
    log: &Path,
    program: &Path,
    args: &[String],
) -> Result<(Child, ChildStdin, u32), String> {
    let mut guard = command(as_postgres, Path::new("/bin/sh"))
        .args(["-c", GUARD, "sh", signal])
        .arg(dir)
        .arg(log)
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    let pipe = guard.stdin.take().ok_or("no guard stdin")?;
    let out = guard.stdout.take().ok_or("no guard stdout")?;
    let mut lines = BufReader::new(out).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "the guard shell printed no pid".to_owned())?
        .map_err(|e| format!("guard shell: {e}"))?
        .unwrap_or_default();
    let pid = first
        .strip_prefix("pid ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("guard shell said {first:?}"))?;
    Ok((guard, pipe, pid))
}

/// Whether `pid` still runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let close = s.rfind(')')?;
            s.get(close + 2..close + 3).map(|st| st != "Z")
        })
        .unwrap_or(false)
}

fn redis_binary() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("REDIS_SERVER") {
        Some(p) => vec![PathBuf::from(p)],
        None => std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("redis-server"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/bin/redis-server")])
            .collect(),
    };
    candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
        "redis-server not found (set REDIS_SERVER or run scripts/services-setup.sh)".to_owned()
    })
}

async fn redis_pings(port: u16) -> bool {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), go).await,
        Ok(Some(true))
    )
}

/// Starts a throw-away redis-server (no persistence).
pub async fn redis() -> Result<Service, String> {
    let bin = redis_binary()?;
    let mut last = String::new();
    // A free port may be taken between probing and binding: retry.
    for _ in 0..3 {
        let dir = tempfile::Builder::new()
            .prefix("chat-bench-redis-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let port = free_port()?;
        let log = dir.join("redis.log");
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--maxclients",
            "1000",
            "--dir",
            &dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (guard, pipe, pid) = match guarded(false, "TERM", &dir, &log, &bin, &args).await {
            Ok(g) => g,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let service = Service {
            guard,
            pipe: Some(pipe),
            pid,
            port,
            url: format!("redis://127.0.0.1:{port}/"),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline && alive(pid) {
            if redis_pings(port).await {
                return Ok(service);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last = service.log_tail();
        service.stop().await;
    }
    Err(format!("redis-server did not start:\n{last}"))
}

fn pg_bin_dir() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let missing = "PostgreSQL not found (set PG_BIN or run scripts/services-setup.sh)";
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return if has_all(&dir) {
            Ok(dir)
        } else {
            Err(missing.to_owned())
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing.to_owned())?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, d)| d)
        .ok_or_else(|| missing.to_owned())
}

/// Runs a short command to its end (bounded); its stderr on failure.
async fn run_ok(mut cmd: Command, what: &str) -> Result<(), String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres"))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| "running as root needs the `postgres` user".to_owned())
}

/// Starts a throw-away PostgreSQL with a database `chat` (trust
/// authentication, fsync on, `max_connections` 400).
pub async fn postgres() -> Result<Service, String> {
    let bin = pg_bin_dir()?;
    let root = is_root();
    let mut last = String::new();
    for _ in 0..3 {
        let dir = tempfile::Builder::new()
            .prefix("chat-bench-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        match try_postgres(&bin, root, &dir).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = e;
                // The guard (if any) removed it already; initdb failures did not.
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    Err(format!("PostgreSQL did not start: {last}"))
}

async fn try_postgres(bin: &Path, root: bool, dir: &Path) -> Result<Service, String> {
    if root {
        let (uid, gid) = postgres_ids()?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| format!("chown: {e}"))?;
    }
    let data = dir.join("data");
    let mut init = command(root, &bin.join("initdb"));
    init.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run_ok(init, "initdb").await?;
    let port = free_port()?;
    let log = dir.join("postgres.log");
    let args: Vec<String> = vec![
        "-D".into(),
        data.to_string_lossy().into_owned(),
        "-p".into(),
        port.to_string(),
        "-k".into(),
        dir.to_string_lossy().into_owned(),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        "max_connections=400".into(),
    ];
    let (guard, pipe, pid) = guarded(root, "INT", dir, &log, &bin.join("postgres"), &args).await?;
    let service = Service {
        guard,
        pipe: Some(pipe),
        pid,
        port,
        url: format!("postgres://postgres@127.0.0.1:{port}/chat"),
        log,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut ready = Command::new(bin.join("pg_isready"));
        ready
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string());
        if run_ok(ready, "pg_isready").await.is_ok() {
            break;
        }
        if !alive(pid) || Instant::now() > deadline {
            let tail = service.log_tail();
            service.stop().await;
            return Err(format!("postgres did not become ready:\n{tail}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut create = Command::new(bin.join("createdb"));
    create
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(port.to_string())
        .arg("chat");
    if let Err(e) = run_ok(create, "createdb").await {
        service.stop().await;
        return Err(e);
    }
    Ok(service)
}
