//! A throwaway PostgreSQL cluster for `tollgate demo` and the test harness.
//!
//! [`PgCluster::start`] finds the PostgreSQL server binaries installed on the machine, runs
//! `initdb` into a fresh private directory under `/tmp`, and starts `postgres` itself (not
//! `pg_ctl`, so the server is our child process) listening only on `127.0.0.1` on a random
//! free port:
//!
//! * TCP connections (the only ones the gateway and tests make) use SCRAM-SHA-256 with the
//!   superuser `postgres` and a password that is handed to `initdb` in a 0600 file, never on
//!   a command line; `trust` applies only to the unix socket, which lives inside the 0700
//!   cluster directory.
//! * Durability is switched off (`fsync = off`) because the data is disposable.
//! * `initdb` and `postgres` refuse to run as root. When the current process is root, both
//!   are run as the unprivileged `postgres` system user (or `nobody` if there is none), by
//!   setting the child's uid/gid (the safe `std::os::unix::process::CommandExt` API; no
//!   `runuser`/`setpriv` needed); the cluster directory is created owned by that user.
//! * [`PgCluster::stop`] (also run on drop) shuts the server down fast and removes the
//!   directory. Because destructors do not run when the owning process is killed, a tiny
//!   `sh` watchdog process polls the owner's pid and, once the owner is gone, stops the
//!   server and removes the directory.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use tracing::{debug, info, warn};

use super::scratch;

/// The only address the cluster listens on and that clients connect to.
const HOST: &str = "127.0.0.1";
/// Name of the bootstrap superuser created by `initdb`.
const SUPERUSER: &str = "postgres";
/// Environment variable that overrides the binary search with an explicit directory.
const BINDIR_ENV: &str = "TOLLGATE_PG_BINDIR";
/// How long `start`/`restart` wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for a fast shutdown before resorting to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Number of server log lines quoted in startup errors.
const LOG_TAIL_LINES: usize = 40;
/// Attempts at finding a free port when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 8;
/// File (in the cluster directory) holding the postmaster pid, read by the watchdog.
const PID_FILE: &str = "postgres.pid";
/// File (in the cluster directory) receiving the server's stderr.
const LOG_FILE: &str = "postgres.log";

/// The watchdog: `$1` is the owner pid, `$2` the cluster directory. While the owner lives it
/// sleeps; afterwards it asks the postmaster (pid read from `$2/postgres.pid`, which is absent
/// while no server runs) for a fast shutdown, escalates to SIGKILL after 5 s, and removes the
/// directory. It ignores terminal signals so a Ctrl-C aimed at the owner does not end it.
/// A zombie counts as dead (an orphaned postmaster is reaped by whoever adopts it, which in
/// some containers is nobody).
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT
owner="$1"; dir="$2"
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/status" ]; then ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; fi
}
while alive "$owner"; do sleep 0.5; done
pg=$(cat "$dir/postgres.pid" 2>/dev/null)
if [ -n "$pg" ]; then
  kill -s INT "$pg" 2>/dev/null
  i=0
  while [ "$i" -lt 50 ] && alive "$pg"; do sleep 0.1; i=$((i+1)); done
  kill -s KILL "$pg" 2>/dev/null
fi
rm -rf "$dir"
"#;

