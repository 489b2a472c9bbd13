//! The operator commands behind the CLI. Each returns an exit code or an error message.

use std::io::Read;
use std::path::Path;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::VaultCommand;
use crate::auth::{generate_token, AgentsFile};
use crate::config::Config;
use crate::gateway::{self, load_policies};
use crate::policy::{sql, Engine, SessionFacts};
use crate::vault::{FileLock, MasterKey, Vault};

type CmdResult = Result<i32, String>;

fn load_config(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

pub fn serve(config_path: &Path) -> CmdResult {
    let config = load_config(config_path)?;
    let drain = std::time::Duration::from_millis(config.limits.drain_timeout_ms);
    crate::telemetry::install_prometheus();
    let rt = config.runtime.build().map_err(|e| e.to_string())?;
    let code = rt.block_on(async {
        // Listened for before any listener accepts: the doors start one by one (each waits up
        // to its connect timeout for an upstream that does not answer) while the first already
        // serves, and a signal then took its default action (killed mid-statement, no drain,
        // no audit flush; a live review).
        let mut termination = Termination::install().map_err(|e| e.to_string())?;
        let hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let running = gateway::start(config).await.map_err(|e| e.to_string())?;
        gateway::reload_on_sighup(running.gateway.clone(), hup);
        gateway::reload_on_file_change(
            running.gateway.clone(),
            std::time::Duration::from_secs(2),
            running.stopping(),
        );
        termination.wait().await;
        let forced = running.drain_or_hurry(drain, termination.wait()).await;
        tracing::info!(closed_at_deadline = forced, "shut down");
        Ok(0)
    });
    // Dropping a runtime waits for every blocking-pool task without limit: one stuck on a file
    // (a hung network filesystem under a reload, the audit maintenance) would keep the process,
    // and every socket it still holds, alive after the drain. The drain is over: bounded.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// How long the exit waits for blocking work still running once the drain is over.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGTERM and SIGINT, caught from the moment this is made (not the default action, which
/// ends the process at once); `wait` resolves on the first of them that arrives.
pub struct Termination {
    term: Signal,
    int: Signal,
}

impl Termination {
    pub fn install() -> std::io::Result<Termination> {
        Ok(Termination {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT (call again for the one after).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

pub fn check(config_path: &Path) -> CmdResult {
    let config = load_config(config_path)?;
    let (agents, set) = load_policies(&config).map_err(|e| e.to_string())?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    if agents.names().next().is_none() {
        let why = match config.agents_file.exists() {
            true => "names no agent",
            false => "does not exist",
        };
        eprintln!(
            "warning: {}: {why}: no agent can log in (add one with `tollgate agent add NAME`)",
            config.agents_file.display()
        );
    }
    // The admin tokens file, as `serve` loads it (a bad role passed `check`, then `serve` failed).
    crate::admin::tokens::AdminTokens::load(&config.admin.tokens_file)
        .map_err(|e| e.to_string())?;
    // The certificate, and each upstream's TLS trust anchors, as `serve` will load them.
    if let Some(t) = &config.tls {
        crate::tls::ServerTls::load(&t.cert_file, &t.key_file).map_err(|e| e.to_string())?;
    }
    for (name, u) in &config.upstreams {
        crate::doors::upstream_tls(name, u).map_err(|e| e.to_string())?;
    }
    // The master key, the vault and every upstream's credentials, as `serve` resolves them: a
    // config that names a secret the vault lacks passed `check` and then failed to start. With
    // no master key given at all (checking policies where the secrets are not), said and skipped.
    let keyless =
        config.vault.key_file.is_none() && std::env::var_os(crate::vault::MASTER_KEY_ENV).is_none();
    if keyless {
        eprintln!(
            "note: upstream credentials not checked: no master key ({} or vault.key_file)",
            crate::vault::MASTER_KEY_ENV
        );
    } else {
        let key = MasterKey::load(config.vault.key_file.as_deref()).map_err(|e| e.to_string())?;
        if let Some(w) = MasterKey::loose_permissions(config.vault.key_file.as_deref()) {
            eprintln!("warning: {w}");
        }
        let vault = Vault::open(&config.vault.file, key).map_err(|e| e.to_string())?;
        missing_secrets(&config, &vault)?;
        crate::doors::build(&config, &vault).map_err(|e| e.to_string())?;
    }
    say!(
        "ok: {} upstream(s), {} agent(s), {} policy file(s)",
        config.upstreams.len(),
        agents.names().count(),
        set.files.len()
    );
    Ok(0)
}

/// The config's vault references to secrets the vault lacks, each at its key's place in the
/// config (`serve` fails on them too, without the place).
fn missing_secrets(config: &Config, vault: &Vault) -> Result<(), String> {
    use crate::config::SecretRef;
    let mut refs: Vec<(Vec<&str>, &str)> = Vec::new();
    for (name, u) in &config.upstreams {
        refs.push((vec!["upstream", name, "user"], &u.user));
        refs.push((vec!["upstream", name, "password"], &u.password));
    }
    if let Some(w) = &config.audit.webhook {
        refs.push((vec!["audit", "webhook", "secret"], &w.secret));
    }
    for (path, value) in refs {
        if let SecretRef::Vault(secret) = SecretRef::parse(value) {
            if let Err(e) = vault.get(&secret) {
                return Err(config.error_at(&path, e.to_string()).to_string());
            }
        }
    }
    Ok(())
}

pub fn explain(
    config_path: &Path,
    agent: &str,
    upstream: Option<&str>,
    mcp: bool,
    statement: &str,
) -> CmdResult {
    let config = load_config(config_path)?;
    // `-`: the statement comes on stdin (one over the argument list's size, or any at all
    // without quoting it for the shell).
    let read;
    let statement = if statement == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the statement from stdin: {e}"))?;
        read = text;
        read.as_str()
    } else {
        statement
    };
    let upstream = match upstream {
        Some(u) => u.to_string(),
        None if config.upstreams.len() == 1 => {
            config.upstreams.keys().next().cloned().unwrap_or_default()
        }
        // A JSON command is meant for the one MongoDB upstream.
        None if statement.trim_start().starts_with('{')
            && config
                .upstreams
                .values()
                .filter(|u| u.kind == crate::config::UpstreamKind::Mongodb)
                .count()
                == 1 =>
        {
            config
                .upstreams
                .iter()
                .find(|(_, u)| u.kind == crate::config::UpstreamKind::Mongodb)
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        }
        // With one PostgreSQL upstream and others (Redis), SQL is meant for the PostgreSQL one.
        None if config
            .upstreams
            .values()
            .filter(|u| u.kind == crate::config::UpstreamKind::Postgres)
            .count()
            == 1 =>
        {
            config
                .upstreams
                .iter()
                .find(|(_, u)| u.kind == crate::config::UpstreamKind::Postgres)
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        }
        None => return Err("several upstreams are configured: name one with --upstream".into()),
    };
    // A name typed wrong is an error, not a policy's refusal (it read as default-deny).
    if !config.upstreams.contains_key(&upstream) {
        let names: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        return Err(format!(
            "no upstream named \"{upstream}\" in {} (upstreams: {})",
            config_path.display(),
            names.join(", ")
        ));
    }
    let (agents, set) = load_policies(&config).map_err(|e| e.to_string())?;
    if !agents.names().any(|n| n == agent) {
        return Err(format!(
            "no agent named \"{agent}\" in {}",
            config.agents_file.display()
        ));
    }
    let engine = Engine::new(set);
    let schema_note = load_explain_schema(&config, &engine, &upstream);
    say!("agent:     {agent}");
    say!("upstream:  {upstream}");
    if let Err(d) = engine.may_connect(agent, &upstream) {
        say!("decision:  blocked (connection)");
        say!("rule:      {}", d.rule);
        say!("reason:    {}", d.reason);
        return Ok(0);
    }
    if let Some(tls) = engine.tls_requirement(agent) {
        let how = if tls.enforced {
            "a connection without TLS is refused"
        } else {
            "shadow: a connection without TLS is recorded as would_block"
        };
        say!("tls:       required ({how}; rule: {})", tls.rule);
    }
    if config.upstreams.get(&upstream).map(|u| u.kind) == Some(crate::config::UpstreamKind::Mongodb)
    {
        let login_db = config.upstreams[&upstream]
            .database
            .clone()
            .unwrap_or_else(|| "admin".into());
        return super::mongo_explain::explain(&engine, agent, &upstream, &login_db, statement);
    }
    if config.upstreams.get(&upstream).map(|u| u.kind) == Some(crate::config::UpstreamKind::Redis) {
        return super::redis_explain::explain(&config, &engine, agent, &upstream, statement);
    }
    match sql::analyze(statement) {
        Ok(a) => {
            for (i, s) in a.statements.iter().enumerate() {
                say!("statement {}: {:?}", i + 1, s.kind);
                for r in &s.relations {
                    let name = r
                        .schema
                        .as_ref()
                        .map(|s| format!("{s}.{}", r.name))
                        .unwrap_or_else(|| r.name.clone());
                    say!("  relation  {name} ({:?})", r.op);
                }
                for f in &s.functions {
                    let name = f
                        .schema
                        .as_ref()
                        .map(|s| format!("{s}.{}", f.name))
                        .unwrap_or_else(|| f.name.clone());
                    say!("  function  {name}");
                }
            }
        }
        Err(e) => say!("analysis:  {e}"),
    }
    // Judged as a session of the agent's would be: on a transaction pool when its upstream
    // (or its policy) pools per transaction, with signal targets checked; through MCP, as
    // the query tool judges every call (a transaction-pooled session of its own).
    let policy = engine.agent_policy(agent);
    let mode = policy
        .as_ref()
        .and_then(|p| p.pool_mode(&upstream))
        .unwrap_or(config.upstreams[&upstream].pool().mode);
    let facts = match mcp {
        true => crate::mcp::sql::facts(),
        false => SessionFacts {
            pooled: mode == crate::config::PoolMode::Transaction,
            checks_signal_targets: true,
            ..SessionFacts::default()
        },
    };
    say!(
        "door:      {}",
        if mcp { "mcp (the query tool)" } else { "wire" }
    );
    let verdict = engine.check_sql(&agent.into(), &upstream.as_str().into(), statement, &facts);
    let no_limits = crate::policy::limits::Limits::default();
    let limits = policy.as_ref().map_or(&no_limits, |p| &p.limits);
    match crate::pg::statement::dry_run(statement, &verdict, limits, mcp) {
        Ok((decision, rule, reason)) => {
            let shown = match decision {
                crate::audit::Decision::WouldBlock => {
                    "would_block (shadow policy: the statement runs)"
                }
                d => d.as_str(),
            };
            say!("decision:  {shown}");
            if let Some(rule) = rule {
                say!("rule:      {rule}");
            }
            if let Some(reason) = reason {
                say!("reason:    {reason}");
            }
        }
        Err(r) => {
            say!("decision:  blocked");
            say!("rule:      {}", r.rule);
            say!("reason:    {}", r.reason);
            say!("sqlstate:  {}", r.class.sqlstate());
            if r.rule == crate::policy::decide::UNCHECKED_EXECUTE_RULE {
                say!("note:      in a session, EXECUTE of a statement it PREPAREd is judged as that statement: explain the PREPARE's query instead");
            }
        }
    }
    let signals = verdict
        .effects
        .iter()
        .any(|e| matches!(e, crate::policy::Effect::Signals(_)));
    if signals && verdict.runs() {
        say!("note:      pg_cancel_backend / pg_terminate_backend run only on the process of one of the agent's own sessions (checked when it runs; builtin: own-backend)");
    }
    match &verdict.rewrite {
        Some(plan) => {
            say!(
                "masking:   {} (rules: {})",
                plan.tables.join(", "),
                plan.rules.join(", ")
            );
            // The `hash` mask's key shown as a placeholder: no secrets in output.
            match engine.shown_rewrite(&verdict, statement) {
                Ok(text) => say!("rewritten: {text}"),
                Err(d) => say!("rewritten: (failed: {})", d.reason),
            }
        }
        None => say!("rewritten: (unchanged)"),
    }
    if let Some(note) = schema_note {
        say!("note:      {note}");
    }
    say_limits(&engine, agent);
    Ok(0)
}

/// The agent's limits, one line each (every door's explain ends with them).
pub(super) fn say_limits(engine: &Engine, agent: &str) {
    if let Some(p) = engine.agent_policy(agent) {
        for line in p.limits.describe() {
            say!("limit:     {line}");
        }
    }
}

/// Loads the upstream's table shapes when a policy masks or filters tables there (masking
/// subqueries are built from them). Returns a note when they could not be loaded.
fn load_explain_schema(config: &Config, engine: &Engine, upstream: &str) -> Option<String> {
    if !engine.protected_upstreams().iter().any(|u| u == upstream) {
        return None;
    }
    let load = || -> Result<(), String> {
        let key = MasterKey::load(config.vault.key_file.as_deref()).map_err(|e| e.to_string())?;
        engine.set_mask_key(crate::gateway::mask_hash_key(&key));
        let vault = Vault::open(&config.vault.file, key).map_err(|e| e.to_string())?;
        let doors = crate::doors::build(config, &vault).map_err(|e| e.to_string())?;
        let timeout = std::time::Duration::from_millis(config.limits.upstream_connect_timeout_ms);
        let load = doors
            .iter()
            .find(|d| d.serves(upstream))
            .and_then(|d| d.table_shapes(upstream, timeout))
            .ok_or("unknown upstream")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let snapshot = rt.block_on(load)?;
        engine.set_schema(upstream, snapshot);
        Ok(())
    };
    load().err().map(|e| {
        format!("masked tables' columns could not be loaded from the upstream ({e}); statements reading them show as refused")
    })
}

pub fn agent_add(config_path: &Path, name: &str, groups: Vec<String>) -> CmdResult {
    let config = load_config(config_path)?;
    let _lock = lock(&config.agents_file)?;
    let mut file = AgentsFile::load(&config.agents_file).map_err(|e| e.to_string())?;
    let token = generate_token();
    file.add(name, &token, groups)?;
    file.save(&config.agents_file)
        .map_err(|e| format!("{}: {e}", config.agents_file.display()))?;
    eprintln!(
        "agent \"{name}\" added to {}; its token is shown once:",
        config.agents_file.display()
    );
    say!("{token}");
    Ok(0)
}

pub fn agent_list(config_path: &Path) -> CmdResult {
    let config = load_config(config_path)?;
    let file = AgentsFile::load(&config.agents_file).map_err(|e| e.to_string())?;
    for a in &file.agents {
        say!("{}\t{}", a.name, a.groups.join(","));
    }
    Ok(0)
}

fn open_vault(config: &Config) -> Result<Vault, String> {
    let key = MasterKey::load(config.vault.key_file.as_deref()).map_err(|e| e.to_string())?;
    Vault::open(&config.vault.file, key).map_err(|e| e.to_string())
}

/// Held while a command reads a file, changes it and writes it back: concurrent commands lost
/// each other's changes (see [`FileLock`]).
fn lock(path: &Path) -> Result<FileLock, String> {
    FileLock::exclusive(path).map_err(|e| format!("{}: cannot lock: {e}", path.display()))
}

pub fn vault(config_path: &Path, command: VaultCommand) -> CmdResult {
    let config = load_config(config_path)?;
    // Only the commands that write the vault take turns: `get` and `list` read a file that is
    // only ever replaced whole, and work where the config directory is read-only.
    let _lock = match command {
        VaultCommand::Set { .. } | VaultCommand::RotateKey { .. } => {
            Some(lock(&config.vault.file)?)
        }
        VaultCommand::Get { .. } | VaultCommand::List => None,
    };
    let mut vault = open_vault(&config)?;
    match command {
        VaultCommand::Set { key } => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .map_err(|e| format!("reading the secret from stdin: {e}"))?;
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            if value.is_empty() {
                return Err("empty secret on standard input".into());
            }
            vault.set(&key, value).map_err(|e| e.to_string())?;
            eprintln!("stored \"{key}\" in {}", vault.path().display());
        }
        VaultCommand::Get { key } => {
            say!("{}", vault.get(&key).map_err(|e| e.to_string())?.expose())
        }
        VaultCommand::List => vault.list().iter().for_each(|k| say!("{k}")),
        VaultCommand::RotateKey { new_key_file } => {
            let new_key = MasterKey::generate();
            new_key
                .write_new_file(&new_key_file)
                .map_err(|e| e.to_string())?;
            vault.rotate_key(new_key).map_err(|e| e.to_string())?;
            eprintln!(
                "vault re-encrypted; the new key is in {}. A running gateway still holds the old key: move the new key file over the one vault.key_file names (or set TOLLGATE_MASTER_KEY to it) and send SIGHUP; the config itself is read only at start, so pointing vault.key_file elsewhere takes a restart",
                new_key_file.display()
            );
        }
    }
    Ok(0)
}

pub fn admin_token_add(config_path: &Path, name: &str, role: &str) -> CmdResult {
    use crate::admin::tokens::{generate_admin_token, Role, TokensFile};
    let config = load_config(config_path)?;
    let role = Role::parse(role).ok_or("--role must be viewer or admin")?;
    let path = &config.admin.tokens_file;
    let _lock = lock(path)?;
    let mut file = TokensFile::load(path).map_err(|e| e.to_string())?;
    let token = generate_admin_token();
    file.add(name, role, &token)?;
    file.save(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!(
        "admin token \"{name}\" ({}) added to {}; it is shown once (send it as Authorization: Bearer):",
        role.as_str(),
        path.display()
    );
    say!("{token}");
    Ok(0)
}

pub fn admin_token_list(config_path: &Path) -> CmdResult {
    let config = load_config(config_path)?;
    let file = crate::admin::tokens::TokensFile::load(&config.admin.tokens_file)
        .map_err(|e| e.to_string())?;
    for t in &file.tokens {
        say!("{}\t{}", t.name, t.role.as_str());
    }
    Ok(0)
}
