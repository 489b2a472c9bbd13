//! The command line: `serve`, `demo`, `check`, `explain`, `agent`, `vault`, `audit`,
//! `admin-token`, `certs`, `mcp-stdio`.

/// `println!` for the commands' output, which ends the process quietly when its reader has gone
/// (`tollgate explain ... | head`: `println!` panicked, exit 101) and with a message when
/// stdout cannot be written otherwise. (SIGPIPE's default action cannot be restored without
/// `unsafe`, which this crate forbids.)
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::cli::stdout_failed(e)
        }
    }};
}

/// Ends the process after a failed write to stdout: at once and silently when the reader left
/// (128 + SIGPIPE, as a shell reports a tool SIGPIPE ended), else saying why.
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("tollgate: stdout: {e}");
    std::process::exit(1)
}

mod admin_cmds;
mod audit_cmds;
mod mongo_explain;
mod redis_explain;

pub use admin_cmds::Termination;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about = "A database gateway for AI agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (PostgreSQL, Redis and admin listeners). SIGTERM/SIGINT drain, SIGHUP reloads.
    Serve {
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Throwaway PostgreSQL with seeded data, example agents and policies, gateway in front.
    Demo {
        /// Write KEY=VALUE connection lines here once everything accepts connections.
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Lift the analyst's statement rate (600/min in the demo contract) for test suites
        /// that run many statements as analyst; every other limit stays.
        #[arg(long)]
        unlimited_rate: bool,
        /// Rotate the audit log every N records (closed files: audit.log.<first seq>).
        #[arg(long, value_name = "N")]
        audit_rotate_records: Option<u64>,
    },
    /// Validate the config and the policies; exit 1 on error.
    Check {
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Dry run: the decision on a statement for an agent, and the rule behind it.
    Explain {
        #[arg(long)]
        agent: String,
        /// Upstream name (defaults to the only upstream, or the only PostgreSQL one; name a
        /// Redis upstream to explain a Redis command, a MongoDB upstream for a MongoDB command
        /// given as JSON with its `$db`).
        #[arg(long)]
        upstream: Option<String>,
        /// The door to judge SQL as coming through: `wire` (a PostgreSQL session, on the pool
        /// mode the agent gets) or `mcp` (the MCP `query` tool: one statement per call, judged
        /// as on a transaction pool).
        #[arg(long, default_value = "wire", value_parser = ["wire", "mcp"])]
        door: String,
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        statement: String,
    },
    /// Manage agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage vaulted secrets (values are read from standard input).
    Vault {
        /// Before or after the subcommand (`vault list --config C`, as `agent list` takes it).
        #[arg(
            long,
            default_value = "tollgate.toml",
            env = "TOLLGATE_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage admin API tokens.
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Certificates for TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Bridge for MCP clients that launch a local process: JSON-RPC on stdin/stdout, forwarded
    /// to the gateway's MCP endpoint with the agent's bearer.
    McpStdio {
        /// The MCP endpoint, e.g. http://127.0.0.1:7300/mcp (https:// checks the certificate).
        #[arg(long)]
        url: String,
        /// File holding AGENT:TOKEN (the value of TOLLGATE_MCP_<AGENT>_TOKEN).
        #[arg(long)]
        token_file: PathBuf,
        /// CA certificate(s) to trust for an https:// URL (default: the system's).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create an admin API token; prints it once and stores only a verifier.
    Add {
        name: String,
        /// `viewer` (read-only endpoints and /metrics) or `admin` (also reload and connector tests).
        #[arg(long, default_value = "viewer")]
        role: String,
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// List admin tokens (names and roles).
    List {
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development CA, a server certificate for localhost/127.0.0.1/::1 signed by it,
    /// and a client certificate (for development only; keys are written 0600).
    Dev {
        /// Folder to write ca.crt, ca.key, server.crt, server.key, client.crt, client.key into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent; prints its token once and stores only a SCRAM verifier.
    Add {
        name: String,
        /// Groups the agent joins (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// List agents and their groups.
    List {
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Store a secret read from standard input (one line, or everything until EOF).
    Set { key: String },
    /// Print a secret.
    Get { key: String },
    /// List secret names.
    List,
    /// Re-encrypt the vault under a new random key written to a new key file.
    RotateKey {
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain across rotated files; report the first problem. Exit 0 intact,
    /// 1 broken, 2 could not check.
    Verify {
        /// A folder (the log's active and closed files in it), or the files to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Check only the joins between files and the last records (see --last).
        #[arg(long)]
        quick: bool,
        /// With --quick: how many of the newest records to check.
        #[arg(long, default_value_t = 1000)]
        last: u64,
        /// Fail unless the chain starts at its first record ever (no file before the oldest one
        /// given, e.g. removed by retention).
        #[arg(long)]
        from_genesis: bool,
    },
    /// Show the last records (or all since a time) for people; --follow waits for new ones.
    Tail {
        /// The active log file or its folder (default: [audit] file of --config).
        path: Option<PathBuf>,
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// How many records (ignored with --since).
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: usize,
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        agent: Option<String>,
        /// allowed, masked, rewritten, blocked, would_block or error.
        #[arg(long)]
        decision: Option<String>,
        /// RFC 3339 time, e.g. 2026-12-05T10:00:00Z: every record from then on.
        #[arg(long)]
        since: Option<String>,
        /// Print records as JSON lines, as in the log (characters that would steer a terminal
        /// written as \u escapes: the same JSON).
        #[arg(long)]
        json: bool,
    },
    /// Print the chain head (last record's seq and hash), to anchor the chain elsewhere.
    Head {
        /// The active log file or its folder (default: [audit] file of --config).
        path: Option<PathBuf>,
        #[arg(long, default_value = "tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
}

fn audit(command: AuditCommand) -> Result<i32, String> {
    match command {
        AuditCommand::Verify {
            paths,
            quick,
            last,
            from_genesis,
        } => Ok(audit_cmds::verify_cmd(audit_cmds::VerifyArgs {
            paths,
            quick,
            last,
            from_genesis,
        })),
        AuditCommand::Tail {
            path,
            config,
            lines,
            follow,
            agent,
            decision,
            since,
            json,
        } => {
            if let Some(d) = &decision {
                if !crate::audit::DECISIONS.contains(&d.as_str()) {
                    return Err(format!(
                        "--decision: unknown decision \"{d}\" (known: {})",
                        crate::audit::DECISIONS.join(", ")
                    ));
                }
            }
            let since = since
                .map(|s| {
                    crate::audit::read::parse_time(&s).ok_or_else(|| {
                        format!(
                            "--since: \"{s}\" is not an RFC 3339 time, e.g. 2026-12-05T10:00:00Z"
                        )
                    })
                })
                .transpose()?;
            audit_cmds::tail_cmd(audit_cmds::TailArgs {
                path,
                config,
                lines,
                follow,
                filter: crate::audit::read::RecordFilter {
                    agent,
                    decision,
                    since,
                    before: None,
                },
                json,
            })
        }
        AuditCommand::Head { path, config } => audit_cmds::head_cmd(path.as_deref(), &config),
    }
}

fn certs_dev(out: &std::path::Path, force: bool) -> Result<i32, String> {
    let certs = crate::tls::dev::DevCerts::generate().map_err(|e| e.to_string())?;
    let written = certs.write(out, force).map_err(|e| e.to_string())?;
    for path in &written {
        say!("wrote {}", path.display());
    }
    let dir = out.display();
    say!(
        "\nDevelopment only: trust {dir}/ca.crt in clients, never in production.\n\
         In tollgate.toml:\n\n  [tls]\n  cert_file = \"{dir}/server.crt\"\n  key_file = \"{dir}/server.key\"\n\n\
         Then: psql \"host=127.0.0.1 port=6432 dbname=shop user=AGENT sslmode=verify-full sslrootcert={dir}/ca.crt\""
    );
    Ok(0)
}

fn mcp_stdio(
    url: &str,
    token_file: &std::path::Path,
    ca_file: Option<&std::path::Path>,
) -> Result<i32, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(crate::mcp::bridge::run(url, token_file, ca_file))
        .map_err(|e| e.to_string())?;
    Ok(0)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rmcp logs every stateless MCP request at info (three lines each): warnings only. Its
        // service loop (`rmcp::service`) also logs every error response at warn with the
        // request's own method, tool name and id, however large (an agent wrote 2 MB of log
        // with two requests): errors only there. tollgate logs and audits MCP calls itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,rmcp=warn,rmcp::service=error")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_logging();
    let result = match cli.command {
        Command::Serve { config } => admin_cmds::serve(&config),
        Command::Demo {
            env_file,
            unlimited_rate,
            audit_rotate_records,
        } => crate::demo::run_cli(env_file, unlimited_rate, audit_rotate_records),
        Command::Check { config } => admin_cmds::check(&config),
        Command::Explain {
            agent,
            upstream,
            door,
            config,
            statement,
        } => admin_cmds::explain(
            &config,
            &agent,
            upstream.as_deref(),
            door == "mcp",
            &statement,
        ),
        Command::Agent {
            command:
                AgentCommand::Add {
                    name,
                    groups,
                    config,
                },
        } => admin_cmds::agent_add(&config, &name, groups),
        Command::Agent {
            command: AgentCommand::List { config },
        } => admin_cmds::agent_list(&config),
        Command::Vault { config, command } => admin_cmds::vault(&config, command),
        Command::Audit { command } => audit(command),
        Command::AdminToken {
            command: AdminTokenCommand::Add { name, role, config },
        } => admin_cmds::admin_token_add(&config, &name, &role),
        Command::AdminToken {
            command: AdminTokenCommand::List { config },
        } => admin_cmds::admin_token_list(&config),
        Command::Certs {
            command: CertsCommand::Dev { out, force },
        } => certs_dev(&out, force),
        Command::McpStdio {
            url,
            token_file,
            ca_file,
        } => mcp_stdio(&url, &token_file, ca_file.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tollgate: {message}");
            1
        }
    }
}
