//! Settings of the chat server: flags, then environment, then an optional
//! config file, then defaults.
//!
//! Every setting has one key used everywhere: `--http 127.0.0.1:8080` on the
//! command line, `CHAT_HTTP=...` in the environment, `http = ...` in the
//! config file (`--config FILE` or `CHAT_CONFIG`; `#` starts a comment).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A bad flag, variable or config line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key nobody knows.
    #[error("unknown setting {0:?} (see --help)")]
    Unknown(String),
    /// A flag without its value.
    #[error("--{0} needs a value")]
    MissingValue(String),
    /// A value that does not parse.
    #[error("bad value for {key}: {value:?} ({reason})")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    File {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One setting: key, default, help.
struct Spec {
    key: &'static str,
    default: &'static str,
    help: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        key: "data",
        default: "data",
        help: "folder for the SQLite file, TLS certificate and uploads",
    },
    Spec {
        key: "http",
        default: "127.0.0.1:8080",
        help: "HTTP + WebSocket address (web client, REST, /health, /metrics)",
    },
    Spec {
        key: "tcp",
        default: "127.0.0.1:7443",
        help: "TLS TCP address for terminal clients (\"off\" to disable)",
    },
    Spec {
        key: "redis",
        default: "",
        help: "Redis URL: carry room events between nodes (several nodes)",
    },
    Spec {
        key: "postgres",
        default: "",
        help: "PostgreSQL URL: shared history instead of the SQLite file (several nodes)",
    },
    Spec {
        key: "postgres-schema",
        default: "public",
        help: "PostgreSQL schema for the chat tables",
    },
    Spec {
        key: "files-dir",
        default: "",
        help: "where shared files live (default: <data>/files; share it between nodes)",
    },
    Spec {
        key: "tls-cert",
        default: "",
        help: "PEM certificate chain (default: self-signed, generated into the data folder)",
    },
    Spec {
        key: "tls-key",
        default: "",
        help: "PEM private key for --tls-cert",
    },
    Spec {
        key: "https",
        default: "false",
        help: "serve the HTTP port over TLS too (https/wss) with the same certificate",
    },
    Spec {
        key: "knowledge",
        default: "",
        help: "knowledge file (Markdown Q&A or JSON) for the built-in bot",
    },
    Spec {
        key: "bot-name",
        default: "helper",
        help: "name of the built-in offline bot",
    },
    Spec {
        key: "llm-name",
        default: "assistant",
        help: "name of the LLM bot (enabled when an OpenAI key or base URL is set)",
    },
    Spec {
        key: "openai-base-url",
        default: "",
        help: "OpenAI-compatible endpoint (env OPENAI_BASE_URL)",
    },
    Spec {
        key: "openai-api-key",
        default: "",
        help: "API key (env OPENAI_API_KEY; never logged)",
    },
    Spec {
        key: "openai-model",
        default: "gpt-4o-mini",
        help: "model name (env OPENAI_MODEL)",
    },
    Spec {
        key: "max-sessions",
        default: "10000",
        help: "concurrent sessions admitted",
    },
    Spec {
        key: "max-message-bytes",
        default: "4096",
        help: "largest message body",
    },
    Spec {
        key: "max-file-bytes",
        default: "10485760",
        help: "largest shared file",
    },
    Spec {
        key: "file-quota-bytes",
        default: "104857600",
        help: "total bytes one user may upload",
    },
    Spec {
        key: "bot-concurrency",
        default: "64",
        help: "bot replies being written at once (all bots)",
    },
    Spec {
        key: "llm-concurrency",
        default: "8",
        help: "requests the LLM bot has open to its endpoint at once",
    },
    Spec {
        key: "llm-user-burst",
        default: "5",
        help: "LLM bot questions one user may ask in a burst",
    },
    Spec {
        key: "llm-user-rate",
        default: "10",
        help: "LLM bot questions one user may ask per minute, sustained",
    },
    Spec {
        key: "redis-publish-timeout-ms",
        default: "1000",
        help: "longest wait for Redis to take a room event before the link is re-made",
    },
    Spec {
        key: "idempotency-window",
        default: "86400",
        help:
            "SQLite: seconds a resent message (same client_id) is recognized and not stored twice",
    },
    Spec {
        key: "idempotency-keys",
        default: "1000000",
        help: "SQLite: most recent client_ids held for that check (about 70 bytes each)",
    },
    Spec {
        key: "write-coalesce-ms",
        default: "0",
        help: "WebSocket: wait this long for more frames before a write (fan-out batching)",
    },
    Spec {
        key: "rate-burst",
        default: "20",
        help: "messages a user may send in a burst",
    },
    Spec {
        key: "rate-per-second",
        default: "10",
        help: "messages a user may send per second, sustained",
    },
    Spec {
        key: "shutdown-grace",
        default: "10",
        help: "seconds to finish in-flight work on shutdown",
    },
    Spec {
        key: "log",
        default: "info",
        help: "log filter (RUST_LOG syntax)",
    },
];

