//! The coordinator's side of the worker processes (`cluster`): starts them
//! as `chat-bench cluster-worker ...`, writes lines to their stdin, reads
//! the lines they answer (see `worker.rs` for the conversation). Each is
//! killed if dropped; a worker whose coordinator dies sees its stdin end and
//! exits.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::worker::WorkerArgs;

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
}

/// The running workers.
pub struct Workers {
    procs: Vec<Proc>,
    /// (worker, line); `None` when that worker's stdout ended.
    lines: mpsc::Receiver<(usize, Option<String>)>,
}

impl Workers {
    /// Starts one worker per entry of `plans` and hands each the tokens.
    pub async fn spawn(plans: Vec<WorkerArgs>, tokens: &[String]) -> Result<Self, String> {
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let (tx, rx) = mpsc::channel(1024);
        let mut procs = Vec::with_capacity(plans.len());
        for (w, plan) in plans.into_iter().enumerate() {
            let mut child = Command::new(&me)
                .arg("cluster-worker")
                .args(plan.to_args())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawn worker {w}: {e}"))?;
            let pid = child.id().ok_or("a worker exited at once")?;
            let stdout = child.stdout.take().ok_or("no worker stdout")?;
            let stdin = child.stdin.take().ok_or("no worker stdin")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send((w, Some(line))).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send((w, None)).await;
            });
            procs.push(Proc {
                child,
                stdin: Some(stdin),
                pid,
            });
        }
        let mut workers = Workers { procs, lines: rx };
        let mut hello = String::new();
        for t in tokens {
            hello.push_str(&format!("token {t}\n"));
        }
        hello.push_str("start");
        workers.send_all(&hello).await?;
        Ok(workers)
    }

    /// Their pids.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Sends `line` (one or more lines) to worker `w`.
    pub async fn send(&mut self, w: usize, line: &str) -> Result<(), String> {
        let p = self.procs.get_mut(w).ok_or("no such worker")?;
        let stdin = p.stdin.as_mut().ok_or("worker stdin closed")?;
        let mut text = line.to_owned();
        text.push('\n');
        tokio::time::timeout(Duration::from_secs(10), async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.flush().await
        })
        .await
        .map_err(|_| format!("worker {w} does not read its stdin"))?
        .map_err(|e| format!("worker {w} stdin: {e}"))
    }

    /// Sends `line` to every worker.
    pub async fn send_all(&mut self, line: &str) -> Result<(), String> {
        for w in 0..self.procs.len() {
            self.send(w, line).await?;
        }
        Ok(())
    }

    /// The next line from any worker, by `deadline`. A worker that exits
    /// is an error.
    pub async fn next(&mut self, deadline: Instant) -> Result<(usize, String), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.lines.recv()).await {
            Err(_) => Err("timed out waiting for the workers".into()),
            Ok(None) => Err("every worker is gone".into()),
            Ok(Some((w, None))) => Err(format!("worker {w} exited (see its stderr above)")),
            Ok(Some((w, Some(line)))) => Ok((w, line)),
        }
    }

    /// Tells every worker to stop, waits up to 10 s, kills the rest.
    pub async fn stop(mut self) {
        let _ = self.send_all("stop").await;
        for p in &mut self.procs {
            p.stdin.take();
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        for p in &mut self.procs {
            if tokio::time::timeout_at(until, p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
    }
}
