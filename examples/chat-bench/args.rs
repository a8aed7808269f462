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
    /// Several nodes over Redis and PostgreSQL, subscribers held by worker
    /// processes: fan-out across nodes.
    Cluster,
    /// People chatting alone, then while many bot replies stream.
    Bots,
}

impl Scenario {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Idle => "idle",
            Scenario::Send => "send",
            Scenario::Churn => "churn",
            Scenario::Cluster => "cluster",
            Scenario::Bots => "bots",
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
    /// WebSocket over TLS on the HTTP port (`wss://ADDR/ws`); a spawned
    /// server is started with `--https true`.
    Wss,
}

impl TransportKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Ws => "ws",
            TransportKind::Tcp => "tcp",
            TransportKind::Wss => "wss",
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
    /// cluster: chat-server nodes to run.
    pub nodes: usize,
    /// cluster: worker processes holding the subscribers (0 = as few as the
    /// per-process limit allows).
    pub workers: usize,
    /// cluster: runtime threads of each worker.
    pub worker_threads: usize,
    /// cluster: start a throw-away redis-server and PostgreSQL.
    pub spawn_services: bool,
    /// cluster: Redis URL of running services.
    pub redis: Option<String>,
    /// cluster: PostgreSQL URL of running services.
    pub postgres: Option<String>,
    /// cluster: one node on its own SQLite file, no Redis or PostgreSQL.
    pub embedded: bool,
    /// cluster: longest time for every subscriber to be set up.
    pub setup_timeout: Duration,
    /// bots: replies streaming at once.
    pub bot_replies: usize,
    /// bots: the questions are spread over this time.
    pub ask_ramp: Duration,
    /// bots: pieces per reply.
    pub bot_tokens: usize,
    /// bots: time between pieces.
    pub token_interval: Duration,
}

/// Most connections one process (node or worker) is given: the open-file
/// limit here is 20,000 per process, hard, and a node also needs files for
/// its store, broker, listeners and logs.
pub const MAX_PER_PROCESS: usize = 17_500;

/// The `--help` text.
pub const HELP: &str = "\
chat-bench: load tool for the chat server (real protocol, WebSocket or TLS TCP)

Usage: chat-bench <fanout|idle|send|churn> [options]
       chat-bench cluster --nodes N --connections C --rooms R
                  [--spawn-services | --redis URL --postgres URL | --embedded]

Scenarios:
  fanout   rooms x subscribers and publishers on one server: deliveries/s,
           latency, loss, duplicates, reorders
  idle     N subscribed connections at once: server KiB per connection
  send     durable sends with a window in flight: acks/s, ack latency
  churn    connect, auth, resume by seq, read, disconnect: exact resumes
  bots     people chat in R rooms x S subscribers at --rate, first alone,
           then while --bot-replies LLM replies stream at once (from a fake
           OpenAI-compatible endpoint the tool serves); people-to-people
           latency of both phases; ok when p99 with bots <= 2x without
  cluster  N chat-server nodes sharing Redis and PostgreSQL; C subscribers in
           R shared rooms spread round-robin over every node, held by worker
           processes (each process <= 17,500 sockets: the open-file limit is
           20,000); publishers on every node; every subscriber must get every
           message of its room once, in order. Merged latency percentiles,
           per-node connections, RSS, KiB/connection and CPU

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
  --transport ws|wss|tcp  client transport: WebSocket, WebSocket over TLS
                          (a spawned server gets --https true), TLS TCP
                          [default: ws]
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
  --connect-concurrency K connections being set up at once (cluster: shared by
                          the workers) [256]
  --hold SECS             idle: hold before measuring [5]; churn: read time per cycle [0.05]
  --drain SECS            fanout: wait for late deliveries after sending [10]
  --threads T             client runtime worker threads [2]
  --stage S               idle: connect|auth|subscribe, how far each connection
                          goes (splits memory per connection) [subscribe]

