//! Command-line options of the load tool.

use std::time::Duration;

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Rooms x subscribers, publishers, deliveries and latency.
    Fanout,
    /// Many idle subscribed connections; server memory per connection.
    Idle,
    /// Durable sends with a window of acks in flight.
    Send,
    /// Connect, auth, resume, read, disconnect, repeat.
    Churn,
}

impl Scenario {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Idle => "idle",
            Scenario::Send => "send",
            Scenario::Churn => "churn",
        }
    }
}

/// Which transport the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Plain WebSocket on the HTTP port (`ws://ADDR/ws`).
    Ws,
    /// TLS TCP, one JSON frame per line.
    Tcp,
}

impl TransportKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Ws => "ws",
            TransportKind::Tcp => "tcp",
        }
    }
}

/// How far the `idle` connections go, to split memory per connection
/// into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStage {
    /// Transport handshake and `hello` only.
    Connect,
    /// Logged in.
    Auth,
    /// Logged in and subscribed to a room.
    Subscribe,
}

impl IdleStage {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            IdleStage::Connect => "connect",
            IdleStage::Auth => "auth",
            IdleStage::Subscribe => "subscribe",
        }
    }
}

/// Every option; scenario-specific defaults are filled by [`Opts::parse`].
#[derive(Debug, Clone)]
pub struct Opts {
    pub scenario: Scenario,
    pub transport: TransportKind,
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub fingerprint: Option<String>,
    pub insecure: bool,
    pub spawn_server: bool,
    pub server_bin: Option<String>,
    pub server_args: Vec<String>,
    pub server_pid: Option<u32>,
    pub duration: Duration,
    pub count: Option<u64>,
    pub rooms: usize,
    pub subscribers: usize,
    pub publishers: usize,
    pub rate: f64,
    pub window: usize,
    pub clients: usize,
    pub connections: usize,
    pub users: usize,
    pub body_bytes: usize,
    pub connect_concurrency: usize,
    pub hold: Duration,
    pub drain: Duration,
    pub threads: usize,
    /// idle: how far each connection goes (`connect`, `auth`, `subscribe`).
    pub stage: IdleStage,
}

/// The `--help` text.
pub const HELP: &str = "\
chat-bench: load tool for the chat server (real protocol, WebSocket or TLS TCP)

Usage: chat-bench <fanout|idle|send|churn> [options]

Server:
  --spawn-server          start target/release/examples/chat-server (next to this
                          binary) on free ports with a temporary data folder
  --server-bin PATH       chat-server binary for --spawn-server
  --server-arg ARG        extra argument for the spawned server (repeatable)
  --http ADDR             HTTP/WebSocket address of a running server
  --tcp ADDR              TLS TCP address of a running server
  --fingerprint FP        pin the TLS certificate (SHA-256, as the server prints)
  --insecure              accept any TLS certificate
  --server-pid PID        server process, for RSS/CPU figures (known with --spawn-server)

Load:
  --transport ws|tcp      client transport [default: ws]
  --duration SECS         sending time [default: 10]
  --count N               fanout/send: messages per publisher/client; churn: cycles per client
  --rooms R               rooms [fanout 10, send 10, churn 4, idle 1]
  --subscribers S         fanout: subscribers per room [1000]
  --publishers P          fanout/churn: publishing connections [= rooms]
  --rate MSGS             total messages/s over all publishers, 0 = as fast as
                          acks allow [fanout 0, send 0, churn 200]
  --window W              sends in flight per connection [fanout 32, send 16, churn 8]
  --clients C             send: sending connections [64]; churn: churning connections [100]
  --connections N         idle: connections to open [18000]
  --users U               accounts signed up (argon2 is slow; tokens are reused) [4]
  --body-bytes B          message body size [100]
  --connect-concurrency K connections being set up at once [256]
  --hold SECS             idle: hold before measuring [5]; churn: read time per cycle [0.05]
  --drain SECS            fanout: wait for late deliveries after sending [10]
  --threads T             client runtime worker threads [2]
  --stage S               idle: connect|auth|subscribe, how far each connection
                          goes (splits memory per connection) [subscribe]
";

fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("bad value for {flag}: {v:?}"))
}

