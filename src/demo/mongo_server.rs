//! A throwaway MongoDB-wire server for `tollgate demo` and the tests. No MongoDB server is
//! packaged in Debian, so this runs SecantusDB (a Python server speaking OP_MSG with
//! SCRAM-SHA-256, from PyPI, pinned) as a separate process: it is GPL-2.0, so it is installed
//! at run time into a cached virtualenv and never linked or shipped. A real deployment points
//! its `[upstream]` at a real `mongod` (or Atlas) instead.
//!
//! Start-up: a random port on 127.0.0.1 and a private 0700 temp dir for the data; the server is
//! started once without `--auth` to create the upstream user (root on `admin`, random password),
//! stopped, and started again with `--auth` on the same data. `--standalone` keeps it from
//! advertising a replica set (drivers would then connect around a proxy). Stopped and removed
//! on drop, and by a watchdog if the owning process dies first.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use rand::Rng;
use tracing::info;

use super::scratch;
use crate::mongo::upstream::{MongoConnection, MongoCredentials, MongoTarget, UpstreamError};
use crate::vault::Secret;

/// The pinned package (see ../shared/CRATES.md): checked with pymongo 4.20 and the Rust driver.
pub const SECANTUS_REQUIREMENT: &str = "SecantusDB==0.7.0b3";
/// The user tollgate logs in as upstream.
pub const UPSTREAM_USER: &str = "tollgate";
const PID_FILE: &str = "mongo.pid";

#[derive(Debug, thiserror::Error)]
pub enum MongoServerError {
    #[error("python3 not found on PATH: the MongoDB test server (SecantusDB) runs on CPython >= 3.10 with the venv module")]
    NoPython,
    #[error("installing {SECANTUS_REQUIREMENT} into {venv} failed (PyPI reachable? `python3 -m venv` available?):\n{log}")]
    Install { venv: PathBuf, log: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the MongoDB test server did not accept connections on 127.0.0.1:{port} within {secs} s; log:\n{log}")]
    Timeout { port: u16, secs: u64, log: String },
    #[error("the MongoDB test server: {0}")]
    Upstream(#[from] UpstreamError),
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> MongoServerError + '_ {
    move |e| MongoServerError::Io(what.to_string(), e)
}

/// The cache folder for the virtualenv: `TOLLGATE_MONGO_CACHE`, else the client suite's cache.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOLLGATE_MONGO_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tollgate-clients")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// The `secantusd-py` launcher: `TOLLGATE_SECANTUSD` if set, else from the cached venv
/// (installed on first use; concurrent installers each build their own and rename it in).
pub async fn ensure_installed() -> Result<PathBuf, MongoServerError> {
    if let Some(p) = std::env::var_os("TOLLGATE_SECANTUSD") {
        return Ok(PathBuf::from(p));
    }
    let python = find_on_path("python3").ok_or(MongoServerError::NoPython)?;
    let version = tokio::process::Command::new(&python)
        .args(["-c", "import sys; print(sys.version)"])
        .output()
        .await
        .map_err(io_err("cannot run python3"))?;
    let mut key = sha2::Sha256::default();
    sha2::Digest::update(&mut key, &version.stdout);
    sha2::Digest::update(&mut key, SECANTUS_REQUIREMENT.as_bytes());
    let key = hex::encode(&sha2::Digest::finalize(key)[..8]);
    let venv = cache_dir().join(format!("secantus-venv-{key}"));
    let bin = venv.join("bin").join("secantusd-py");
    if venv.join(".complete").is_file() && bin.is_file() {
        return Ok(bin);
    }
    fs::create_dir_all(cache_dir()).map_err(io_err("cannot create the cache dir"))?;
    let tmp = cache_dir().join(format!(
        "secantus-venv-{key}.tmp-{}-{:08x}",
        std::process::id(),
        rand::thread_rng().gen::<u32>()
    ));
    info!(venv = %venv.display(), "installing {SECANTUS_REQUIREMENT} (first use only)");
    let run = |cmd: &mut tokio::process::Command| cmd.stdin(Stdio::null()).output();
    let out = run(tokio::process::Command::new(&python)
        .args(["-m", "venv"])
        .arg(&tmp))
    .await
    .map_err(io_err("cannot run python3 -m venv"))?;
    let out = if out.status.success() {
        run(
            tokio::process::Command::new(tmp.join("bin").join("pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                SECANTUS_REQUIREMENT,
            ]),
        )
        .await
        .map_err(io_err("cannot run pip"))?
    } else {
        out
    };
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(MongoServerError::Install {
            venv,
            log: String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
        });
    }
    fs::write(tmp.join(".complete"), SECANTUS_REQUIREMENT)
        .map_err(io_err("cannot mark the venv complete"))?;
    // venv scripts hard-code the venv's path in their shebang: move it, then fix them up by
    // asking the moved venv's python to run the launcher instead (see `launch`).
    if fs::rename(&tmp, &venv).is_err() {
        // Someone else finished first: use theirs.
        let _ = fs::remove_dir_all(&tmp);
    }
    if venv.join(".complete").is_file() {
        Ok(bin)
    } else {
        Err(MongoServerError::Install {
            venv,
            log: "the installed venv vanished".into(),
        })
    }
}

/// The server's TLS files, for a test of TLS to the upstream.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert` (what tollgate trusts with `tls = "verify-full"`).
    pub ca: PathBuf,
}