/// Errors from starting or talking to the throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `initdb`/`postgres` could not be found; the message says what to install.
    #[error(
        "PostgreSQL server binaries (initdb and postgres) not found; looked in: {searched}. \
         Install the PostgreSQL server: on Debian/Ubuntu `apt-get install postgresql-15` \
         (or `postgresql`), on Fedora/RHEL `dnf install postgresql-server`, on Alpine \
         `apk add postgresql15`, on macOS `brew install postgresql@15`; or set {BINDIR_ENV} \
         to the directory that holds initdb and postgres"
    )]
    BinariesNotFound {
        /// Human-readable list of the places that were searched.
        searched: String,
    },
    /// A local file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The requested superuser password cannot be used.
    #[error("invalid superuser password: {0}")]
    InvalidPassword(&'static str),
    /// Running as root, but there is no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root, but neither a `postgres` nor a `nobody` user exists to run \
         PostgreSQL as (initdb and postgres refuse to run as root); create one, e.g. \
         `useradd --system postgres`, or run as an unprivileged user"
    )]
    NoUnprivilegedUser,
    /// `initdb` failed.
    #[error("initdb failed ({status}):\n{output}")]
    Initdb {
        /// Exit status of initdb.
        status: ExitStatus,
        /// Its combined stdout and stderr.
        output: String,
    },
    /// The server process exited before accepting connections.
    #[error("PostgreSQL exited during startup ({status}); server log tail:\n{log_tail}")]
    Exited {
        /// Exit status of the postmaster.
        status: ExitStatus,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server did not accept connections in time.
    #[error(
        "PostgreSQL did not accept connections on {HOST}:{port} within {} s \
         (last attempt: {last_error}); server log tail:\n{log_tail}",
        START_TIMEOUT.as_secs()
    )]
    StartTimeout {
        /// The port it should listen on.
        port: u16,
        /// The error of the last connection attempt.
        last_error: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// Connecting as the superuser failed.
    #[error("cannot connect to PostgreSQL on {HOST}:{port} as superuser: {}", pg_error_text(.source))]
    Connect {
        /// The port of the cluster.
        port: u16,
        /// The client error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The cluster was stopped and its directory removed.
    #[error("the PostgreSQL cluster has been stopped")]
    Stopped,
}

/// Renders a `tokio_postgres::Error` together with its cause (its `Display` alone only says
/// e.g. "db error"). Server messages never contain the passwords used here (SCRAM sends
/// proofs, not passwords).
pub(crate) fn pg_error_text(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// Options for [`PgCluster::start`].
#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// Password of the superuser `postgres`; a random one is generated when empty.
    pub superuser_password: String,
    /// Log every statement (`log_statement = 'all'`) to the server log.
    pub log_statements: bool,
    /// Serve TLS with this certificate and key (PEM): `ssl = on`, and every TCP login except
    /// the superuser's must use TLS (`hostssl`), so a plain-text client is refused.
    pub tls: Option<ClusterTls>,
}

/// The certificate a cluster started with TLS presents.
#[derive(Clone)]
pub struct ClusterTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("superuser_password", &"<redacted>")
            .field("log_statements", &self.log_statements)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Locations of the server binaries.
#[derive(Debug, Clone)]
struct PgBinaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    name: &'static str,
    uid: u32,
    gid: u32,
}

/// A running throwaway PostgreSQL cluster. Dropping it stops the server and removes its files.
pub struct PgCluster {
    /// Private 0700 directory holding the data directory, the unix socket, the log and the
    /// pid file; removed by `stop`.
    dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    password: String,
    binaries: PgBinaries,
    run_as: Option<RunAs>,
    /// The postmaster, while it runs.
    child: Option<Child>,
    /// The cleanup watchdog, until `stop`.
    watchdog: Option<Child>,
    /// Set once `stop` has removed the directory.
    stopped: bool,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("superuser_password", &"<redacted>")
            .field("pid", &self.pid())
            .field("run_as", &self.run_as.as_ref().map(|r| r.name))
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl PgCluster {
    /// Starts a fresh cluster: finds the binaries, runs `initdb`, starts `postgres` on a free
    /// port of 127.0.0.1 and waits (up to 30 s) until it accepts SCRAM logins over TCP.
    pub async fn start(opts: ClusterOptions) -> Result<PgCluster, ClusterError> {
        Self::start_watched(opts, std::process::id()).await
    }

    /// `start`, with the watchdog guarding `owner_pid` instead of the current process (tests
    /// use a short-lived stand-in owner).
    async fn start_watched(
        opts: ClusterOptions,
        owner_pid: u32,
    ) -> Result<PgCluster, ClusterError> {
        let password = if opts.superuser_password.is_empty() {
            scratch::random_password()
        } else {
            validate_password(&opts.superuser_password)?;
            opts.superuser_password
        };
        let binaries = find_binaries()?;
        debug!(initdb = %binaries.initdb.display(), postgres = %binaries.postgres.display(), "found PostgreSQL binaries");
        let run_as = if effective_uid() == Some(0) {
            let user = unprivileged_user()?;
            debug!(
                user = user.name,
                "running as root: PostgreSQL will run as an unprivileged user"
            );
            Some(user)
        } else {
            None
        };
        let dir = create_private_dir(run_as.as_ref())?;
        let data_dir = dir.join("data");
        // From here on the value owns the directory: any error below cleans it up on drop.
        let mut cluster = PgCluster {
            dir,
            data_dir,
            port: 0,
            password,
            binaries,
            run_as,
            child: None,
            watchdog: None,
            stopped: false,
        };
        cluster.watchdog = Some(spawn_watchdog(owner_pid, &cluster.dir)?);

        let init = InitDb {
            initdb: cluster.binaries.initdb.clone(),
            dir: cluster.dir.clone(),
            data_dir: cluster.data_dir.clone(),
            password: cluster.password.clone(),
            run_as: cluster.run_as.clone(),
            log_statements: opts.log_statements,
            tls: opts.tls.clone(),
        };
        let started = Instant::now();
        tokio::task::spawn_blocking(move || init.run())
            .await
            .map_err(|e| ClusterError::Io {
                context: "initdb task failed".into(),
                source: io::Error::other(e.to_string()),
            })??;
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "initdb done"
        );

        cluster.port = free_port()?;
        cluster.launch(true).await?;
        info!(
            port = cluster.port,
            dir = %cluster.dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "throwaway PostgreSQL cluster is up"
        );
        Ok(cluster)
    }

