//! `tollgate.toml`: listeners, upstreams, vault, audit, agents and policies, as one validated value.

mod audit;
mod drift;
pub mod key_span;
mod regular_file;
mod source_error;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::tls::UpstreamTlsMode;

pub use audit::{
    parse_interval, split_host_port, AuditConfig, RedisOutcomes, RotateConfig, SyslogConfig,
    WebhookConfig, FACILITIES,
};
pub use drift::{ConfigSource, Drift};
pub use key_span::locate_key;
pub use regular_file::read_regular_file;
pub use source_error::{SourceError, SourceLocation};

/// A value that parsed but is not valid, and the key it is about (tables, then the key).
struct Invalid {
    at: Vec<String>,
    message: String,
}

impl Invalid {
    fn at(path: &[&str], message: impl Into<String>) -> Invalid {
        Invalid {
            at: path.iter().map(|p| p.to_string()).collect(),
            message: message.into(),
        }
    }

    /// Located in `text` where the key (or its table) is; unlocated when neither is written.
    fn in_file(self, origin: &Path, text: &str) -> SourceError {
        let path: Vec<&str> = self.at.iter().map(String::as_str).collect();
        match key_span::locate_key(text, &path) {
            Some(offset) => SourceError::at(origin, text, offset, self.message),
            None => SourceError::semantic(origin, self.message),
        }
    }
}

/// The whole configuration, with every relative path already resolved against the config file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    pub vault: VaultConfig,
    pub audit: AuditConfig,
    /// The agents file (names, groups and SCRAM verifiers), written by `tollgate agent add`.
    pub agents_file: PathBuf,
    /// The folder of policy files (`*.toml`).
    pub policies_dir: PathBuf,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The admin HTTP API and `/metrics` (off unless `[admin] listen` is set).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Upstream databases by logical name; agents pick one by the startup `database` parameter.
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// The front end's certificate (PostgreSQL SSLRequest and direct TLS, the Redis TLS listener).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The file this config was read from, to tell at a reload which of its changes wait for a
    /// restart (none for a config built in code).
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// `[runtime]`: the threads sessions run on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads of the session runtime (default 1, like PgBouncer's one event loop). A
    /// session's two relay halves already share one task; more threads add cross-thread
    /// wake-ups to every statement (measured: 1 thread serves ~35% more statements than 2 on a
    /// 2-core machine that also runs the database and the clients). Raise it when the gateway
    /// has cores of its own and its CPU is the limit.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

fn default_worker_threads() -> usize {
    1
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: default_worker_threads(),
        }
    }
}

impl RuntimeConfig {
    /// The session runtime (blocking work such as SQL analysis of a new statement shape moves
    /// to tokio's blocking threads).
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads.max(1))
            .thread_name("tollgate-worker")
            .enable_all()
            .build()
    }
}

/// `[tls]`: the certificate the listeners present. Reloaded on SIGHUP and when the files change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, server certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address of the PostgreSQL listener, e.g. `127.0.0.1:6432`. Port 0 picks a free port.
    pub postgres: Option<SocketAddr>,
    /// Address of the Redis listener; it serves the one upstream of kind `redis`.
    pub redis: Option<SocketAddr>,
    /// Address of a Redis listener that speaks TLS only (needs `[tls]`); same upstream.
    pub redis_tls: Option<SocketAddr>,
    /// Address of the MongoDB listener; it serves the one upstream of kind `mongodb`.
    pub mongodb: Option<SocketAddr>,
    /// Address of a MongoDB listener that speaks TLS only (needs `[tls]`); same upstream.
    pub mongodb_tls: Option<SocketAddr>,
    /// Address of the MCP (Model Context Protocol) listener: Streamable HTTP at `/mcp`, plain
    /// HTTP or, when `[tls]` is set, HTTPS on the same port (told apart by the first byte).
    #[serde(default)]
    pub mcp: Option<SocketAddr>,
    /// Refuse PostgreSQL sessions that did not negotiate TLS (FATAL 28000 before authentication;
    /// CancelRequests are still accepted in plain text, as PostgreSQL does). Needs `[tls]`.
    #[serde(default)]
    pub postgres_require_tls: bool,
    /// Refuse every command on the plain `redis` listener with an error pointing at TLS.
    #[serde(default)]
    pub redis_require_tls: bool,
    /// PBKDF2 iterations a PostgreSQL SCRAM login asks of the client (see [`ScramIterations`]).
    #[serde(default)]
    pub postgres_scram_iterations: ScramIterations,
}

