//! The demo's config and policy files, written into its temp folder.

/// The upstream login role the demo creates; its password lives only in the vault.
pub const UPSTREAM_ROLE: &str = "tollgate_shop";

/// The demo's `tollgate.toml`. With `upstream_tls`, the gateway reaches PostgreSQL over TLS,
/// checking its certificate against the demo's CA. The audit log rotates at 256 MiB keeping four
/// compressed files, or with `audit_rotate_records` every that many records.
pub fn config(
    pg_port: u16,
    redis_port: u16,
    mongo_port: u16,
    upstream_tls: bool,
    audit_rotate_records: Option<u64>,
) -> String {
    let shop_tls = if upstream_tls {
        "tls = \"verify-full\"\nca_file = \"tls/ca.crt\"\n"
    } else {
        ""
    };
    // Always bounded: an agent without a rate limit (trusted) once wrote 32 GB of records in
    // 15 minutes and filled the disk, and then nothing runs (a statement that cannot be
    // recorded is refused). At most the active file and four compressed ones are kept.
    let rotate = match audit_rotate_records {
        Some(n) => format!("\n[audit.rotate]\nmax_records = {n}\n"),
        None => "\n[audit.rotate]                  # the demo keeps at most ~1 GiB of records\nmax_bytes = 268435456\ncompress = true\nretain = 4\n".to_string(),
    };
    format!(
        r#"# tollgate demo configuration (generated)
agents_file = "agents.toml"
policies_dir = "policies"

[listen]
postgres = "127.0.0.1:0"        # plain and TLS (SSLRequest or direct TLS)
redis = "127.0.0.1:0"
redis_tls = "127.0.0.1:0"
mongodb = "127.0.0.1:0"
mongodb_tls = "127.0.0.1:0"
mcp = "127.0.0.1:0"             # MCP tools at /mcp (HTTP, or HTTPS with the certificate below)

[tls]                           # a development CA made by `tollgate certs dev`
cert_file = "tls/server.crt"
key_file = "tls/server.key"

[admin]
listen = "127.0.0.1:0"
tokens_file = "admin_tokens.toml"

[vault]
file = "vault.json"
key_file = "master.key"

[audit]
file = "audit.log"
{rotate}
[upstream.shop]
kind = "postgres"
description = "The shop: customers (with PII) and their orders"
host = "127.0.0.1"
port = {pg_port}
user = "vault:shop_user"
password = "vault:shop_password"
pool_mode = "transaction"        # analyst and writer share 10 server connections per transaction
pool_size = 10
{shop_tls}
[upstream.cache]
kind = "redis"
description = "The shop's cache: cached pages (cache:*) and web sessions (session:*)"
host = "127.0.0.1"
port = {redis_port}
user = "default"
password = "vault:cache_password"

[upstream.mongo]                # the MongoDB-wire test server (SecantusDB)
kind = "mongodb"
host = "127.0.0.1"
port = {mongo_port}
user = "vault:mongo_user"
password = "vault:mongo_password"
"#
    )
}

pub const ANALYST_POLICY: &str = r#"# analyst: read-only on customers and orders; PII masked; secrets unreadable (its definition
# shows in the catalog, as every table's does: `catalog = false` hides the catalog); no DDL or DML.
agents = ["analyst"]

[limits]
statements_per_minute = 600
max_rows = 1000
max_result_bytes = 262144         # MCP tool results: at most 256 KiB of row data
idle_in_transaction_timeout_ms = 60000  # a transaction left idle 60 s ends its session: it
                                  # holds one of the shop pool's shared connections

[[postgres]]
upstream = "shop"

[[postgres.table]]
name = "public.customers"
allow = ["select"]
mask = { email = "email", phone = "partial:4", ssn = "redact" }

[[postgres.table]]
name = "public.orders"
allow = ["select"]

[[redis]]
upstream = "cache"
commands = ["@read", "@pubsub"]
deny_commands = ["PUBLISH", "SPUBLISH"]  # read-only: it may listen on news.*, not send to it
read_keys = ["cache:*", "session:*"]
channels = ["news.*"]

[[redis.mask]]
keys = "session:*"
fields = ["email"]
strategy = "email"