/// Environment variables read besides `CHAT_<KEY>`.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("openai-base-url", "OPENAI_BASE_URL"),
    ("openai-api-key", "OPENAI_API_KEY"),
    ("openai-model", "OPENAI_MODEL"),
    ("log", "RUST_LOG"),
];

/// The resolved settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Data folder.
    pub data: PathBuf,
    /// HTTP address.
    pub http: SocketAddr,
    /// TLS TCP address, if enabled.
    pub tcp: Option<SocketAddr>,
    /// Redis URL, for several nodes.
    pub redis: Option<String>,
    /// PostgreSQL URL, for several nodes.
    pub postgres: Option<String>,
    /// PostgreSQL schema.
    pub postgres_schema: String,
    /// Shared files folder.
    pub files_dir: PathBuf,
    /// Certificate and key PEM files, if given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve HTTP over TLS too.
    pub https: bool,
    /// Knowledge file for the offline bot.
    pub knowledge: Option<PathBuf>,
    /// Offline bot name.
    pub bot_name: String,
    /// LLM bot name.
    pub llm_name: String,
    /// OpenAI-compatible endpoint.
    pub openai_base_url: Option<String>,
    /// API key.
    pub openai_api_key: Option<String>,
    /// Model.
    pub openai_model: String,
    /// Admission limit.
    pub max_sessions: usize,
    /// Message size limit.
    pub max_message_bytes: usize,
    /// Largest shared file.
    pub max_file_bytes: u64,
    /// Upload quota per user.
    pub file_quota_bytes: u64,
    /// Bot replies in progress at once.
    pub bot_concurrency: usize,
    /// LLM requests open at once.
    pub llm_concurrency: usize,
    /// LLM questions per user in a burst.
    pub llm_user_burst: u32,
    /// LLM questions per user per minute.
    pub llm_user_rate: u32,
    /// Longest wait for a Redis publish.
    pub redis_publish_timeout: Duration,
    /// How long the SQLite store recognizes a resent message.
    pub idempotency_window: Duration,
    /// Most client_ids the SQLite store holds for that.
    pub idempotency_keys: usize,
    /// How long a WebSocket writer gathers frames before writing.
    pub write_coalesce: Duration,
    /// Rate limit burst.
    pub rate_burst: u32,
    /// Rate limit per second.
    pub rate_per_second: u32,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Log filter.
    pub log: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data", &self.data)
            .field("http", &self.http)
            .field("tcp", &self.tcp)
            .field("https", &self.https)
            .field("redis", &self.redis.is_some())
            .field("postgres", &self.postgres.is_some())
            .field("openai_base_url", &self.openai_base_url)
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Run(Box<Config>),
    /// Print the help text.
    Help(String),
}

/// The `--help` text.
pub fn help() -> String {
    let mut s = String::from(
        "chat-server: a real-time chat server (web client, WebSocket, TLS TCP, REST)\n\n\
         Usage: chat-server [--KEY VALUE]...   (or CHAT_KEY=VALUE, or KEY = VALUE in --config FILE)\n\n",
    );
    s.push_str("  --config FILE            read settings from FILE (env CHAT_CONFIG)\n");
    for spec in SPECS {
        let default = if spec.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", spec.default)
        };
        s.push_str(&format!(
            "  --{:<22} {}{}\n",
            format!("{} V", spec.key),
            spec.help,
            default
        ));
    }
    s.push_str("  --help                   print this help\n");
    s
}

