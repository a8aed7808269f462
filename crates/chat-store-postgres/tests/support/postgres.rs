//! A throw-away PostgreSQL server: a fresh cluster in a temporary folder,
//! trust authentication, listening on 127.0.0.1 on a free port (and a Unix
//! socket in the folder), `fsync` on.
//!
//! The binaries are those in `$PG_BIN`, else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package; run
//! `scripts/services-setup.sh`). When they are missing the tests fail if
//! `CI` is set and return early (with a message) otherwise.
//!
//! `initdb` refuses to run as root, so as root the cluster is created and
//! run as the `postgres` user (through `runuser`). The server runs under a
//! small shell that holds a pipe from the test process: when the test
//! process exits, however it exits, the pipe closes and the shell stops the
//! server and deletes its folder. So one server can be shared by every test
//! of a binary (a `static`, never dropped) without outliving it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct PgServer {
    port: u16,
    dir: PathBuf,
    /// The guarding shell; its stdin is the pipe that keeps the server up.
    _guard: Child,
}

impl PgServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test database's URL (user `postgres`, trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/chat", self.port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
}

/// The server shared by this test binary, started on first use; `None`
/// when PostgreSQL is missing and `CI` is unset.
pub async fn shared() -> Option<&'static PgServer> {
    static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
    let server = tokio::task::spawn_blocking(|| SHARED.get_or_init(start).as_ref())
        .await
        .unwrap();
    if server.is_none() {
        // Straight to stderr, past the test harness's capture, so a skip is
        // visible in a passing run.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {MISSING}");
    }
    server
}

const MISSING: &str = "PostgreSQL not found (set PG_BIN or run scripts/services-setup.sh)";

/// The folder with `initdb`, `postgres` and `pg_isready`.
fn bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return has_all(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn is_root() -> bool {
    let out = output(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A command run as the `postgres` user when we are root.
fn as_pg_user(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn id_of_postgres(flag: &str) -> u32 {
    let out = output(Command::new("id").args([flag, "postgres"]));
    assert!(
        out.status.success(),
        "running as root needs the `postgres` user (created by the postgresql package)"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Option<PgServer> {
    let Some(bin) = bin_dir() else {
        if std::env::var_os("CI").is_some() {
            panic!("{MISSING}; CI is set, so this test fails");
        }
        return None;
    };
    // A port taken between probing and binding fails the start; retry.
    let mut last = String::new();
    for _ in 0..3 {
        match try_start(&bin) {
            Ok(server) => return Some(server),
            Err(e) => last = e,
        }
    }
    panic!("PostgreSQL did not start: {last}");
}

fn try_start(bin: &Path) -> Result<PgServer, String> {
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("chat-pg-")
        .tempdir()
        .unwrap()
        .keep();
    if root {
        std::os::unix::fs::chown(&dir, Some(id_of_postgres("-u")), Some(id_of_postgres("-g")))
            .unwrap();
    }
    let data = dir.join("data");
    let init = output(
        as_pg_user(root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"),
    );
    if !init.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }

    let port = free_port();
    let log = dir.join("postgres.log");
    // $1 postgres, $2 data, $3 port, $4 socket dir, $5 log, $6 folder.
    let script = r#""$1" -D "$2" -p "$3" -k "$4" -c listen_addresses=127.0.0.1 \
        -c fsync=on -c synchronous_commit=on -c max_connections=300 >"$5" 2>&1 &
        pid=$!
        read _ignored
        kill -INT "$pid" 2>/dev/null
        wait "$pid"
        rm -rf "$6""#;
    let guard = as_pg_user(root, Path::new("/bin/sh"))
        .args(["-c", script, "sh"])
        .arg(bin.join("postgres"))
        .arg(&data)
        .arg(port.to_string())
        .arg(&dir)
        .arg(&log)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = PgServer {
        port,
        dir,
        _guard: guard,
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = output(
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(port.to_string()),
        );
        if ready.status.success() {
            break;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // pg_isready's own probes log "the database system is starting up".
        let fatal = text
            .lines()
            .any(|l| l.contains("FATAL") && !l.contains("starting up"));
        if fatal || Instant::now() > deadline {
            // Dropping the server closes the pipe: the shell cleans up.
            return Err(format!("postgres did not become ready:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let created = output(
        Command::new(bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string())
            .arg("chat"),
    );
    if !created.status.success() {
        return Err(format!(
            "createdb failed: {}",
            String::from_utf8_lossy(&created.stderr)
        ));
    }
    Ok(server)
}

/// A plain connection to the test database, for setting up and inspecting
/// what the store sees.
pub async fn admin(server: &PgServer) -> chat_store_postgres::tokio_postgres::Client {
    let (client, conn) = chat_store_postgres::tokio_postgres::connect(
        &server.url(),
        chat_store_postgres::tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}