    /// TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host the server listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `postgresql://postgres:PW@127.0.0.1:PORT/DBNAME?sslmode=disable`, with the password
    /// and database name percent-encoded. Contains the password: do not log it.
    pub fn superuser_url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@{HOST}:{}/{}?sslmode=disable",
            percent_encode(&self.password),
            self.port,
            percent_encode(dbname)
        )
    }

    /// The superuser password.
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// A client configuration for the superuser over TCP (SCRAM, no TLS).
    pub fn superuser_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(HOST)
            .port(self.port)
            .user(SUPERUSER)
            .password(self.password.as_bytes())
            .dbname(dbname)
            .ssl_mode(SslMode::Disable)
            .application_name("tollgate-demo")
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// The cluster's private temp directory: whatever is put here is removed with the cluster
    /// (by `stop`, or by the watchdog when the owning process dies).
    pub fn scratch_dir(&self) -> &Path {
        &self.dir
    }

    /// The PostgreSQL data directory (inside the cluster's private temp directory).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log (stderr of `postgres`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Process id of the postmaster while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connects as the superuser over TCP; the connection task is spawned on the current
    /// tokio runtime and ends when the client is dropped.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, ClusterError> {
        if self.stopped {
            return Err(ClusterError::Stopped);
        }
        let (client, connection) =
            self.superuser_config(dbname)
                .connect(NoTls)
                .await
                .map_err(|source| ClusterError::Connect {
                    port: self.port,
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %pg_error_text(&e), "demo cluster connection ended with an error");
            }
        });
        Ok(client)
    }

    /// Stops the server (SIGINT = fast shutdown, SIGKILL after 15 s), ends the watchdog and
    /// removes the cluster directory. Idempotent; blocks while the server shuts down.
    pub fn stop(&mut self) {
        self.shutdown_server();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if !self.stopped {
            self.stopped = true;
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => debug!(dir = %self.dir.display(), "removed throwaway cluster directory"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e, "could not remove throwaway cluster directory")
                }
            }
        }
    }

    /// Kills the postmaster with SIGKILL, as a crash would: no shutdown, no cleanup (its
    /// backends notice and exit on their own). The files stay; see [`PgCluster::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(self.dir.join(PID_FILE));
            info!(port = self.port, "killed PostgreSQL with SIGKILL");
        }
    }

    /// Starts the server again on the same port and data directory (after [`PgCluster::kill`],
    /// or fast-stopping it first if it still runs) and waits until it accepts connections
    /// (crash recovery included).
    pub async fn restart(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Err(ClusterError::Stopped);
        }
        self.shutdown_server();
        self.launch(false).await?;
        info!(port = self.port, "restarted PostgreSQL");
        Ok(())
    }

    /// Sends SIGINT (fast shutdown) to a running postmaster and reaps it.
    fn shutdown_server(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            send_signal("INT", child.id());
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        warn!(
                            port = self.port,
                            "PostgreSQL did not shut down in time; killing it"
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_file(self.dir.join(PID_FILE));
        debug!(port = self.port, "PostgreSQL stopped");
    }

    /// Spawns the postmaster and waits until it accepts connections. Transient start failures
    /// (port taken, previous instance's shared memory or lock file still around after a
    /// SIGKILL) are retried until the deadline; with `new_port_on_collision` a taken port is
    /// replaced by another free one.
    async fn launch(&mut self, new_port_on_collision: bool) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut port_attempts = 1;
        loop {
            let log_offset = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
            self.child = Some(self.spawn_postgres()?);
            let failure = match self.wait_ready(deadline).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            match failure {
                ReadyFailure::Exited(status) => {
                    let _ = fs::remove_file(self.dir.join(PID_FILE));
                    let attempt_log = read_from(&self.log_path(), log_offset);
                    if port_taken(&attempt_log)
                        && new_port_on_collision
                        && port_attempts < PORT_ATTEMPTS
                    {
                        port_attempts += 1;
                        let old = self.port;
                        self.port = free_port()?;
                        debug!(
                            old,
                            new = self.port,
                            "port was taken; retrying on another one"
                        );
                        continue;
                    }
                    if is_transient(&attempt_log) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    return Err(ClusterError::Exited {
                        status,
                        log_tail: log_tail(&self.log_path()),
                    });
                }
                ReadyFailure::Timeout(last_error) => {
                    self.shutdown_server();
                    return Err(ClusterError::StartTimeout {
                        port: self.port,
                        last_error,
                        log_tail: log_tail(&self.log_path()),
                    });
                }
                ReadyFailure::Fatal(error) => {
                    self.shutdown_server();
                    return Err(error);
                }
            }
        }
    }

    fn spawn_postgres(&self) -> Result<Child, ClusterError> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_err(format!(
                "cannot open server log {}",
                log_path.display()
            )))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("cannot duplicate the server log handle"))?;
        let mut cmd = Command::new(&self.binaries.postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        prepare_child(&mut cmd, &self.dir, self.run_as.as_ref());
        let child = cmd.spawn().map_err(io_err(format!(
            "cannot start {}",
            self.binaries.postgres.display()
        )))?;
        // Tell the watchdog which process to stop should we die without cleaning up.
        fs::write(self.dir.join(PID_FILE), format!("{}\n", child.id()))
            .map_err(io_err("cannot write the postmaster pid file"))?;
        Ok(child)
    }

    /// Polls with real SCRAM logins over TCP until one succeeds, the server exits, or the
    /// deadline passes.
    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), ReadyFailure> {
        let mut config = self.superuser_config("postgres");
        config.connect_timeout(Duration::from_secs(2));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ReadyFailure::Exited(status));
                }
            }
            match config.connect(NoTls).await {
                Ok((client, connection)) => {
                    drop(client);
                    let _ = connection.await;
                    return Ok(());
                }
                Err(e) => {
                    let code = e.as_db_error().map(|db| db.code().clone());
                    if code == Some(SqlState::INVALID_PASSWORD)
                        || code == Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
                    {
                        return Err(ReadyFailure::Fatal(ClusterError::Connect {
                            port: self.port,
                            source: e,
                        }));
                    }
                    if Instant::now() >= deadline {
                        return Err(ReadyFailure::Timeout(pg_error_text(&e)));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a freshly spawned postmaster did not become ready.
enum ReadyFailure {
    Exited(ExitStatus),
    Timeout(String),
    Fatal(ClusterError),
}

/// Everything `initdb` needs, so it can run on a blocking thread.
struct InitDb {
    initdb: PathBuf,
    dir: PathBuf,
    data_dir: PathBuf,
    password: String,
    run_as: Option<RunAs>,
    log_statements: bool,
    tls: Option<ClusterTls>,
}

impl InitDb {
    fn run(self) -> Result<(), ClusterError> {
        // The password reaches initdb through a 0600 file, never through argv.
        let pwfile = self.dir.join("pwfile");
        write_private_file(
            &pwfile,
            format!("{}\n", self.password).as_bytes(),
            self.run_as.as_ref(),
        )?;
        let mut cmd = Command::new(&self.initdb);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-U")
            .arg(SUPERUSER)
            .arg(OsString::from(format!("--pwfile={}", pwfile.display())))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null());
        prepare_child(&mut cmd, &self.dir, self.run_as.as_ref());
        let output = cmd.output();
        let _ = fs::remove_file(&pwfile);
        let output = output.map_err(io_err(format!("cannot run {}", self.initdb.display())))?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(ClusterError::Initdb {
                status: output.status,
                output: text,
            });
        }
        self.write_config()
    }

    /// `ssl = off`, or `ssl = on` with the certificate and key written next to the data dir.
    fn ssl_settings(&self) -> Result<String, ClusterError> {
        let Some(tls) = &self.tls else {
            return Ok("ssl = off\n".into());
        };
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        write_private_file(&cert, tls.cert_pem.as_bytes(), self.run_as.as_ref())?;
        write_private_file(&key, tls.key_pem.as_bytes(), self.run_as.as_ref())?;
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        Ok(format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            quote(&cert),
            quote(&key)
        ))
    }

    /// Appends our settings to `postgresql.conf` (later lines win) and replaces `pg_hba.conf`.
    /// Rewriting existing files keeps their owner, so no chown is needed when we are root.
    fn write_config(&self) -> Result<(), ClusterError> {
        let conf_path = self.data_dir.join("postgresql.conf");
        let settings = format!(
            "\n# --- tollgate throwaway demo cluster ---\n\
             listen_addresses = '{HOST}'\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\n\
             password_encryption = 'scram-sha-256'\n\
             {}\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             huge_pages = off\n\
             fsync = off\n\
             full_page_writes = off\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n\
             logging_collector = off\n\
             log_destination = 'stderr'\n\
             log_line_prefix = '%m [%p] '\n\
             log_statement = '{}'\n",
            self.dir.display().to_string().replace('\'', "''"),
            self.ssl_settings()?,
            if self.log_statements { "all" } else { "none" },
        );
        let mut conf = OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(io_err(format!("cannot open {}", conf_path.display())))?;
        conf.write_all(settings.as_bytes())
            .map_err(io_err(format!("cannot write {}", conf_path.display())))?;

        let hba_path = self.data_dir.join("pg_hba.conf");
        let hba = if self.tls.is_some() {
            "# tollgate throwaway cluster with TLS: trust only on the private unix socket,\n\
             # SCRAM-SHA-256 over TLS for TCP on 127.0.0.1 (the superuser may use plain TCP).\n\
             local     all all      trust\n\
             hostssl   all all      127.0.0.1/32 scram-sha-256\n\
             hostnossl all postgres 127.0.0.1/32 scram-sha-256\n"
        } else {
            "# tollgate throwaway demo cluster: trust only on the private unix socket,\n\
             # SCRAM-SHA-256 for TCP on 127.0.0.1, nothing else.\n\
             local all all trust\n\
             host  all all 127.0.0.1/32 scram-sha-256\n"
        };
        fs::write(&hba_path, hba).map_err(io_err(format!("cannot write {}", hba_path.display())))
    }
}