/// Parses flags (without the program name), with `env` for variables.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    let mut flags = BTreeMap::new();
    let mut config_file = env("CHAT_CONFIG").map(PathBuf::from);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::Unknown(arg));
        };
        if flag == "help" || flag == "h" {
            return Ok(Command::Help(help()));
        }
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| ConfigError::MissingValue(flag.to_owned()))?;
                (flag.to_owned(), v)
            }
        };
        if key == "config" {
            config_file = Some(PathBuf::from(value));
            continue;
        }
        check_key(&key)?;
        flags.insert(key, value);
    }
    let file = match &config_file {
        Some(path) => {
            parse_file(
                &std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    path: path.clone(),
                    source,
                })?,
            )?
        }
        None => BTreeMap::new(),
    };
    let get = |key: &str| -> String {
        if let Some(v) = flags.get(key) {
            return v.clone();
        }
        let var = format!("CHAT_{}", key.to_ascii_uppercase().replace('-', "_"));
        if let Some(v) = env(&var) {
            return v;
        }
        if let Some((_, alias)) = ENV_ALIASES.iter().find(|(k, _)| *k == key) {
            if let Some(v) = env(alias) {
                return v;
            }
        }
        if let Some(v) = file.get(key) {
            return v.clone();
        }
        SPECS
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.default.to_owned())
            .unwrap_or_default()
    };
    build(get).map(|c| Command::Run(Box::new(c)))
}

fn check_key(key: &str) -> Result<(), ConfigError> {
    if SPECS.iter().any(|s| s.key == key) {
        Ok(())
    } else {
        Err(ConfigError::Unknown(key.to_owned()))
    }
}

fn parse_file(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| ConfigError::Unknown(line.to_owned()))?;
        let key = k.trim().replace('_', "-");
        check_key(&key)?;
        out.insert(key, v.trim().trim_matches('"').to_owned());
    }
    Ok(out)
}