Bots (needs --spawn-server: the server gets the fake endpoint and lifted
bot limits; defaults --rooms 50 --subscribers 10 --rate 100 --window 8):
  --bot-replies N         bot replies streaming at once [1000]
  --ask-ramp-ms MS        the questions arrive evenly over this time [1000]
  --tokens K              pieces per reply [40]
  --token-ms MS           time between pieces [250]

Cluster (the scenario starts its nodes itself; --connections is the total of
subscribers [10000], --publishers defaults to max(rooms, nodes), --count is
per publisher, --drain defaults to 30):
  --nodes N               chat-server nodes (release binary next to this one,
                          or --server-bin) [3]
  --workers W             worker processes holding the subscribers
                          [connections / 17,500, rounded up]
  --worker-threads T      runtime threads per worker [1]
  --spawn-services        start a throw-away redis-server and PostgreSQL on
                          free loopback ports (removed at the end)
  --redis URL             running Redis (with --postgres)
  --postgres URL          running PostgreSQL (with --redis)
  --embedded              --nodes 1 on its own SQLite file, no Redis/PostgreSQL
  --setup-timeout SECS    longest time to set every subscriber up [300]
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
            Some("cluster") => Scenario::Cluster,
            Some("bots") => Scenario::Bots,
            Some("--help" | "-h" | "help") | None => return Ok(None),
            Some(other) => return Err(format!("unknown scenario {other:?} (see --help)")),
        };
        let (rooms, window, rate, clients) = match scenario {
            Scenario::Fanout => (10, 32, 0.0, 64),
            Scenario::Idle => (1, 1, 0.0, 64),
            Scenario::Send => (10, 16, 0.0, 64),
            Scenario::Churn => (4, 8, 200.0, 100),
            Scenario::Cluster => (10, 32, 0.0, 64),
            Scenario::Bots => (50, 8, 100.0, 64),
        };
        let cluster = scenario == Scenario::Cluster;
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
            subscribers: if scenario == Scenario::Bots { 10 } else { 1000 },
            publishers: 0,
            rate,
            window,
            clients,
            connections: if cluster { 10_000 } else { 18_000 },
            users: 4,
            body_bytes: 100,
            connect_concurrency: 256,
            hold: if scenario == Scenario::Churn {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(5)
            },
            drain: Duration::from_secs(if cluster { 30 } else { 10 }),
            threads: 2,
            stage: IdleStage::Subscribe,
            nodes: 3,
            workers: 0,
            worker_threads: 1,
            spawn_services: false,
            redis: None,
            postgres: None,
            embedded: false,
            setup_timeout: Duration::from_secs(300),
            bot_replies: 1000,
            ask_ramp: Duration::from_millis(1000),
            bot_tokens: 40,
            token_interval: Duration::from_millis(250),
        };
        while let Some(flag) = args.next() {
            let f = flag.as_str();
            match f {
                "--help" | "-h" => return Ok(None),
                "--transport" => {
                    o.transport = match args.next().as_deref() {
                        Some("ws") => TransportKind::Ws,
                        Some("tcp") => TransportKind::Tcp,
                        Some("wss") => TransportKind::Wss,
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
                "--bot-replies" => o.bot_replies = value(f, args.next())?,
                "--ask-ramp-ms" => o.ask_ramp = Duration::from_millis(value(f, args.next())?),
                "--tokens" => o.bot_tokens = value(f, args.next())?,
                "--token-ms" => o.token_interval = Duration::from_millis(value(f, args.next())?),
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
                "--nodes" => o.nodes = value(f, args.next())?,
                "--workers" => o.workers = value(f, args.next())?,
                "--worker-threads" => o.worker_threads = value(f, args.next())?,
                "--spawn-services" => o.spawn_services = true,
                "--redis" => o.redis = Some(value(f, args.next())?),
                "--postgres" => o.postgres = Some(value(f, args.next())?),
                "--embedded" => o.embedded = true,
                "--setup-timeout" => o.setup_timeout = secs(f, args.next())?,
                other => return Err(format!("unknown option {other:?} (see --help)")),
            }
        }
        if o.publishers == 0 {
            o.publishers = if cluster {
                o.rooms.max(o.nodes)
            } else {
                o.rooms
            };
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
        if scenario == Scenario::Bots
            && (!o.spawn_server || o.transport != TransportKind::Ws || o.users < 2)
        {
            return Err("bots needs --spawn-server (the server is pointed at the \
                        tool's fake LLM endpoint), --transport ws and --users 2 or more"
                .into());
        }
        if cluster {
            o.check_cluster()?;
        } else if !o.spawn_server {
            let need = match o.transport {
                TransportKind::Ws | TransportKind::Wss => o.http.is_none(),
                TransportKind::Tcp => o.tcp.is_none(),
            };
            if need {
                return Err(format!(
                    "give --spawn-server, or the server address (--{})",
                    if o.transport != TransportKind::Tcp {
                        "http"
                    } else {
                        "tcp"
                    }
                ));
            }
            if o.transport != TransportKind::Ws && o.fingerprint.is_none() && !o.insecure {
                return Err(format!(
                    "--transport {} needs --fingerprint FP or --insecure",
                    o.transport.name()
                ));
            }
        }
        Ok(Some(o))
    }

    /// Checks the cluster options and fills the number of workers.
    fn check_cluster(&mut self) -> Result<(), String> {
        let services = [
            self.spawn_services,
            self.redis.is_some() || self.postgres.is_some(),
            self.embedded,
        ];
        if services.iter().filter(|s| **s).count() != 1 {
            return Err("cluster needs exactly one of --spawn-services, \
                        --redis URL --postgres URL, or --embedded"
                .into());
        }
        if (self.redis.is_some() || self.postgres.is_some())
            && (self.redis.is_none() || self.postgres.is_none())
        {
            return Err("--redis and --postgres go together".into());
        }
        if self.embedded && self.nodes != 1 {
            return Err("--embedded runs one node (--nodes 1): several nodes \
                        need Redis and PostgreSQL"
                .into());
        }
        if self.nodes == 0 || self.connections == 0 || self.worker_threads == 0 {
            return Err("--nodes, --connections and --worker-threads must be > 0".into());
        }
        let per_node = self.connections.div_ceil(self.nodes);
        if per_node > MAX_PER_PROCESS {
            return Err(format!(
                "{} connections on {} node(s) is {per_node} per node, over the \
                 {MAX_PER_PROCESS} one process may hold (open files: 20,000 per \
                 process here); use --nodes {} or more",
                self.connections,
                self.nodes,
                self.connections.div_ceil(MAX_PER_PROCESS)
            ));
        }
        if self.workers == 0 {
            self.workers = self.connections.div_ceil(MAX_PER_PROCESS);
        }
        let per_worker = self.connections.div_ceil(self.workers);
        if per_worker > MAX_PER_PROCESS {
            return Err(format!(
                "{} connections on {} worker(s) is {per_worker} per worker, over \
                 the {MAX_PER_PROCESS} one process may hold; use --workers {} or more",
                self.connections,
                self.workers,
                self.connections.div_ceil(MAX_PER_PROCESS)
            ));
        }
        if self.connections < self.rooms * self.nodes {
            return Err(format!(
                "--connections must be at least rooms x nodes ({}) so that every \
                 room has subscribers on every node",
                self.rooms * self.nodes
            ));
        }
        if self.workers > self.connections {
            return Err("--workers must not exceed --connections".into());
        }
        Ok(())
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
            // The bots scenario prints its own parameters.
            Scenario::Bots => String::new(),
            Scenario::Cluster => format!(
                "nodes={} workers={} backend={} connections={} rooms={} pubs={} rate={rate} \
                 window={} body={}B duration={d}s count={count}",
                self.nodes,
                self.workers,
                if self.embedded {
                    "sqlite"
                } else {
                    "redis+postgres"
                },
                self.connections,
                self.rooms,
                self.publishers,
                self.window,
                self.body_bytes
            ),
        }
    }
}
