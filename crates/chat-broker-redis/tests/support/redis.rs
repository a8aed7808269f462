//! A throw-away `redis-server` on a free port of 127.0.0.1, killed on drop.
//!
//! The binary is `$REDIS_SERVER`, else `redis-server` on `PATH`, else
//! `/usr/bin/redis-server` (Debian's `redis-server` package; run
//! `scripts/services-setup.sh`). When it is missing the tests fail if `CI`
//! is set and return early (with a message) otherwise.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Finds `redis-server`; `None` (after saying so) when it is missing and
/// `CI` is unset; panics when it is missing under CI.
fn binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("REDIS_SERVER") {
        Some(path) => vec![PathBuf::from(path)],
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
    if let Some(found) = candidates.into_iter().find(|c| c.is_file()) {
        return Some(found);
    }
    let msg = "redis-server not found (set REDIS_SERVER or run scripts/services-setup.sh)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI is set, so this test fails");
    }
    // Straight to stderr, past the test harness's capture, so a skip is
    // visible in a passing run.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server, or returns `None` when redis-server is missing
    /// (and `CI` is unset).
    pub fn start() -> Option<RedisServer> {
        let bin = binary()?;
        let mut server = RedisServer {
            bin,
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        // The free port may be taken between probing and binding; retry.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("redis-server did not start; see {}", server.log().display());
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the process on `self.port`; returns whether it answers PING
    /// within 10 s.
    fn spawn(&mut self) -> bool {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.pings() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                // Exited: the port was taken.
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}; see {}",
            self.port,
            self.log().display()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