/// Common settings for `initdb` and `postgres`: our directory as cwd, a predictable C
/// locale (log parsing relies on English messages), no inherited `PG*` settings, a process
/// group of its own (a Ctrl-C at the terminal must not stop the server behind our back) and,
/// when we are root, the unprivileged uid/gid (std drops supplementary groups then too).
fn prepare_child(cmd: &mut Command, dir: &Path, run_as: Option<&RunAs>) {
    cmd.current_dir(dir)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env_remove("LANGUAGE")
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST")
        .env_remove("PGPASSWORD")
        .env_remove("PGOPTIONS")
        .process_group(0);
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
    }
}

fn validate_password(password: &str) -> Result<(), ClusterError> {
    if password.contains(['\n', '\r', '\0']) {
        return Err(ClusterError::InvalidPassword(
            "must not contain line breaks or NUL characters",
        ));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Finds a directory holding both `initdb` and `postgres`: `$TOLLGATE_PG_BINDIR`, then
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then `$PATH`.
fn find_binaries() -> Result<PgBinaries, ClusterError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut searched: Vec<String> = Vec::new();
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        candidates.push(PathBuf::from(dir));
        searched.push(format!("${BINDIR_ENV}"));
    }
    searched.push("`pg_config --bindir`".into());
    if let Some(dir) = pg_config_bindir() {
        candidates.push(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".into());
    candidates.extend(debian_bindirs(Path::new("/usr/lib/postgresql")));
    searched.push("$PATH".into());
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .iter()
        .find_map(|dir| binaries_in(dir))
        .ok_or_else(|| ClusterError::BinariesNotFound {
            searched: searched.join(", "),
        })
}

fn binaries_in(dir: &Path) -> Option<PgBinaries> {
    let initdb = dir.join("initdb");
    let postgres = dir.join("postgres");
    (is_executable(&initdb) && is_executable(&postgres)).then_some(PgBinaries { initdb, postgres })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `ROOT/<version>/bin` directories, newest version first (Debian/Ubuntu layout).
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// The effective uid, from `/proc/self/status` (Linux) or `id -u`.
fn effective_uid() -> Option<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // "Uid:	real	effective	saved	fs"
            return line.split_whitespace().nth(2)?.parse().ok();
        }
    }
    id_number(&["-u"])
}

