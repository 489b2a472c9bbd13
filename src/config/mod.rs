//! `tollgate.toml`: listeners, upstreams, vault, audit, agents and policies, as one validated value.

mod source_error;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::tls::UpstreamTlsMode;

pub use source_error::{SourceError, SourceLocation};

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
    /// Refuse PostgreSQL sessions that did not negotiate TLS (FATAL 28000 before authentication;
    /// CancelRequests are still accepted in plain text, as PostgreSQL does). Needs `[tls]`.
    #[serde(default)]
    pub postgres_require_tls: bool,
    /// Refuse every command on the plain `redis` listener with an error pointing at TLS.
    #[serde(default)]
    pub redis_require_tls: bool,
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
pub struct AuditConfig {
    pub file: PathBuf,
    /// Replace literals in recorded statements with `$n` placeholders (PostgreSQL's own normaliser).
    #[serde(default)]
    pub redact_literals: bool,
    /// Which Redis commands get an outcome record besides their decision record: `errors`
    /// (default: only commands the upstream answered with an error, or whose reply never came)
    /// or `all` (every command, with its duration). Decisions are always recorded.
    #[serde(default)]
    pub redis_outcomes: RedisOutcomes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisOutcomes {
    #[default]
    Errors,
    All,
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
    /// On SIGTERM/SIGINT: how long running statements (and open transactions) may take to
    /// finish before the remaining sessions are closed.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
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

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: default_max_message_bytes(),
            max_statement_bytes: default_max_statement_bytes(),
            upstream_connect_timeout_ms: default_connect_timeout_ms(),
            auth_timeout_ms: default_auth_timeout_ms(),
            max_client_connections: None,
            drain_timeout_ms: default_drain_timeout_ms(),
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

    /// The TLS mode in force: the configured one, else the default for the host.
    pub fn tls_mode(&self) -> UpstreamTlsMode {
        self.tls
            .unwrap_or_else(|| UpstreamTlsMode::default_for(&self.host))
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths are made relative to its folder.
    pub fn load(path: &Path) -> Result<Config, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::io(path, &e))?;
        let mut config = Config::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates config text; `origin` only names the file in errors.
    pub fn parse(origin: &Path, text: &str) -> Result<Config, SourceError> {
        let config: Config =
            toml::from_str(text).map_err(|e| SourceError::from_toml(origin, text, &e))?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<(), SourceError> {
        for (name, upstream) in &self.upstreams {
            if !matches!(SecretRef::parse(&upstream.password), SecretRef::Vault(_)) {
                return Err(SourceError::semantic(
                    origin,
                    format!("upstream \"{name}\": password must be a vault reference (\"vault:NAME\"), never the password itself"),
                ));
            }
            if upstream.ca_file.is_some() && upstream.tls_mode() == UpstreamTlsMode::Disable {
                return Err(SourceError::semantic(
                    origin,
                    format!("upstream \"{name}\": ca_file is set but TLS is disabled (set tls = \"verify-full\")"),
                ));
            }
            if upstream.search_path.is_empty() {
                return Err(SourceError::semantic(
                    origin,
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
            return Err(SourceError::semantic(
                origin,
                format!("{what} needs a certificate: add [tls] with cert_file and key_file"),
            ));
        }
        if (self.listen.redis.is_some() || self.listen.redis_tls.is_some()) && redis_upstreams != 1
        {
            return Err(SourceError::semantic(
                origin,
                format!("listen.redis serves exactly one upstream of kind \"redis\"; {redis_upstreams} are configured"),
            ));
        }
        let mongo_upstreams = self
            .upstreams
            .values()
            .filter(|u| u.kind == UpstreamKind::Mongodb)
            .count();
        if (self.listen.mongodb.is_some() || self.listen.mongodb_tls.is_some())
            && mongo_upstreams != 1
        {
            return Err(SourceError::semantic(
                origin,
                format!("listen.mongodb serves exactly one upstream of kind \"mongodb\"; {mongo_upstreams} are configured"),
            ));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(SourceError::semantic(
                origin,
                "limits.max_message_bytes must be at least 1024".to_string(),
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
        join(&mut self.audit.file);
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