[[mongo]]
upstream = "mongo"

[[mongo.collection]]
name = "shop.customers"
allow = ["read"]
mask = { email = "email", phone = "partial:4", ssn = "redact" }

[[mongo.collection]]
name = "shop.orders"
allow = ["read"]
"#;

pub const WRITER_POLICY: &str = r#"# writer: reads and writes orders (COPY included), reads customers.
agents = ["writer"]

[limits]
idle_in_transaction_timeout_ms = 60000  # a transaction left idle 60 s ends its session: it
                                  # holds one of the shop pool's shared connections

[[postgres]]
upstream = "shop"
statements = ["copy"]

[[postgres.table]]
name = "public.orders"
allow = ["select", "insert", "update", "delete"]

[[postgres.table]]
name = "public.customers"
allow = ["select"]
mask = { email = "email", phone = "partial:4", ssn = "redact" }

[[redis]]
upstream = "cache"
commands = ["@read", "@write", "@keyspace"]
read_keys = ["cache:*"]
write_keys = ["cache:*"]

[[mongo]]
upstream = "mongo"

[[mongo.collection]]
name = "shop.orders"
allow = ["read", "write"]
"#;

pub const TRUSTED_POLICY: &str = r#"# trusted: passthrough - everything the upstream role may do, still authenticated and audited.
agents = ["trusted"]

[limits]
idle_in_transaction_timeout_ms = 300000  # a transaction left idle 5 minutes ends its session:
                                  # the locks it holds (LOCK TABLE, a row it updated) keep
                                  # the other agents waiting

[[postgres]]
upstream = "shop"
profile = "passthrough"
pool_mode = "session"            # a server connection per session, as the application expects

[[redis]]
upstream = "cache"
profile = "passthrough"

[[mongo]]
upstream = "mongo"
profile = "passthrough"
"#;

pub const POLICIES: [(&str, &str); 3] = [
    ("analyst.toml", ANALYST_POLICY),
    ("writer.toml", WRITER_POLICY),
    ("trusted.toml", TRUSTED_POLICY),
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_audit_log_is_bounded() {
        let text = super::config(5432, 6379, 27017, false, None);
        let config = crate::config::Config::parse(std::path::Path::new("tollgate.toml"), &text)
            .expect("the demo config parses");
        let rotate = &config.audit.rotate;
        assert_eq!(rotate.max_bytes, Some(256 << 20));
        assert_eq!(rotate.retain, Some(4));
        assert!(rotate.compress);
    }

    /// The agents on the shop's shared transaction pool cannot keep one of its connections by
    /// leaving a transaction open; `trusted` (a server connection of its own) is not cut.
    #[test]
    fn demo_transactions_left_idle_end() {
        use crate::auth::{AgentStore, AgentsFile};
        use crate::config::UpstreamKind;
        use crate::policy::{PolicyContext, PolicySet};
        let mut agents = AgentsFile::default();
        for name in ["analyst", "writer", "trusted"] {
            agents.add(name, &format!("tg_{name}"), vec![]).unwrap();
        }
        let store = AgentStore::from_file(std::path::Path::new("agents.toml"), agents).unwrap();
        let ctx = PolicyContext::for_upstreams(
            &store,
            [
                ("shop".into(), UpstreamKind::Postgres, vec!["public".into()]),
                ("cache".into(), UpstreamKind::Redis, vec![]),
                ("mongo".into(), UpstreamKind::Mongodb, vec![]),
            ],
        );
        let sources = super::POLICIES
            .iter()
            .map(|(name, text)| (std::path::PathBuf::from(name), text.to_string()))
            .collect();
        let set = crate::policy::Engine::new(
            PolicySet::from_sources(sources, &ctx).expect("the demo policies compile"),
        );
        let idle = |agent: &str| {
            set.agent_policy(agent)
                .unwrap()
                .limits
                .idle_in_transaction_timeout
                .as_ref()
                .map(|(d, _)| d.as_millis())
        };
        assert_eq!(idle("analyst"), Some(60_000));
        assert_eq!(idle("writer"), Some(60_000));
        // Passthrough, on a connection of its own, but its locks hold the others up.
        assert_eq!(idle("trusted"), Some(300_000));
    }
}
