//! [`PostgresSettings`]: every bound and tunable of the store, named, with a
//! default.

use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// Default schema the store's tables live in.
pub const DEFAULT_SCHEMA: &str = "public";
/// Default most connections in the pool.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default time allowed to open one connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest wait for a free connection of the pool.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest run of one statement on the server.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `application_name` the connections report to the server.
pub const DEFAULT_APPLICATION_NAME: &str = "chat-engine";

/// How to connect and run a [`PostgresStore`](crate::PostgresStore).
///
/// Start from [`PostgresSettings::new`] with a connection string and change
/// what you need:
///
/// ```
/// use std::time::Duration;
/// use chat_store_postgres::PostgresSettings;
///
/// let settings = PostgresSettings::new("postgres://chat@db.internal:5432/chat")
///     .schema("chat_prod")
///     .pool_size(32)
///     .acquire_timeout(Duration::from_secs(2));
/// assert_eq!(settings.pool_size, 32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresSettings {
    /// Connection string, as a URL (`postgres://user:password@host:port/db`)
    /// or as `key=value` pairs (`host=/run/postgresql dbname=chat`); both
    /// forms of libpq, parsed by `tokio-postgres`.
    pub url: String,
    /// Schema holding the store's tables (default [`DEFAULT_SCHEMA`]),
    /// created when missing; each connection's `search_path` is set to it.
    /// Several chat services (or tests) can share one database with one
    /// schema each. ASCII letters, digits and `_`, not starting with a
    /// digit, at most 63 bytes.
    pub schema: String,
    /// Most connections the pool opens (default [`DEFAULT_POOL_SIZE`]);
    /// that many requests run at once, the others wait for a connection.
    /// Keep `nodes × pool_size` under the server's `max_connections`.
    pub pool_size: usize,
    /// Time allowed to open one connection, TCP and authentication
    /// (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Longest wait for a free connection when all are busy (default
    /// [`DEFAULT_ACQUIRE_TIMEOUT`]); past it the request fails with
    /// `StoreError::Backend`.
    pub acquire_timeout: Duration,
    /// Longest time the server runs one statement (`statement_timeout`,
    /// default [`DEFAULT_STATEMENT_TIMEOUT`]).
    pub statement_timeout: Duration,
    /// `application_name` reported to the server, shown in
    /// `pg_stat_activity` (default [`DEFAULT_APPLICATION_NAME`]).
    pub application_name: String,
}

impl PostgresSettings {
    /// Settings for the database at `url`, every other value at its default.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            application_name: DEFAULT_APPLICATION_NAME.to_owned(),
        }
    }

    /// Sets [`url`](Self::url).
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets [`schema`](Self::schema).
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets [`pool_size`](Self::pool_size).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`acquire_timeout`](Self::acquire_timeout).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`application_name`](Self::application_name).
    #[must_use]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Checks every value and parses the connection string.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, Error> {
        let invalid = |name, reason| Err(Error::InvalidSetting { name, reason });
        if !valid_identifier(&self.schema) {
            return invalid(
                "schema",
                "must be 1-63 ASCII letters, digits or _, not starting with a digit",
            );
        }
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("acquire_timeout", self.acquire_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() {
                return invalid(name, "must be positive");
            }
        }
        let mut config = tokio_postgres::Config::from_str(&self.url).map_err(Error::Config)?;
        config
            .connect_timeout(self.connect_timeout)
            .application_name(&self.application_name);
        Ok(config)
    }
}

/// A schema name that needs no escaping: `[A-Za-z_][A-Za-z0-9_]{0,62}`.
pub(crate) fn valid_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_connection_string_forms_parse() {
        let url = PostgresSettings::new("postgres://chat:pw@127.0.0.1:5433/chat")
            .pg_config()
            .unwrap();
        assert_eq!(url.get_dbname(), Some("chat"));
        assert_eq!(url.get_ports(), [5433]);
        assert_eq!(url.get_application_name(), Some(DEFAULT_APPLICATION_NAME));
        let kv = PostgresSettings::new("host=/run/postgresql user=chat dbname=x")
            .pg_config()
            .unwrap();
        assert_eq!(kv.get_user(), Some("chat"));
        assert_eq!(kv.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn bad_values_are_refused() {
        let base = || PostgresSettings::new("postgres://localhost/chat");
        for s in [
            base().schema(""),
            base().schema("1abc"),
            base().schema("a-b"),
            base().schema("x\"; DROP TABLE users; --"),
            base().schema("a".repeat(64)),
            base().pool_size(0),
            base().acquire_timeout(Duration::ZERO),
        ] {
            assert!(
                matches!(s.pg_config(), Err(Error::InvalidSetting { .. })),
                "{s:?}"
            );
        }
        assert!(matches!(
            base().url("postgres://[bad").pg_config(),
            Err(Error::Config(_))
        ));
        assert!(base().schema("_chat_2").pg_config().is_ok());
    }
}
