//! The chat server: wires the SQLite store, the bots, and both transports
//! around one engine. The `chat-server` example is a thin `main` over
//! [`start`]; end-to-end tests start it the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use chat_core::{Engine, FileSettings, Limits, OfflineBot, OfflineSettings, Store};
use chat_store_sqlite::{SqliteSettings, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data folder, a port or a file could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] chat_core::StoreError),
    /// The broker could not connect.
    #[error("broker: {0}")]
    Broker(String),
    /// A bot could not be set up.
    #[error("bot setup: {0}")]
    Bot(String),
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(#[from] chat_transport_tcp::Error),
    /// The engine refused its settings.
    #[error("engine: {0}")]
    Build(#[from] chat_core::BuildError),
    /// Start-up requests (the lobby room) failed.
    #[error("engine: {0}")]
    Engine(#[from] chat_core::EngineError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// The public room every new user finds, with the bots in it.
pub const LOBBY: &str = "lobby";

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The engine.
    pub engine: Engine,
    /// Where HTTP and WebSocket listen.
    pub http: SocketAddr,
    /// Where TLS TCP listens, if enabled.
    pub tcp: Option<SocketAddr>,
    /// SHA-256 fingerprint of the TLS certificate (for pinning clients).
    pub fingerprint: String,
    /// Path of the certificate in use.
    pub cert_path: std::path::PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: std::time::Duration,
}

/// Opens the store, builds the engine, binds the listeners and starts
/// serving. Returns once everything listens.
pub async fn start(config: &Config) -> Result<Running, ServerError> {
    std::fs::create_dir_all(&config.data)
        .map_err(io(format!("create {}", config.data.display())))?;
    let store: Arc<dyn Store> = match &config.postgres {
        Some(url) => {
            let s = chat_store_postgres::PostgresSettings::new(url.clone())
                .schema(config.postgres_schema.clone());
            Arc::new(chat_store_postgres::PostgresStore::open(s).await?)
        }
        None => Arc::new(
            SqliteStore::open_async(
                SqliteSettings::new(config.data.join("chat.db"))
                    .idempotency_window(config.idempotency_window)
                    .idempotency_keys(config.idempotency_keys),
            )
            .await?,
        ),
    };

    let mut offline = OfflineSettings::default().name(config.bot_name.clone());
    if let Some(k) = &config.knowledge {
        offline = offline.knowledge_path(k.clone());
    }
    let offline = OfflineBot::new(offline).map_err(|e| ServerError::Bot(e.to_string()))?;
    let mut bots = vec![config.bot_name.clone()];

    let limits = Limits::default()
        .max_sessions(config.max_sessions)
        .max_message_bytes(config.max_message_bytes)
        .rate_burst(config.rate_burst)
        .rate_messages(config.rate_per_second)
        .bot_concurrency(config.bot_concurrency);
    let mut builder = Engine::builder()
        .store_arc(store)
        .limits(limits)
        .server_name(concat!("chat-server/", env!("CARGO_PKG_VERSION")))
        .files(
            FileSettings::new(config.files_dir.clone())
                .max_file_bytes(config.max_file_bytes)
                .user_quota_bytes(config.file_quota_bytes),
        )
        .bot(offline);
    if config.openai_api_key.is_some() || config.openai_base_url.is_some() {
        let mut s = chat_llm_openai::OpenAiSettings::default()
            .name(config.llm_name.clone())
            .model(config.openai_model.clone())
            .max_concurrency(config.llm_concurrency)
            .user_burst(config.llm_user_burst)
            .user_rate(config.llm_user_rate);
        if let Some(url) = &config.openai_base_url {
            s = s.base_url(url.clone());
        }
        if let Some(key) = &config.openai_api_key {
            s = s.api_key(key.clone());
        }
        let bot =
            chat_llm_openai::OpenAiBot::new(s).map_err(|e| ServerError::Bot(e.to_string()))?;
        builder = builder.bot(bot);
        bots.push(config.llm_name.clone());
    }
    if let Some(url) = &config.redis {
        let broker = chat_broker_redis::RedisBroker::connect(
            chat_broker_redis::RedisSettings::new(url.clone())
                .publish_timeout(config.redis_publish_timeout),
        )
        .await
        .map_err(|e| ServerError::Broker(e.to_string()))?;
        builder = builder.broker(Arc::new(broker));
    }
    let engine = builder.build()?;
    let bot_refs: Vec<&str> = bots.iter().map(String::as_str).collect();
    engine
        .ensure_room(
            LOBBY,
            "public",
            "Say hello! Ask @helper anything.",
            &bot_refs,
        )
        .await?;

    // TLS: the given certificate, or a self-signed one kept in the data folder.
    let (tls, fingerprint, cert_path) = match &config.tls {
        Some((cert, key)) => {
            let tls = chat_transport_tcp::tls::server_config_from_pem_files(cert, key)?;
            let der = chat_transport_tcp::tls::load_certs(cert)?;
            let fp = der
                .first()
                .map(|c| chat_transport_tcp::Fingerprint::of(c).to_string())
                .unwrap_or_default();
            (tls, fp, cert.clone())
        }
        None => {
            let ss = chat_transport_tcp::self_signed(config.data.join("tls"), &[])?;
            (
                ss.server_config()?,
                ss.fingerprint.to_string(),
                ss.cert_path.clone(),
            )
        }
    };

    let (stop, _) = watch::channel(false);
    let stopped = |stop: &watch::Sender<bool>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();

    let http_listener = TcpListener::bind(config.http)
        .await
        .map_err(io(format!("bind {}", config.http)))?;
    let http = http_listener.local_addr().map_err(io("local address"))?;
    let mut ws_settings =
        chat_transport_ws::WsSettings::default().write_coalesce(config.write_coalesce);
    if config.https {
        ws_settings = ws_settings.tls(tls.clone());
    }
    let ws = chat_transport_ws::serve(http_listener, engine.clone(), ws_settings, stopped(&stop));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = ws.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));

    let tcp = match config.tcp {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(io(format!("bind {addr}")))?;
            let local = l.local_addr().map_err(io("local address"))?;
            tasks.push(tokio::spawn(chat_transport_tcp::serve(
                l,
                engine.clone(),
                tls.clone(),
                chat_transport_tcp::TcpSettings::default(),
                stopped(&stop),
            )));
            Some(local)
        }
        None => None,
    };

    Ok(Running {
        engine,
        http,
        tcp,
        fingerprint,
        cert_path,
        stop,
        tasks,
        grace: config.shutdown_grace,
    })
}

impl Running {
    /// Graceful shutdown: stop accepting, tell every client `shutting_down`,
    /// finish in-flight work within the grace period, flush the store.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        let res = self.engine.shutdown(self.grace).await;
        for t in self.tasks {
            let _ = tokio::time::timeout(self.grace, t).await;
        }
        res.map_err(ServerError::from)
    }
}