/// How much key derivation a PostgreSQL SCRAM login asks of the client. Agent tokens are 192
/// random bits, so iterations add no strength; they only cost a client that connects per
/// transaction a few milliseconds of CPU. But pgjdbc (and other drivers built on the same SCRAM
/// library) refuse fewer than RFC 7677's 4096.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScramIterations {
    /// 64 iterations for clients whose StartupMessage holds only parameters libpq sends (psql,
    /// pgbench, psycopg, asyncpg, node-postgres), 4096 for every other client (pgjdbc sends
    /// `DateStyle`, `TimeZone` and `extra_float_digits`).
    #[default]
    Auto,
    /// 4096 iterations for every client.
    Full,
}

impl ListenConfig {
    /// The rule named when a listener refuses a plain connection.
    pub const POSTGRES_REQUIRE_TLS_RULE: &'static str =
        "tollgate.toml: listen.postgres_require_tls";
    pub const REDIS_REQUIRE_TLS_RULE: &'static str = "tollgate.toml: listen.redis_require_tls";
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener (API, `/metrics`, `/healthz`, `/readyz`).
    pub listen: Option<SocketAddr>,
    /// Admin tokens (names, roles and verifiers), written by `tollgate admin-token add`.
    #[serde(default = "default_admin_tokens_file")]
    pub tokens_file: PathBuf,
}