fn secs(flag: &str, v: Option<String>) -> Result<Duration, String> {
    let s: f64 = value(flag, v)?;
    if !(s.is_finite() && s >= 0.0) {
        return Err(format!("bad value for {flag}: {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Opts {
    /// Parses arguments (without the program name). `Ok(None)` means help.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Opts>, String> {
        let mut args = args.into_iter();
        let scenario = match args.next().as_deref() {
            Some("fanout") => Scenario::Fanout,
            Some("idle") => Scenario::Idle,
            Some("send") => Scenario::Send,
            Some("churn") => Scenario::Churn,
            Some("--help" | "-h" | "help") | None => return Ok(None),
            Some(other) => return Err(format!("unknown scenario {other:?} (see --help)")),
        };
        let (rooms, window, rate, clients) = match scenario {
            Scenario::Fanout => (10, 32, 0.0, 64),
            Scenario::Idle => (1, 1, 0.0, 64),
            Scenario::Send => (10, 16, 0.0, 64),
            Scenario::Churn => (4, 8, 200.0, 100),
        };
        let mut o = Opts {
            scenario,
            transport: TransportKind::Ws,
            http: None,
            tcp: None,
            fingerprint: None,
            insecure: false,
            spawn_server: false,
            server_bin: None,
            server_args: Vec::new(),
            server_pid: None,
            duration: Duration::from_secs(10),
            count: None,
            rooms,
            subscribers: 1000,
            publishers: 0,
            rate,
            window,
            clients,
            connections: 18_000,
            users: 4,
            body_bytes: 100,
            connect_concurrency: 256,
            hold: if scenario == Scenario::Churn {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(5)
            },
            drain: Duration::from_secs(10),
            threads: 2,
            stage: IdleStage::Subscribe,
        };
        while let Some(flag) = args.next() {
            let f = flag.as_str();
            match f {
                "--help" | "-h" => return Ok(None),
                "--transport" => {
                    o.transport = match args.next().as_deref() {
                        Some("ws") => TransportKind::Ws,
                        Some("tcp") => TransportKind::Tcp,
                        Some("wss") => {
                            return Err("--transport wss is not supported by this build \
                                        (needs tokio-rustls as a dev-dependency)"
                                .into())
                        }
                        other => return Err(format!("bad --transport {other:?}")),
                    }
                }
                "--http" => o.http = Some(value(f, args.next())?),
                "--tcp" => o.tcp = Some(value(f, args.next())?),
                "--fingerprint" => o.fingerprint = Some(value(f, args.next())?),
                "--insecure" => o.insecure = true,
                "--spawn-server" => o.spawn_server = true,
                "--server-bin" => o.server_bin = Some(value(f, args.next())?),
                "--server-arg" => o.server_args.push(value(f, args.next())?),
                "--server-pid" => o.server_pid = Some(value(f, args.next())?),
                "--duration" => o.duration = secs(f, args.next())?,
                "--count" => o.count = Some(value(f, args.next())?),
                "--rooms" => o.rooms = value(f, args.next())?,
                "--subscribers" => o.subscribers = value(f, args.next())?,
                "--publishers" => o.publishers = value(f, args.next())?,
                "--rate" => o.rate = value(f, args.next())?,
                "--window" => o.window = value(f, args.next())?,
                "--clients" => o.clients = value(f, args.next())?,
                "--connections" => o.connections = value(f, args.next())?,
                "--users" => o.users = value(f, args.next())?,
                "--body-bytes" => o.body_bytes = value(f, args.next())?,
                "--connect-concurrency" => o.connect_concurrency = value(f, args.next())?,
                "--hold" => o.hold = secs(f, args.next())?,
                "--drain" => o.drain = secs(f, args.next())?,
                "--threads" => o.threads = value(f, args.next())?,
                "--stage" => {
                    o.stage = match args.next().as_deref() {
                        Some("connect") => IdleStage::Connect,
                        Some("auth") => IdleStage::Auth,
                        Some("subscribe") => IdleStage::Subscribe,
                        other => return Err(format!("bad --stage {other:?}")),
                    }
                }
                other => return Err(format!("unknown option {other:?} (see --help)")),
            }
        }
        if o.publishers == 0 {
            o.publishers = o.rooms;
        }
        if o.rooms == 0 || o.window == 0 || o.users == 0 || o.connect_concurrency == 0 {
            return Err("--rooms, --window, --users and --connect-concurrency must be > 0".into());
        }
        if o.body_bytes < 24 {
            return Err("--body-bytes must be at least 24 (it carries a timestamp)".into());
        }
        if !(o.rate.is_finite() && o.rate >= 0.0) {
            return Err("--rate must be >= 0".into());
        }
        if !o.spawn_server {
            let need = match o.transport {
                TransportKind::Ws => o.http.is_none(),
                TransportKind::Tcp => o.tcp.is_none(),
            };
            if need {
                return Err(format!(
                    "give --spawn-server, or the server address (--{})",
                    if o.transport == TransportKind::Ws {
                        "http"
                    } else {
                        "tcp"
                    }
                ));
            }
            if o.transport == TransportKind::Tcp && o.fingerprint.is_none() && !o.insecure {
                return Err("--transport tcp needs --fingerprint FP or --insecure".into());
            }
        }
        Ok(Some(o))
    }

    /// The parameters as `key=value` words for the summary line.
    pub fn params(&self) -> String {
        let rate = if self.rate > 0.0 {
            format!("{}", self.rate)
        } else {
            "max".to_owned()
        };
        let count = self.count.map_or("-".to_owned(), |c| c.to_string());
        let d = self.duration.as_secs_f64();
        match self.scenario {
            Scenario::Fanout => format!(
                "rooms={} subs/room={} pubs={} rate={rate} window={} body={}B duration={d}s count={count}",
                self.rooms, self.subscribers, self.publishers, self.window, self.body_bytes
            ),
            Scenario::Idle => format!(
                "connections={} rooms={} stage={}",
                self.connections,
                self.rooms,
                self.stage.name()
            ),
            Scenario::Send => format!(
                "clients={} rooms={} rate={rate} window={} body={}B duration={d}s count={count}",
                self.clients, self.rooms, self.window, self.body_bytes
            ),
            Scenario::Churn => format!(
                "clients={} rooms={} pubs={} rate={rate} hold={}s duration={d}s count={count}",
                self.clients,
                self.rooms,
                self.publishers,
                self.hold.as_secs_f64()
            ),
        }
    }
}