/// A running test server.
pub struct MongoServer {
    dir: PathBuf,
    port: u16,
    password: String,
    launcher: PathBuf,
    tls: Option<ServerTlsFiles>,
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl std::fmt::Debug for MongoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl MongoServer {
    /// Installs (first time), starts, creates the upstream user, restarts with `--auth`.
    pub async fn start() -> Result<MongoServer, MongoServerError> {
        MongoServer::start_with(None).await
    }

    /// The same, with the server speaking TLS only (its certificate from `tls`).
    pub async fn start_with(tls: Option<ServerTlsFiles>) -> Result<MongoServer, MongoServerError> {
        let launcher = ensure_installed().await?;
        let dir = scratch::private_dir("tollgate-mongo")
            .map_err(io_err("cannot create the mongo temp dir"))?;
        let password = scratch::random_password();
        let port = scratch::free_port().map_err(io_err("cannot find a free port"))?;
        let mut server = MongoServer {
            dir,
            port,
            password,
            launcher,
            tls,
            child: None,
            watchdog: None,
        };
        server.watchdog = Some(
            scratch::spawn_watchdog(
                scratch::KILL_AND_REMOVE,
                "tollgate-mongo-watchdog",
                std::process::id(),
                &server.dir,
                &[PID_FILE],
            )
            .map_err(io_err("cannot start the cleanup watchdog"))?,
        );
        let started = Instant::now();
        server.launch(false)?;
        let mut conn = server.wait_ready(None).await?;
        let created = conn
            .command(&doc! {
                "createUser": UPSTREAM_USER,
                "pwd": server.password.as_str(),
                "roles": [ { "role": "root", "db": "admin" } ],
                "mechanisms": ["SCRAM-SHA-256"],
                "$db": "admin",
            })
            .await?;
        if crate::mongo::reply::is_error(&created) {
            return Err(MongoServerError::Upstream(UpstreamError::Command {
                code_name: created.get_str("codeName").unwrap_or("").into(),
                message: "createUser failed".into(),
            }));
        }
        drop(conn);
        server.stop_child();
        server.launch(true)?;
        server.wait_ready(Some(&server.credentials())).await?;
        info!(
            port,
            ms = started.elapsed().as_millis() as u64,
            "throwaway MongoDB-wire server (SecantusDB) is up"
        );
        Ok(server)
    }

    fn launch(&mut self, auth: bool) -> Result<(), MongoServerError> {
        // Run the launcher with the venv's own interpreter (robust to a moved venv).
        let python = self.launcher.with_file_name("python3");
        let mut cmd = Command::new(&python);
        cmd.arg(&self.launcher)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--storage-path")
            .arg(self.dir.join("data"))
            .args([
                "--standalone",
                "--log-level",
                "WARNING",
                "--cache-size",
                "64M",
            ]);
        if auth {
            cmd.arg("--auth");
        }
        if let Some(t) = &self.tls {
            cmd.arg("--tls-cert-file")
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mongo.log"))
            .map_err(io_err("cannot open the mongo log"))?;
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io_err("cannot start secantusd-py"))?;
        fs::write(self.dir.join(PID_FILE), format!("{}\n", child.id()))
            .map_err(io_err("cannot write the mongo pid file"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls until `hello` (and the login, with credentials) succeeds.
    async fn wait_ready(
        &mut self,
        credentials: Option<&MongoCredentials>,
    ) -> Result<MongoConnection, MongoServerError> {
        let secs = 60;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let target = self.target();
        loop {
            match target.connect(credentials, Duration::from_secs(5)).await {
                Ok(c) => return Ok(c),
                Err(UpstreamError::Connect(_) | UpstreamError::Timeout(_))
                    if Instant::now() < deadline =>
                {
                    if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(UpstreamError::Connect(_) | UpstreamError::Timeout(_)) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Err(MongoServerError::Timeout {
            port: self.port,
            secs,
            log: fs::read_to_string(self.dir.join("mongo.log")).unwrap_or_default(),
        })
    }

    /// SIGTERM (the server flushes and exits), SIGKILL after 15 s.
    fn stop_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            let _ = fs::remove_file(self.dir.join(PID_FILE));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The upstream user's password (the demo stores it in the vault).
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn credentials(&self) -> MongoCredentials {
        MongoCredentials {
            user: Secret::new(UPSTREAM_USER.into()),
            password: Secret::new(self.password.clone()),
        }
    }

    /// How tollgate reaches it: loopback (TLS with `verify-full` against the server's CA when
    /// it was started with TLS), the user defined in `admin`.
    pub fn target(&self) -> MongoTarget {
        let tls = self.tls.as_ref().and_then(|t| {
            crate::tls::UpstreamTls::build(
                crate::tls::UpstreamTlsMode::VerifyFull,
                "127.0.0.1",
                Some(&t.ca),
                None,
            )
            .ok()
            .flatten()
        });
        MongoTarget {
            name: "mongo".into(),
            host: "127.0.0.1".into(),
            port: self.port,
            tls,
            auth_source: "admin".into(),
        }
    }

    /// Direct URL of the upstream (for comparisons in tests and benchmarks).
    pub fn url(&self) -> String {
        let tls = match &self.tls {
            Some(t) => format!("&tls=true&tlsCAFile={}", t.ca.display()),
            None => String::new(),
        };
        format!(
            "mongodb://{UPSTREAM_USER}:{}@127.0.0.1:{}/?authSource=admin&authMechanism=SCRAM-SHA-256&directConnection=true{tls}",
            self.password, self.port
        )
    }

    /// A logged-in connection as the upstream user.
    pub async fn connect(&self) -> Result<MongoConnection, MongoServerError> {
        Ok(self
            .target()
            .connect(Some(&self.credentials()), Duration::from_secs(10))
            .await?)
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop_child();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