fn bad(key: &str, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

fn num<T: std::str::FromStr>(get: &impl Fn(&str) -> String, key: &str) -> Result<T, ConfigError> {
    let v = get(key);
    v.trim().parse().map_err(|_| bad(key, &v, "a number"))
}

fn addr(get: &impl Fn(&str) -> String, key: &str) -> Result<SocketAddr, ConfigError> {
    let v = get(key);
    v.trim()
        .parse()
        .map_err(|_| bad(key, &v, "an address like 127.0.0.1:8080"))
}

fn opt(v: String) -> Option<String> {
    let v = v.trim().to_owned();
    (!v.is_empty()).then_some(v)
}

fn build(get: impl Fn(&str) -> String) -> Result<Config, ConfigError> {
    let tcp = match get("tcp").trim() {
        "off" | "" => None,
        _ => Some(addr(&get, "tcp")?),
    };
    let tls = match (opt(get("tls-cert")), opt(get("tls-key"))) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => return Err(bad("tls-cert", "", "--tls-cert and --tls-key go together")),
    };
    let https = match get("https").trim() {
        "true" | "1" | "yes" | "on" => true,
        "false" | "0" | "no" | "off" | "" => false,
        v => return Err(bad("https", v, "true or false")),
    };
    let data = PathBuf::from(get("data"));
    Ok(Config {
        files_dir: opt(get("files-dir")).map_or_else(|| data.join("files"), PathBuf::from),
        redis: opt(get("redis")),
        postgres: opt(get("postgres")),
        postgres_schema: get("postgres-schema"),
        data,
        http: addr(&get, "http")?,
        tcp,
        tls,
        https,
        knowledge: opt(get("knowledge")).map(PathBuf::from),
        bot_name: get("bot-name"),
        llm_name: get("llm-name"),
        openai_base_url: opt(get("openai-base-url")),
        openai_api_key: opt(get("openai-api-key")),
        openai_model: get("openai-model"),
        max_sessions: num(&get, "max-sessions")?,
        max_message_bytes: num(&get, "max-message-bytes")?,
        max_file_bytes: num(&get, "max-file-bytes")?,
        file_quota_bytes: num(&get, "file-quota-bytes")?,
        bot_concurrency: num(&get, "bot-concurrency")?,
        llm_concurrency: num(&get, "llm-concurrency")?,
        llm_user_burst: num(&get, "llm-user-burst")?,
        llm_user_rate: num(&get, "llm-user-rate")?,
        redis_publish_timeout: Duration::from_millis(num(&get, "redis-publish-timeout-ms")?),
        idempotency_window: Duration::from_secs(num(&get, "idempotency-window")?),
        idempotency_keys: num(&get, "idempotency-keys")?,
        write_coalesce: Duration::from_millis(num(&get, "write-coalesce-ms")?),
        rate_burst: num(&get, "rate-burst")?,
        rate_per_second: num(&get, "rate-per-second")?,
        shutdown_grace: Duration::from_secs(num(&get, "shutdown-grace")?),
        log: get("log"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())? {
            Command::Run(c) => Ok(*c),
            Command::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn defaults_need_nothing() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:8080");
        assert_eq!(c.tcp.unwrap().to_string(), "127.0.0.1:7443");
        assert!(c.openai_api_key.is_none() && c.openai_base_url.is_none());
        assert_eq!(c.bot_name, "helper");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = std::env::temp_dir().join(format!("chat-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("chat.conf");
        std::fs::write(
            &file,
            "# comment\nhttp = 127.0.0.1:1111\nmax_sessions = 5\ntcp = off\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = run(&["--config", f], &[]).unwrap();
        assert_eq!((c.http.port(), c.max_sessions, c.tcp), (1111, 5, None));
        let c = run(&["--config", f], &[("CHAT_HTTP", "127.0.0.1:2222")]).unwrap();
        assert_eq!(c.http.port(), 2222);
        let c = run(
            &["--config", f, "--http=127.0.0.1:3333"],
            &[("CHAT_HTTP", "127.0.0.1:2222")],
        )
        .unwrap();
        assert_eq!(c.http.port(), 3333);
        let c = run(&[], &[("OPENAI_API_KEY", "sk-secret")]).unwrap();
        assert!(!format!("{c:?}").contains("sk-secret"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_setting_parses_from_its_flag() {
        let c = run(
            &[
                "--redis",
                "redis://127.0.0.1:1/",
                "--postgres",
                "postgres://p@127.0.0.1:2/chat",
                "--postgres-schema",
                "node",
                "--files-dir",
                "/srv/files",
                "--max-file-bytes",
                "123",
                "--file-quota-bytes",
                "456",
                "--https",
                "true",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.redis.as_deref(), Some("redis://127.0.0.1:1/"));
        assert_eq!(c.postgres.as_deref(), Some("postgres://p@127.0.0.1:2/chat"));
        assert_eq!(c.postgres_schema, "node");
        assert_eq!(c.files_dir, PathBuf::from("/srv/files"));
        assert_eq!(
            (c.max_file_bytes, c.file_quota_bytes, c.https),
            (123, 456, true)
        );
        assert_eq!(
            run(&[], &[]).unwrap().files_dir,
            PathBuf::from("data/files")
        );
        // Every documented key is accepted as a flag.
        for spec in SPECS {
            assert!(check_key(spec.key).is_ok());
            assert!(help().contains(&format!("--{}", spec.key)), "{}", spec.key);
        }
    }

    #[test]
    fn mistakes_are_named() {
        assert!(matches!(
            run(&["--nope", "1"], &[]),
            Err(ConfigError::Unknown(_))
        ));
        assert!(matches!(
            run(&["--http"], &[]),
            Err(ConfigError::MissingValue(_))
        ));
        assert!(matches!(
            run(&["--max-sessions", "many"], &[]),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(matches!(
            run(&["--tls-cert", "a.pem"], &[]),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(help().contains("--http"));
    }
}