fn id_number(args: &[&str]) -> Option<u32> {
    let output = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

/// The account to run PostgreSQL as when we are root: `postgres`, else `nobody`.
fn unprivileged_user() -> Result<RunAs, ClusterError> {
    for name in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id_number(&["-u", name]), id_number(&["-g", name])) {
            if uid != 0 {
                return Ok(RunAs { name, uid, gid });
            }
        }
    }
    Err(ClusterError::NoUnprivilegedUser)
}

/// Creates `/tmp/tollgate-pg-<pid>-<random>` with mode 0700, owned by `owner` if given.
fn create_private_dir(owner: Option<&RunAs>) -> Result<PathBuf, ClusterError> {
    let dir = scratch::private_dir("tollgate-pg").map_err(io_err(
        "cannot create a private directory under /tmp".to_string(),
    ))?;
    if let Some(user) = owner {
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)) {
            let _ = fs::remove_dir_all(&dir);
            return Err(io_err(format!("cannot prepare {}", dir.display()))(e));
        }
    }
    Ok(dir)
}

/// Writes a new 0600 file, owned by `owner` if given.
fn write_private_file(
    path: &Path,
    contents: &[u8],
    owner: Option<&RunAs>,
) -> Result<(), ClusterError> {
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents)?;
        if let Some(user) = owner {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))?;
        }
        Ok(())
    };
    write().map_err(io_err(format!("cannot write {}", path.display())))
}

