//! `tollgate demo`: a throwaway PostgreSQL, redis-server and MongoDB-wire server with the shop
//! data, example agents and policies, and the gateway in front, all on random loopback ports;
//! removed again on SIGINT/SIGTERM.
//! The test harness starts the same thing in-process.

pub mod cluster;
pub mod files;
pub mod mongo_seed;
pub mod mongo_server;
pub mod redis_server;
pub mod scratch;
pub mod seed;

use std::path::{Path, PathBuf};

use tracing::info;

use crate::auth::{generate_token, AgentsFile};
use crate::config::Config;
use crate::gateway::{self, Running};
use crate::vault::{MasterKey, Vault};
use cluster::{ClusterOptions, ClusterTls, PgCluster};
use seed::{seed_shop, SeedOptions};

/// The demo agents and their tokens.
pub const AGENTS: [&str; 3] = ["analyst", "writer", "trusted"];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Cluster(#[from] cluster::ClusterError),
    #[error("{0}")]
    Seed(#[from] seed::SeedError),
    #[error("demo files: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Gateway(#[from] gateway::GatewayError),
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Redis(#[from] redis_server::RedisServerError),
    #[error("{0}")]
    Mongo(#[from] mongo_server::MongoServerError),
}

/// Connection details of a running demo, as written to the env file.
#[derive(Debug, Clone)]
pub struct DemoEnv {
    pub pg_port: u16,
    pub tokens: Vec<(String, String)>,
    pub upstream_pg_url: String,
    pub redis_port: u16,
    /// The Redis listener that speaks TLS.
    pub redis_tls_port: u16,
    /// The development CA that signed the gateway's certificate.
    pub ca_file: PathBuf,
    pub upstream_redis_url: String,
    /// The MongoDB listeners (plain and TLS) and the upstream MongoDB-wire server's own URL.
    pub mongo_port: u16,
    pub mongo_tls_port: u16,
    pub upstream_mongo_url: String,
    pub audit_log: PathBuf,
    pub dir: PathBuf,
    pub admin_port: u16,
    /// Admin API tokens: role `admin`, and role `viewer`.
    pub admin_token: String,
    /// The MCP listener (HTTP and HTTPS on one port).
    pub mcp_port: u16,
    pub admin_viewer_token: String,
}

impl DemoEnv {
    pub fn token(&self, agent: &str) -> &str {
        self.tokens
            .iter()
            .find(|(a, _)| a == agent)
            .map(|(_, t)| t.as_str())
            .unwrap_or("")
    }

    pub fn pg_url(&self, agent: &str) -> String {
        format!(
            "postgresql://{agent}:{}@127.0.0.1:{}/shop?sslmode=disable",
            self.token(agent),
            self.pg_port
        )
    }

    /// The agent's URL over TLS, the certificate checked against the demo's CA.
    pub fn pg_tls_url(&self, agent: &str) -> String {
        format!(
            "postgresql://{agent}:{}@127.0.0.1:{}/shop?sslmode=verify-full&sslrootcert={}",
            self.token(agent),
            self.pg_port,
            self.ca_file.display()
        )
    }

    /// The same as a libpq keyword/value string (what the demo prints).
    pub fn pg_tls_conninfo(&self, agent: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=shop user={agent} password={} sslmode=verify-full sslrootcert={}",
            self.pg_port,
            self.token(agent),
            self.ca_file.display()
        )
    }

    pub fn redis_tls_url(&self, agent: &str) -> String {
        format!(
            "rediss://{agent}:{}@127.0.0.1:{}",
            self.token(agent),
            self.redis_tls_port
        )
    }

    pub fn redis_url(&self, agent: &str) -> String {
        format!(
            "redis://{agent}:{}@127.0.0.1:{}",
            self.token(agent),
            self.redis_port
        )
    }

    /// The agent's MongoDB URL through the gateway, database `shop`.
    pub fn mongo_url(&self, agent: &str) -> String {
        format!(
            "mongodb://{agent}:{}@127.0.0.1:{}/shop?authMechanism=SCRAM-SHA-256&directConnection=true",
            self.token(agent),
            self.mongo_port
        )
    }

    /// The same over TLS, the certificate checked against the demo's CA.
    pub fn mongo_tls_url(&self, agent: &str) -> String {
        format!(
            "mongodb://{agent}:{}@127.0.0.1:{}/shop?authMechanism=SCRAM-SHA-256&directConnection=true&tls=true&tlsCAFile={}",
            self.token(agent),
            self.mongo_tls_port,
            self.ca_file.display()
        )
    }

    /// The MCP endpoint (Streamable HTTP).
    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.mcp_port, crate::mcp::PATH)
    }

    /// The MCP endpoint over TLS (the certificate is for localhost and 127.0.0.1).
    pub fn mcp_tls_url(&self) -> String {
        format!("https://localhost:{}{}", self.mcp_port, crate::mcp::PATH)
    }

    /// What an MCP client sends as `Authorization: Bearer ...` for `agent`.
    pub fn mcp_token(&self, agent: &str) -> String {
        format!("{agent}:{}", self.token(agent))
    }

    /// Base URL of the admin API, e.g. `http://127.0.0.1:PORT`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// `KEY=VALUE` lines; a value with characters a shell would read (`&` in URLs) is
    /// single-quoted, so `set -a; . FILE` exports it whole.
    pub fn env_lines(&self) -> String {
        self.raw_env_lines()
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !shell_safe(v) => format!("{k}='{}'\n", v.replace('\'', "'\\''")),
                _ => format!("{l}\n"),
            })
            .collect()
    }

    fn raw_env_lines(&self) -> String {
        let mut s = String::new();
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_PG_{}_URL={}\n",
                agent.to_uppercase(),
                self.pg_url(agent)
            ));
        }
        s.push_str(&format!(
            "TOLLGATE_UPSTREAM_PG_URL={}\n",
            self.upstream_pg_url
        ));
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_REDIS_{}_URL={}\n",
                agent.to_uppercase(),
                self.redis_url(agent)
            ));
        }
        s.push_str(&format!(
            "TOLLGATE_UPSTREAM_REDIS_URL={}\n",
            self.upstream_redis_url
        ));
        s.push_str(&format!(
            "TOLLGATE_AUDIT_LOG={}\n",
            self.audit_log.display()
        ));
        s.push_str(&format!("TOLLGATE_ADMIN_URL={}\n", self.admin_url()));
        s.push_str(&format!("TOLLGATE_ADMIN_TOKEN={}\n", self.admin_token));
        s.push_str(&format!(
            "TOLLGATE_ADMIN_VIEWER_TOKEN={}\n",
            self.admin_viewer_token
        ));
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_PG_{}_TLS_URL={}\n",
                agent.to_uppercase(),
                self.pg_tls_url(agent)
            ));
        }
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_REDIS_{}_TLS_URL={}\n",
                agent.to_uppercase(),
                self.redis_tls_url(agent)
            ));
        }
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_MONGO_{}_URL={}\n",
                agent.to_uppercase(),
                self.mongo_url(agent)
            ));
        }
        s.push_str(&format!(
            "TOLLGATE_UPSTREAM_MONGO_URL={}\n",
            self.upstream_mongo_url
        ));
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_MONGO_{}_TLS_URL={}\n",
                agent.to_uppercase(),
                self.mongo_tls_url(agent)
            ));
        }
        s.push_str(&format!("TOLLGATE_CA_FILE={}\n", self.ca_file.display()));
        s.push_str(&format!("TOLLGATE_MCP_URL={}\n", self.mcp_url()));
        s.push_str(&format!("TOLLGATE_MCP_TLS_URL={}\n", self.mcp_tls_url()));
        for agent in AGENTS {
            s.push_str(&format!(
                "TOLLGATE_MCP_{}_TOKEN={}\n",
                agent.to_uppercase(),
                self.mcp_token(agent)
            ));
        }
        s
    }
}