fn default_admin_tokens_file() -> PathBuf {
    PathBuf::from("admin_tokens.toml")
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            tokens_file: default_admin_tokens_file(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    pub file: PathBuf,
    /// File holding the master key (64 hex characters). `TOLLGATE_MASTER_KEY` wins when set.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest protocol message accepted from a client, in bytes (COPY data, Bind parameters).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Longest SQL text accepted in a Query or Parse, in bytes; longer ones are refused (54000)
    /// before analysis.
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: usize,
    /// How long to wait for an upstream to accept a connection and log in.
    #[serde(default = "default_connect_timeout_ms")]
    pub upstream_connect_timeout_ms: u64,
    /// How long a client may take to authenticate.
    #[serde(default = "default_auth_timeout_ms")]
    pub auth_timeout_ms: u64,
    /// Most client connections tollgate serves at once (all agents, all protocols).
    #[serde(default)]
    pub max_client_connections: Option<u32>,
    /// Most connections that may be between accept and admission at once (TLS handshake,
    /// startup, authentication), all protocols; a connection beyond it is refused at once
    /// (53300 / `-ERR`). With `auth_timeout_ms` it bounds what silent or slow clients hold.
    #[serde(default = "default_max_preauth_connections")]
    pub max_preauth_connections: u32,
    /// MCP and admin listeners: how long a connection may take to send a request's headers,
    /// counted from its arrival (TLS handshake included) or from the end of its previous
    /// response (the keep-alive bound). It never cuts a request in progress (a streamed
    /// response); `client_write_timeout_ms` bounds a response nobody reads.
    #[serde(default = "default_http_header_timeout_ms")]
    pub http_header_timeout_ms: u64,
    /// On SIGTERM/SIGINT: how long running statements (and open transactions) may take to
    /// finish before the remaining sessions are closed.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Refused statements and commands per second one agent may have answered without delay,
    /// across its sessions and doors; beyond that (and a burst of `refusal_burst`), a session
    /// just refused waits before it reads its next message. Every refusal is still answered
    /// and recorded: the pace bounds how fast an agent can write refusal records (which cost
    /// no rate token). 0: no pacing.
    #[serde(default = "default_refusals_per_second")]
    pub refusals_per_second: u32,
    #[serde(default = "default_refusal_burst")]
    pub refusal_burst: u32,
    /// Bytes that client messages still being received may hold, all sessions and doors
    /// together (a session's first 256 KiB of read buffer are not counted). A message that
    /// would take more cannot be received: the session gets a native error and ends.
    #[serde(default = "default_max_held_client_bytes")]
    pub max_held_client_bytes: usize,
    /// One agent's share of `max_held_client_bytes`, all its sessions and doors together: an
    /// agent that fills it cannot leave the other agents without room to receive.
    #[serde(default = "default_max_held_client_bytes_per_agent")]
    pub max_held_client_bytes_per_agent: usize,
    /// How long a write to a client may make no progress (the client reads none of its
    /// replies) before its session is closed; a session that stops reading would otherwise
    /// keep its server connection, and the locks and snapshot of its statement, for ever.
    /// Counted afresh whenever the client accepts bytes, so a slow reader is not cut. 0: no
    /// limit.
    #[serde(default = "default_client_write_timeout_ms")]
    pub client_write_timeout_ms: u64,
}

fn default_max_message_bytes() -> usize {
    64 << 20
}
fn default_max_statement_bytes() -> usize {
    1 << 20
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_auth_timeout_ms() -> u64 {
    30_000
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}
fn default_client_write_timeout_ms() -> u64 {
    60_000
}
fn default_max_preauth_connections() -> u32 {
    1024
}
fn default_http_header_timeout_ms() -> u64 {
    10_000
}
fn default_refusals_per_second() -> u32 {
    100
}
fn default_refusal_burst() -> u32 {
    1_000
}
fn default_max_held_client_bytes() -> usize {
    1 << 30
}
fn default_max_held_client_bytes_per_agent() -> usize {
    256 << 20
}

impl LimitsConfig {
    /// `refusals_per_second` and `refusal_burst` as a rate (`None`: no pacing).
    pub fn refusal_rate(&self) -> Option<crate::policy::limits::Rate> {
        (self.refusals_per_second > 0).then(|| crate::policy::limits::Rate {
            per_minute: self.refusals_per_second.saturating_mul(60),
            burst: self.refusal_burst,
        })
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: default_max_message_bytes(),
            max_statement_bytes: default_max_statement_bytes(),
            upstream_connect_timeout_ms: default_connect_timeout_ms(),
            auth_timeout_ms: default_auth_timeout_ms(),
            max_client_connections: None,
            max_preauth_connections: default_max_preauth_connections(),
            http_header_timeout_ms: default_http_header_timeout_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
            refusals_per_second: default_refusals_per_second(),
            refusal_burst: default_refusal_burst(),
            max_held_client_bytes: default_max_held_client_bytes(),
            max_held_client_bytes_per_agent: default_max_held_client_bytes_per_agent(),
            client_write_timeout_ms: default_client_write_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Postgres,
    Redis,
    Mongodb,
}

impl UpstreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Postgres => "postgres",
            UpstreamKind::Redis => "redis",
            UpstreamKind::Mongodb => "mongodb",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    pub host: String,
    pub port: u16,
    /// The real database name upstream (defaults to the logical name). For `mongodb`: the
    /// database the vaulted user is defined in (`authSource`, default `admin`); agents name
    /// databases themselves, with each command's `$db`.
    pub database: Option<String>,
    /// What this upstream holds, in a sentence: shown to agents by the MCP `list_upstreams`
    /// tool (never credentials).
    #[serde(default)]
    pub description: Option<String>,
    /// `vault:NAME` or a plain user name.
    /// (Redis: the ACL user, `default` for a `requirepass` server.)
    pub user: String,
    /// Must be `vault:NAME`: passwords never live in the config file.
    pub password: String,
    /// Schemas the session is pinned to (sent as the upstream `search_path`; agents cannot change it).
    #[serde(default = "default_search_path")]
    pub search_path: Vec<String>,
    /// `disable`, `require` or `verify-full`; default `disable` for loopback hosts
    /// (127.0.0.0/8, ::1, localhost) and `verify-full` for every other host.
    #[serde(default)]
    pub tls: Option<UpstreamTlsMode>,
    /// PEM trust anchors for `verify-full` (default: the system CA bundle).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: how agent sessions get server connections (`session` or `transaction`; a
    /// policy file may ask for `session` for its agents). Default `session`.
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// PostgreSQL: most server connections tollgate keeps to this upstream (default 20).
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// PostgreSQL, transaction pooling: most of the pool's connections one agent may hold at
    /// once (default `pool_size` less a quarter, at least 1), so one agent cannot take them all.
    #[serde(default)]
    pub max_agent_share: Option<u32>,
    /// PostgreSQL: idle server connections kept open even without sessions (default 0).
    #[serde(default)]
    pub min_idle: Option<u32>,
    /// PostgreSQL: a server connection older than this is closed when it comes back (default 1 h).
    #[serde(default)]
    pub max_lifetime_ms: Option<u64>,
    /// PostgreSQL: an idle server connection beyond `min_idle` is closed after this (default 10 min).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// PostgreSQL: how long a statement waits for a server connection before its session is
    /// refused with 53300 naming the pool (default 5 s).
    #[serde(default)]
    pub checkout_timeout_ms: Option<u64>,
    /// PostgreSQL: most server connections held by session-pooled sessions (one each, reused
    /// after a reset; default 100, PostgreSQL's own `max_connections`). `pool_size` bounds the
    /// connections transaction-pooled sessions share.
    #[serde(default)]
    pub max_session_connections: Option<u32>,
    /// Redis: upstream connections that sessions' plain keyed commands share, pipelined
    /// together (default 2; 0 gives every session a connection of its own from the start).
    #[serde(default)]
    pub shared_connections: Option<u32>,
    /// Tests only (debug builds; refused otherwise): no pinning and no reset, so a test can show
    /// that session state would cross agents without them.
    #[serde(default)]
    pub test_disable_isolation: bool,
}

/// How agent sessions share server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per agent session, for the session's life (reset and reused after).
    #[default]
    Session,
    /// A server connection per transaction (or lone statement), returned at ReadyForQuery 'I'.
    Transaction,
}

impl PoolMode {
    pub fn name(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// An upstream's pool settings with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Tests only: see `UpstreamConfig::test_disable_isolation`.
    pub isolation: bool,
    pub mode: PoolMode,
    pub size: u32,
    /// Most connections of a transaction pool one agent holds at once.
    pub agent_share: u32,
    pub session_size: u32,
    pub min_idle: u32,
    pub max_lifetime: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub checkout_timeout: std::time::Duration,
}

fn default_search_path() -> Vec<String> {
    vec!["public".to_string()]
}

/// A reference to a secret: either a literal (allowed for user names only) or a vault entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Literal(String),
    Vault(String),
}

impl SecretRef {
    pub fn parse(s: &str) -> SecretRef {
        match s.strip_prefix("vault:") {
            Some(name) => SecretRef::Vault(name.to_string()),
            None => SecretRef::Literal(s.to_string()),
        }
    }
}

impl UpstreamConfig {
    pub fn database_name<'a>(&'a self, logical: &'a str) -> &'a str {
        self.database.as_deref().unwrap_or(logical)
    }

    /// The pool settings in force (defaults for what the file leaves out).
    pub fn pool(&self) -> PoolSettings {
        let ms = std::time::Duration::from_millis;
        PoolSettings {
            isolation: !self.test_disable_isolation,
            mode: self.pool_mode.unwrap_or_default(),
            size: self.pool_size.unwrap_or(20),
            agent_share: self.max_agent_share.unwrap_or_else(|| {
                let size = self.pool_size.unwrap_or(20);
                (size - size / 4).max(1)
            }),
            session_size: self.max_session_connections.unwrap_or(100),
            min_idle: self.min_idle.unwrap_or(0),
            max_lifetime: ms(self.max_lifetime_ms.unwrap_or(3_600_000)),
            idle_timeout: ms(self.idle_timeout_ms.unwrap_or(600_000)),
            checkout_timeout: ms(self.checkout_timeout_ms.unwrap_or(5_000)),
        }
    }

    fn has_pool_settings(&self) -> bool {
        self.pool_mode.is_some()
            || self.pool_size.is_some()
            || self.max_agent_share.is_some()
            || self.min_idle.is_some()
            || self.max_lifetime_ms.is_some()
            || self.idle_timeout_ms.is_some()
            || self.checkout_timeout_ms.is_some()
            || self.max_session_connections.is_some()
    }

    /// Redis: how many upstream connections sessions share (see `shared_connections`).
    pub fn shared_connections(&self) -> usize {
        self.shared_connections.unwrap_or(2) as usize
    }

    /// The TLS mode in force: the configured one, else the default for the host.
    pub fn tls_mode(&self) -> UpstreamTlsMode {
        self.tls
            .unwrap_or_else(|| UpstreamTlsMode::default_for(&self.host))
    }
}

impl Config {
    /// `message` about the value of the key at `path` (`["upstream", "shop", "password"]`),
    /// placed as `FILE:LINE:COLUMN: message` in the file the config was read from (for `tollgate
    /// check`: a vault reference to a secret the vault lacks).
    pub fn error_at(&self, path: &[&str], message: String) -> SourceError {
        match &self.source {
            Some(source) => Invalid::at(path, message).in_file(source.path(), source.text()),
            None => SourceError::semantic(Path::new("tollgate.toml"), message),
        }
    }

    /// Reads, parses and validates a config file; relative paths are made relative to its folder.
    pub fn load(path: &Path) -> Result<Config, SourceError> {
        let text = read_regular_file(path).map_err(|e| SourceError::io(path, &e))?;
        let mut config = Config::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.source = Some(ConfigSource::new(path, text));
        Ok(config)
    }

    /// Parses and validates config text; `origin` only names the file in errors.
    pub fn parse(origin: &Path, text: &str) -> Result<Config, SourceError> {
        let config: Config =
            toml::from_str(text).map_err(|e| SourceError::from_toml(origin, text, &e))?;
        config.validate().map_err(|e| e.in_file(origin, text))?;
        Ok(config)
    }

    /// Values that parse but are not valid, with the key each is about (for its location).
    fn validate(&self) -> Result<(), Invalid> {
        for (name, upstream) in &self.upstreams {
            if !matches!(SecretRef::parse(&upstream.password), SecretRef::Vault(_)) {
                return Err(Invalid::at(&["upstream", name, "password"], format!("upstream \"{name}\": password must be a vault reference (\"vault:NAME\"), never the password itself")));
            }
            if upstream.ca_file.is_some() && upstream.tls_mode() == UpstreamTlsMode::Disable {
                return Err(Invalid::at(&["upstream", name, "ca_file"], format!("upstream \"{name}\": ca_file is set but TLS is disabled (set tls = \"verify-full\")")));
            }
            if upstream.test_disable_isolation && !cfg!(debug_assertions) {
                return Err(Invalid::at(&["upstream", name, "test_disable_isolation"], format!("upstream \"{name}\": test_disable_isolation is for tests of debug builds only")));
            }
            if upstream.has_pool_settings() && upstream.kind != UpstreamKind::Postgres {
                return Err(Invalid::at(&["upstream", name, "pool_mode"], format!("upstream \"{name}\": pool settings apply to upstreams of kind \"postgres\"")));
            }
            if upstream.shared_connections.is_some() && upstream.kind != UpstreamKind::Redis {
                return Err(Invalid::at(&["upstream", name, "shared_connections"], format!("upstream \"{name}\": shared_connections applies to upstreams of kind \"redis\"")));
            }
            let pool = upstream.pool();
            if pool.size == 0 || pool.session_size == 0 || pool.min_idle > pool.size {
                return Err(Invalid::at(&["upstream", name, "pool_size"], format!("upstream \"{name}\": pool_size and max_session_connections must be at least 1 and min_idle at most pool_size")));
            }
            if pool.agent_share == 0 || pool.agent_share > pool.size {
                return Err(Invalid::at(
                    &["upstream", name, "max_agent_share"],
                    format!(
                        "upstream \"{name}\": max_agent_share must be between 1 and pool_size ({})",
                        pool.size
                    ),
                ));
            }
            if pool.checkout_timeout.is_zero() {
                return Err(Invalid::at(
                    &["upstream", name, "checkout_timeout_ms"],
                    format!("upstream \"{name}\": checkout_timeout_ms must be at least 1"),
                ));
            }
            if upstream.search_path.is_empty() {
                return Err(Invalid::at(
                    &["upstream", name, "search_path"],
                    format!("upstream \"{name}\": search_path must name at least one schema"),
                ));
            }
        }
        let redis_upstreams = self
            .upstreams
            .values()
            .filter(|u| u.kind == UpstreamKind::Redis)
            .count();
        let needs_tls = [
            (self.listen.redis_tls.is_some(), "listen.redis_tls"),
            (
                self.listen.postgres_require_tls,
                "listen.postgres_require_tls",
            ),
            (self.listen.redis_require_tls, "listen.redis_require_tls"),
            (self.listen.mongodb_tls.is_some(), "listen.mongodb_tls"),
        ];
        if let Some((_, what)) = needs_tls.iter().find(|(on, _)| *on && self.tls.is_none()) {
            return Err(Invalid::at(
                &what.split('.').collect::<Vec<_>>(),
                format!("{what} needs a certificate: add [tls] with cert_file and key_file"),
            ));
        }
        if (self.listen.redis.is_some() || self.listen.redis_tls.is_some()) && redis_upstreams != 1
        {
            return Err(Invalid::at(&["listen", "redis"], format!("listen.redis serves exactly one upstream of kind \"redis\"; {redis_upstreams} are configured")));
        }
        let mongo_upstreams = self
            .upstreams
            .values()
            .filter(|u| u.kind == UpstreamKind::Mongodb)
            .count();
        if (self.listen.mongodb.is_some() || self.listen.mongodb_tls.is_some())
            && mongo_upstreams != 1
        {
            return Err(Invalid::at(&["listen", "mongodb"], format!("listen.mongodb serves exactly one upstream of kind \"mongodb\"; {mongo_upstreams} are configured")));
        }
        if self.runtime.worker_threads == 0 || self.runtime.worker_threads > 1024 {
            return Err(Invalid::at(
                &["runtime", "worker_threads"],
                "runtime.worker_threads must be between 1 and 1024".to_string(),
            ));
        }
        if let Err(e) = self.audit.validate() {
            return Err(Invalid::at(&["audit"], e));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(Invalid::at(
                &["limits", "max_message_bytes"],
                "limits.max_message_bytes must be at least 1024".to_string(),
            ));
        }
        // Smaller, an over-long statement's kept head would not fit: the session would end
        // (53200) where the statement should only be refused (54000).
        let head = crate::pg::kept_head(self.limits.max_statement_bytes);
        if self.limits.max_held_client_bytes_per_agent < head
            || self.limits.max_held_client_bytes < head
        {
            return Err(Invalid::at(&["limits", "max_held_client_bytes_per_agent"], format!("limits.max_held_client_bytes and limits.max_held_client_bytes_per_agent must be at least {head} bytes (limits.max_statement_bytes + 512 KiB: the head an over-long statement keeps for its refusal)")));
        }
        if self.limits.max_preauth_connections == 0 {
            return Err(Invalid::at(
                &["limits", "max_preauth_connections"],
                "limits.max_preauth_connections must be at least 1".to_string(),
            ));
        }
        if self.limits.http_header_timeout_ms < 100 {
            return Err(Invalid::at(
                &["limits", "http_header_timeout_ms"],
                "limits.http_header_timeout_ms must be at least 100".to_string(),
            ));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.vault.file);
        if let Some(k) = self.vault.key_file.as_mut() {
            join(k);
        }
        self.audit.resolve_paths(join);
        join(&mut self.agents_file);
        join(&mut self.policies_dir);
        join(&mut self.admin.tokens_file);
        if let Some(tls) = self.tls.as_mut() {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
        }
        for upstream in self.upstreams.values_mut() {
            if let Some(ca) = upstream.ca_file.as_mut() {
                join(ca);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
agents_file = "agents.toml"
policies_dir = "policies"
[listen]
postgres = "127.0.0.1:0"
[vault]
file = "vault.json"
[audit]
file = "audit.log"
[upstream.shop]
kind = "postgres"
host = "127.0.0.1"
port = 5432
user = "vault:shop_user"
password = "vault:shop_password"
"#;

    /// DESIGN: `tollgate check` errors name file, line and column, for values that parse but
    /// are not valid too (they named only the file).
    #[test]
    fn invalid_values_are_located_at_their_key() {
        let cases = [
            (
                GOOD.replace("\"vault:shop_password\"", "\"hunter2\""),
                "tollgate.toml:15:1: upstream \"shop\": password must be a vault reference",
            ),
            (
                format!("{GOOD}pool_size = 0\n"),
                "tollgate.toml:16:1: upstream \"shop\": pool_size",
            ),
            (
                format!("{GOOD}[runtime]\nworker_threads = 0\n"),
                "tollgate.toml:17:1: runtime.worker_threads",
            ),
            (
                format!("{GOOD}[limits]\nmax_message_bytes = 10\n"),
                "tollgate.toml:17:1: limits.max_message_bytes",
            ),
            (
                GOOD.replace("[listen]\n", "[listen]\nredis_tls = \"127.0.0.1:0\"\n"),
                "tollgate.toml:5:1: listen.redis_tls needs a certificate",
            ),
        ];
        for (text, expected) in cases {
            let e = Config::parse(Path::new("tollgate.toml"), &text).unwrap_err();
            assert!(e.to_string().starts_with(expected), "{e}");
        }
    }

    #[test]
    fn postgres_scram_iterations_default_to_auto_and_parse() {
        use super::ScramIterations;
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.listen.postgres_scram_iterations, ScramIterations::Auto);
        let full = GOOD.replace("[listen]", "[listen]\npostgres_scram_iterations = \"full\"");
        let c = Config::parse(Path::new("t.toml"), &full).unwrap();
        assert_eq!(c.listen.postgres_scram_iterations, ScramIterations::Full);
        let bad = GOOD.replace("[listen]", "[listen]\npostgres_scram_iterations = \"few\"");
        assert!(Config::parse(Path::new("t.toml"), &bad).is_err());
    }

    #[test]
    fn redis_shared_connections_default_to_two_and_belong_to_redis() {
        let redis = format!(
            "{GOOD}[upstream.cache]\nkind = \"redis\"\nhost = \"127.0.0.1\"\nport = 6379\nuser = \"default\"\npassword = \"vault:pw\"\n"
        );
        let c = Config::parse(Path::new("t.toml"), &redis).unwrap();
        assert_eq!(c.upstreams["cache"].shared_connections(), 2);
        let off = format!("{redis}shared_connections = 0\n");
        let c = Config::parse(Path::new("t.toml"), &off).unwrap();
        assert_eq!(c.upstreams["cache"].shared_connections(), 0);
        let on_pg = GOOD.replace(
            "[upstream.shop]\n",
            "[upstream.shop]\nshared_connections = 2\n",
        );
        let e = Config::parse(Path::new("t.toml"), &on_pg).unwrap_err();
        assert!(
            e.to_string()
                .contains("shared_connections applies to upstreams of kind \"redis\""),
            "{e}"
        );
    }

    #[test]
    fn parses_a_complete_config() {
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.upstreams["shop"].search_path, vec!["public"]);
        assert_eq!(c.upstreams["shop"].database_name("shop"), "shop");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = GOOD.replace("port = 5432", "port = 5432\nprot = 1");
        let err = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("t.toml:"), "{shown}");
        assert!(shown.contains("prot"), "{shown}");
        let loc = err.location.unwrap();
        assert_eq!((loc.line, loc.column), (14, 1), "{shown}");
    }

    #[test]
    fn plain_password_is_refused() {
        let text = GOOD.replace("vault:shop_password", "hunter2");
        let err = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(err.to_string().contains("vault reference"));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn upstream_tls_defaults_by_host_and_needs_a_mode_for_ca_file() {
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.upstreams["shop"].tls_mode(), UpstreamTlsMode::Disable);
        let remote = GOOD.replace("127.0.0.1\"\nport", "db.internal\"\nport");
        let c = Config::parse(Path::new("t.toml"), &remote).unwrap();
        assert_eq!(c.upstreams["shop"].tls_mode(), UpstreamTlsMode::VerifyFull);
        let text = GOOD.replace("port = 5432", "port = 5432\ntls = \"require\"");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(c.upstreams["shop"].tls_mode(), UpstreamTlsMode::Require);
        let text = GOOD.replace("port = 5432", "port = 5432\nca_file = \"ca.crt\"");
        let err = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(err.to_string().contains("ca_file"), "{err}");
        let text = GOOD.replace("port = 5432", "port = 5432\ntls = \"verify-ful\"");
        assert!(Config::parse(Path::new("t.toml"), &text).is_err());
    }

    #[test]
    fn tls_listener_options_need_a_certificate() {
        let text = GOOD.replace("[vault]", "postgres_require_tls = true\n[vault]");
        let err = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(err.to_string().contains("[tls]"), "{err}");
        let text = format!("{text}\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        assert!(c.listen.postgres_require_tls);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.audit.file, dir.path().join("audit.log"));
    }
}