/// Picks a currently free port on 127.0.0.1 by binding port 0.
fn free_port() -> Result<u16, ClusterError> {
    scratch::free_port().map_err(io_err("cannot find a free TCP port on 127.0.0.1"))
}

fn spawn_watchdog(owner_pid: u32, dir: &Path) -> Result<Child, ClusterError> {
    scratch::spawn_watchdog(WATCHDOG_SCRIPT, "tollgate-pg-watchdog", owner_pid, dir, &[])
        .map_err(io_err("cannot start the cleanup watchdog (/bin/sh)"))
}

/// Sends a signal by name through the shell's `kill` builtin (no `unsafe` needed).
fn send_signal(signal: &str, pid: u32) -> bool {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"kill -s "$1" "$2""#)
        .arg("sh")
        .arg(signal)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The server could not bind its port (someone else took it since we picked it).
fn port_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

/// Failures that go away by themselves shortly after a SIGKILL of the previous postmaster.
fn is_transient(log: &str) -> bool {
    port_taken(log)
        || log.contains("pre-existing shared memory block")
        || (log.contains("lock file") && log.contains("already exists"))
}

/// The part of a file after `offset` (lossily decoded).
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last lines of the server log.
fn log_tail(path: &Path) -> String {
    let text = read_from(path, 0);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    if lines.is_empty() {
        format!("(server log {} is empty)", path.display())
    } else {
        lines[start..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    fn process_alive(pid: u32) -> bool {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"kill -0 "$1" 2>/dev/null"#)
            .arg("sh")
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cond()
    }

    async fn count_one(client: &tokio_postgres::Client) -> i32 {
        client.query_one("SELECT 1", &[]).await.unwrap().get(0)
    }

    #[tokio::test]
    async fn lifecycle_scram_kill_restart_stop() {
        let starting = PgCluster::start(ClusterOptions {
            superuser_password: "s3cret 'pw'/@:x".into(),
            log_statements: true,
            tls: None,
        });
        assert_send(&starting);
        let mut cluster = starting.await.expect("cluster starts");
        assert_send(&cluster);
        let restarting = cluster.restart(); // never polled: only its type is checked
        assert_send(&restarting);
        drop(restarting);
        assert_eq!(cluster.host(), "127.0.0.1");
        assert_ne!(cluster.port(), 0);
        assert!(cluster.data_dir().join("PG_VERSION").is_file());
        let dir = cluster.dir.clone();
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        if effective_uid() == Some(0) {
            assert_ne!(
                std::os::unix::fs::MetadataExt::uid(&meta),
                0,
                "dir owned by the unprivileged user"
            );
        }
        assert!(
            !dir.join("pwfile").exists(),
            "password file removed after initdb"
        );
        assert!(!format!("{cluster:?}").contains("s3cret"));

        // Superuser over TCP with SCRAM, via the URL form (password percent-encoded).
        let url = cluster.superuser_url("postgres");
        assert!(url.starts_with("postgresql://postgres:s3cret%20%27pw%27%2F%40%3Ax@127.0.0.1:"));
        assert!(url.ends_with("/postgres?sslmode=disable"));
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("superuser login over TCP");
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT current_setting('password_encryption'), \
                        (SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'), \
                        inet_server_addr()::text, current_setting('fsync'), current_setting('max_connections')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "scram-sha-256");
        assert!(row.get::<_, bool>(1));
        assert_eq!(row.get::<_, String>(2), "127.0.0.1/32");
        assert_eq!(row.get::<_, String>(3), "off");
        assert_eq!(row.get::<_, String>(4), "200");
        let hba: Vec<(String, String)> = client
            .query(
                "SELECT type, auth_method FROM pg_hba_file_rules ORDER BY line_number",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            hba,
            vec![
                ("local".to_string(), "trust".to_string()),
                ("host".to_string(), "scram-sha-256".to_string())
            ]
        );
        client
            .batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
            .await
            .unwrap();

        // A wrong password is refused.
        let mut wrong = cluster.superuser_config("postgres");
        wrong.password("not-the-password");
        let err = wrong
            .connect(NoTls)
            .await
            .err()
            .expect("wrong password refused");
        assert_eq!(
            err.as_db_error().map(|e| e.code()),
            Some(&SqlState::INVALID_PASSWORD)
        );

        // The server log must not contain the password even with log_statement = all.
        let log = fs::read_to_string(cluster.log_path()).unwrap();
        assert!(!log.contains("s3cret"));

        // kill -9, then restart on the same port with the same data.
        let port = cluster.port();
        let old_pid = cluster.pid().unwrap();
        cluster.kill();
        assert!(cluster.pid().is_none());
        assert!(!process_alive(old_pid));
        assert!(
            client.query_one("SELECT 1", &[]).await.is_err(),
            "old session is gone"
        );
        assert!(cluster.connect("postgres").await.is_err(), "server is down");
        cluster.restart().await.expect("restart after SIGKILL");
        assert_eq!(cluster.port(), port);
        let client = cluster.connect("postgres").await.unwrap();
        assert_eq!(count_one(&client).await, 1);
        let v: i32 = client
            .query_one("SELECT v FROM kept", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 42);
        // restart of a running server (fast stop first) works too.
        cluster.restart().await.expect("restart while running");
        let client = cluster.connect("postgres").await.unwrap();
        assert_eq!(count_one(&client).await, 1);

        // A server that cannot start reports its log.
        let conf = cluster.data_dir().join("postgresql.conf");
        let good_conf = fs::read_to_string(&conf).unwrap();
        fs::write(&conf, format!("{good_conf}max_connections = 'many'\n")).unwrap();
        let err = cluster.restart().await.expect_err("bad setting");
        assert!(matches!(err, ClusterError::Exited { .. }), "{err}");
        assert!(err.to_string().contains("max_connections"), "{err}");
        assert!(cluster.pid().is_none());
        fs::write(&conf, good_conf).unwrap();
        cluster
            .restart()
            .await
            .expect("restart with the good config");

        // stop() ends the server and removes everything; it is idempotent.
        let pid = cluster.pid().unwrap();
        let watchdog_pid = cluster.watchdog.as_ref().unwrap().id();
        cluster.stop();
        assert!(!dir.exists(), "cluster directory removed");
        assert!(!cluster.data_dir().exists());
        assert!(!process_alive(pid), "postmaster gone");
        assert!(!process_alive(watchdog_pid), "watchdog gone");
        cluster.stop();
        assert!(matches!(
            cluster.connect("postgres").await,
            Err(ClusterError::Stopped)
        ));
        assert!(matches!(
            cluster.restart().await,
            Err(ClusterError::Stopped)
        ));
    }

    #[tokio::test]
    async fn watchdog_cleans_up_when_owner_dies() {
        // A stand-in owner process (`exec`, so killing it leaves no `sleep` holding our
        // pipes); the cluster's watchdog guards its pid instead of ours.
        let mut owner = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec sleep 60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut cluster = PgCluster::start_watched(ClusterOptions::default(), owner.id())
            .await
            .expect("cluster starts");
        let client = cluster.connect("postgres").await.unwrap();
        assert_eq!(count_one(&client).await, 1);
        let dir = cluster.dir.clone();
        assert!(dir.is_dir());
        // While the owner lives, nothing happens.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(dir.is_dir());
        assert!(cluster
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none());

        // The owner dies without any cleanup.
        owner.kill().unwrap();
        owner.wait().unwrap();
        let gone = wait_until(Duration::from_secs(10), || !dir.exists()).await;
        assert!(gone, "watchdog removed {}", dir.display());
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(
                cluster.child.as_mut().map(|c| c.try_wait()),
                Some(Ok(Some(_)))
            )
        })
        .await;
        assert!(exited, "watchdog stopped the postmaster");
        let watchdog = cluster.watchdog.as_mut().unwrap();
        let watchdog_done = wait_until(Duration::from_secs(5), || {
            matches!(watchdog.try_wait(), Ok(Some(_)))
        })
        .await;
        assert!(watchdog_done, "watchdog exits after cleaning up");
        // Dropping afterwards is harmless.
        drop(client);
        cluster.stop();
    }

    #[test]
    fn missing_binaries_error_says_what_to_install() {
        let err = ClusterError::BinariesNotFound {
            searched: "`pg_config --bindir`".into(),
        };
        let text = err.to_string();
        assert!(text.contains("apt-get install postgresql-15"));
        assert!(text.contains("(or `postgresql`)"));
        assert!(binaries_in(Path::new("/nonexistent")).is_none());
        assert!(
            find_binaries().is_ok(),
            "this machine has PostgreSQL installed"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
        assert!(validate_password("line\nbreak").is_err());
        let dbg = format!(
            "{:?}",
            ClusterOptions {
                superuser_password: "hunter2".into(),
                log_statements: false,
                tls: None,
            }
        );
        assert!(!dbg.contains("hunter2"));
        assert!(port_taken(
            "FATAL:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(is_transient(
            "FATAL:  pre-existing shared memory block (key 1, ID 2) is still in use"
        ));
        assert!(!is_transient(
            "FATAL:  data directory has invalid permissions"
        ));
    }
}