/// Whether a shell reads `value` as one word, unquoted.
fn shell_safe(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/@%+=,".contains(c))
}

/// A running demo. Dropping it stops the gateway and the cluster and removes the files.
pub struct Demo {
    pub env: DemoEnv,
    pub running: Running,
    pub cluster: PgCluster,
    /// Shared so tests can restart it behind the gateway's back.
    pub redis: std::sync::Arc<tokio::sync::Mutex<redis_server::RedisServer>>,
    /// The MongoDB-wire server (SecantusDB, a separate process).
    pub mongo: mongo_server::MongoServer,
    /// `[limits] drain_timeout_ms` of the demo's config: how long `run_cli` drains at a signal.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    pub seed: SeedOptions,
    /// Lift the analyst's statement rate (test suites run thousands of statements as analyst);
    /// every other limit stays as the demo contract says.
    pub unlimited_rate: bool,
    /// Start PostgreSQL with TLS only (`hostssl`) and have the gateway connect with
    /// `tls = "verify-full"` against the demo's CA (tests of upstream TLS).
    pub upstream_tls: bool,
    /// Rotate the audit log every N records (`[audit.rotate] max_records`).
    pub audit_rotate_records: Option<u64>,
}

/// The gateway stops first: its files (config, policies, certificates) are in the temporary
/// folder `env` removes, and a gateway still watching them warned that its reload failed.
impl Drop for Demo {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

impl Demo {
    pub async fn start(opts: DemoOptions) -> Result<Demo, DemoError> {
        // A development CA and server certificate (localhost, 127.0.0.1, ::1), made fresh for
        // this demo: the gateway presents it, and with `upstream_tls` PostgreSQL does too.
        let certs =
            crate::tls::dev::DevCerts::generate().map_err(|e| DemoError::Setup(e.to_string()))?;
        // PostgreSQL and the MongoDB-wire server start (and are seeded) side by side.
        let (cluster, mongo) = tokio::join!(
            PgCluster::start(ClusterOptions {
                tls: opts.upstream_tls.then(|| ClusterTls {
                    cert_pem: certs.server_cert_pem.clone(),
                    key_pem: certs.server_key_pem.clone(),
                }),
                ..ClusterOptions::default()
            }),
            mongo_server::MongoServer::start()
        );
        let (cluster, mongo) = (cluster?, mongo?);
        let redis = redis_server::RedisServer::start().await?;
        redis_server::seed(&redis, 200).await?;
        let role_password = generate_token();
        let mongo_seed = async {
            let mut conn = mongo.connect().await?;
            mongo_seed::seed_shop(&mut conn, &opts.seed)
                .await
                .map_err(mongo_server::MongoServerError::from)
        };
        let (pg_seeded, mongo_seeded) = tokio::join!(
            seed_shop(&cluster, &opts.seed, files::UPSTREAM_ROLE, &role_password),
            mongo_seed
        );
        pg_seeded?;
        mongo_seeded?;
        // The demo's files live inside the cluster's scratch directory, so they go with it even
        // when the process dies without cleaning up (the cluster's watchdog removes it).
        let dir = cluster.scratch_dir().join("tollgate");
        std::fs::create_dir(&dir)?;
        certs
            .write(&dir.join("tls"), false)
            .map_err(|e| DemoError::Setup(e.to_string()))?;
        let (tokens, admin_tokens) =
            write_files(&dir, cluster.port(), &role_password, &redis, &mongo, &opts)?;
        // Metrics for /metrics (idempotent: the test harness may start more than one demo).
        crate::telemetry::install_prometheus();
        let config = Config::load(&dir.join("tollgate.toml"))
            .map_err(|e| DemoError::Setup(e.to_string()))?;
        let audit_log = config.audit.file.clone();
        let drain_timeout_ms = config.limits.drain_timeout_ms;
        let running = gateway::start(config).await?;
        gateway::reload_on_file_change(
            running.gateway.clone(),
            std::time::Duration::from_millis(500),
            running.stopping(),
        );
        let pg_port = running.pg_addr.map(|a| a.port()).unwrap_or(0);
        let env = DemoEnv {
            pg_port,
            tokens,
            upstream_pg_url: cluster.superuser_url("shop"),
            redis_port: running.redis_addr.map(|a| a.port()).unwrap_or(0),
            redis_tls_port: running.redis_tls_addr.map(|a| a.port()).unwrap_or(0),
            ca_file: dir.join("tls").join("ca.crt"),
            upstream_redis_url: redis.url(),
            mongo_port: running.mongo_addr.map(|a| a.port()).unwrap_or(0),
            mongo_tls_port: running.mongo_tls_addr.map(|a| a.port()).unwrap_or(0),
            upstream_mongo_url: mongo.url(),
            audit_log,
            dir,
            admin_port: running.admin_addr.map(|a| a.port()).unwrap_or(0),
            admin_token: admin_tokens.0,
            mcp_port: running.mcp_addr.map(|a| a.port()).unwrap_or(0),
            admin_viewer_token: admin_tokens.1,
        };
        Ok(Demo {
            env,
            running,
            cluster,
            redis: std::sync::Arc::new(tokio::sync::Mutex::new(redis)),
            mongo,
            drain_timeout_ms,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.env.dir.join("tollgate.toml")
    }
}

/// Agents' tokens (name, token), and the admin API's (admin, viewer) tokens.
type DemoTokens = (Vec<(String, String)>, (String, String));

/// Writes config, key, vault, agents, admin tokens and policies into `dir`; returns the tokens.
fn write_files(
    dir: &Path,
    pg_port: u16,
    role_password: &str,
    redis: &redis_server::RedisServer,
    mongo: &mongo_server::MongoServer,
    opts: &DemoOptions,
) -> Result<DemoTokens, DemoError> {
    let key_file = dir.join("master.key");
    MasterKey::generate()
        .write_new_file(&key_file)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let key = MasterKey::load(Some(&key_file)).map_err(|e| DemoError::Setup(e.to_string()))?;
    let mut vault =
        Vault::open(&dir.join("vault.json"), key).map_err(|e| DemoError::Setup(e.to_string()))?;
    vault
        .set("shop_user", files::UPSTREAM_ROLE)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    vault
        .set("shop_password", role_password)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    vault
        .set("cache_password", redis.password())
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    vault
        .set("mongo_user", mongo_server::UPSTREAM_USER)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    vault
        .set("mongo_password", mongo.password())
        .map_err(|e| DemoError::Setup(e.to_string()))?;

    let mut agents = AgentsFile::default();
    let mut tokens = Vec::new();
    for name in AGENTS {
        let token = generate_token();
        agents.add(name, &token, vec![]).map_err(DemoError::Setup)?;
        tokens.push((name.to_string(), token));
    }
    agents.save(&dir.join("agents.toml"))?;
    let mut admin = crate::admin::tokens::TokensFile::default();
    let admin_token = crate::admin::tokens::generate_admin_token();
    let viewer_token = crate::admin::tokens::generate_admin_token();
    use crate::admin::tokens::Role;
    admin
        .add("demo-admin", Role::Admin, &admin_token)
        .map_err(DemoError::Setup)?;
    admin
        .add("demo-viewer", Role::Viewer, &viewer_token)
        .map_err(DemoError::Setup)?;
    admin.save(&dir.join("admin_tokens.toml"))?;
    std::fs::create_dir_all(dir.join("policies"))?;
    for (name, text) in files::POLICIES {
        let text = if opts.unlimited_rate {
            text.replace(
                "statements_per_minute = 600",
                "statements_per_minute = 100000000",
            )
        } else {
            text.to_owned()
        };
        std::fs::write(dir.join("policies").join(name), text)?;
    }
    std::fs::write(
        dir.join("tollgate.toml"),
        files::config(
            pg_port,
            redis.port(),
            mongo.port(),
            opts.upstream_tls,
            opts.audit_rotate_records,
        ),
    )?;
    Ok((tokens, (admin_token, viewer_token)))
}

/// `tollgate demo`: start, print how to connect, write the env file, wait for a signal, clean up.
pub fn run_cli(
    env_file: Option<PathBuf>,
    unlimited_rate: bool,
    audit_rotate_records: Option<u64>,
) -> Result<i32, String> {
    // The runtime the demo's gateway runs on, as `serve` builds it from a default config.
    let rt = crate::config::RuntimeConfig::default()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // Caught from the start: a Ctrl-C while the servers start stops the demo cleanly once
        // they have (its drop stops them), instead of leaving them running.
        let mut termination = crate::cli::Termination::install().map_err(|e| e.to_string())?;
        // SIGHUP reloads, as under `serve` (its default action killed the demo outright, with no
        // drain: a closed terminal sends it).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| e.to_string())?;
        eprintln!(
            "starting PostgreSQL, redis-server and the MongoDB-wire server and seeding them..."
        );
        let demo = Demo::start(DemoOptions {
            unlimited_rate,
            audit_rotate_records,
            ..DemoOptions::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        crate::gateway::reload_on_sighup(demo.running.gateway.clone(), hup);
        let env = &demo.env;
        println!("tollgate demo is running (Ctrl-C to stop and remove everything).\n");
        for agent in AGENTS {
            println!("  psql \"{}\"", env.pg_url(agent));
        }
        println!();
        for agent in AGENTS {
            println!("  redis-cli -u {}", env.redis_url(agent));
        }
        println!();
        for agent in AGENTS {
            println!("  mongosh \"{}\"", env.mongo_url(agent));
        }
        println!("\n  over TLS (certificate checked against the demo's development CA):");
        println!("  psql \"{}\"", env.pg_tls_conninfo("analyst"));
        println!(
            "  redis-cli --tls --cacert {} -u {}",
            env.ca_file.display(),
            env.redis_tls_url("analyst")
        );
        println!("  mongosh \"{}\"", env.mongo_tls_url("analyst"));
        println!(
            "\n  upstream (direct, superuser): psql \"{}\"",
            env.upstream_pg_url
        );
        println!(
            "  upstream Redis (direct): redis-cli -u {}",
            env.upstream_redis_url
        );
        println!(
            "  upstream MongoDB (direct): mongosh \"{}\"",
            env.upstream_mongo_url
        );
        println!(
            "\n  admin API: curl -H \"Authorization: Bearer {}\" {}/api/v1/connectors",
            env.admin_token,
            env.admin_url()
        );
        println!(
            "  metrics:   curl -H \"Authorization: Bearer {}\" {}/metrics",
            env.admin_viewer_token,
            env.admin_url()
        );
        println!(
            "\n  MCP:       {}  (Authorization: Bearer {})",
            env.mcp_url(),
            env.mcp_token("analyst")
        );
        println!("  audit log: {}", env.audit_log.display());
        println!("  config:    {}", demo.config_path().display());
        if let Some(path) = &env_file {
            write_env_file(path, &env.env_lines())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("  env file:  {}", path.display());
        }
        termination.wait().await;
        // As `serve` does: sessions are told and statements finish (up to the drain timeout)
        // before the upstreams stop under them (they got PostgreSQL's 57P01 mid-statement).
        info!("stopping the demo: draining sessions first");
        let drain = std::time::Duration::from_millis(demo.drain_timeout_ms);
        let forced = demo.running.drain_or_hurry(drain, termination.wait()).await;
        info!(closed_at_deadline = forced, "stopping the demo's servers");
        drop(demo);
        Ok(0)
    })
}

fn write_env_file(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
