//! `--spawn-server`: runs the release `chat-server` example on free ports
//! with a temporary data folder, and reads its addresses from its stdout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A chat server this tool started; stopped (SIGTERM, then SIGKILL) by
/// [`SpawnedServer::stop`], killed if dropped.
pub struct SpawnedServer {
    child: Child,
    pub pid: u32,
    pub http: String,
    pub tcp: Option<String>,
    pub fingerprint: Option<String>,
    log: PathBuf,
    _data: tempfile::TempDir,
}

/// The server binary next to this one (`target/release/examples/`).
fn default_bin() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = me.parent().ok_or("current_exe has no folder")?;
    Ok(dir.join("chat-server"))
}

impl SpawnedServer {
    /// Starts the server and waits until it prints its addresses.
    pub async fn start(bin: Option<&str>, extra: &[String]) -> Result<Self, String> {
        let bin = match bin {
            Some(b) => PathBuf::from(b),
            None => default_bin()?,
        };
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it first with `cargo build --release --example chat-server`",
                bin.display()
            ));
        }
        let data = tempfile::Builder::new()
            .prefix("chat-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let log = data.path().join("server.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("server log: {e}"))?;
        let mut args: Vec<String> = [
            "--data",
            &data.path().join("data").to_string_lossy(),
            "--http",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--rate-burst",
            "1000000",
            "--rate-per-second",
            "1000000",
            "--max-sessions",
            "30000",
            "--log",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut tcp, mut fingerprint) = (None, None, None);
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "browser:") {
                    http = words.get(i + 1).map(|u| {
                        u.trim_start_matches("http://")
                            .trim_start_matches("https://")
                            .trim_end_matches('/')
                            .to_owned()
                    });
                }
                if words.contains(&"terminal:") {
                    let after = |flag: &str| {
                        let i = words.iter().position(|w| *w == flag)?;
                        words.get(i + 1).map(|s| s.to_string())
                    };
                    tcp = after("--addr");
                    fingerprint = after("--fingerprint");
                }
                if words.first() == Some(&"health:") || (http.is_some() && tcp.is_some()) {
                    break;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .is_err()
        {
            return Err("the server did not print its addresses within 30 s".into());
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = http.ok_or_else(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("the server printed no address; its log:\n{log}")
        })?;
        Ok(SpawnedServer {
            child,
            pid,
            http,
            tcp,
            fingerprint,
            log,
            _data: data,
        })
    }

    /// SIGTERM, wait up to 15 s, then SIGKILL. Returns the warning lines
    /// the server logged (count and the first few).
    pub async fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = format!("server log: {} lines", lines.len());
        for l in lines.iter().take(5) {
            out.push_str("\n#   ");
            out.push_str(l);
        }
        out
    }
}
