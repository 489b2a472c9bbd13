//! A throwaway redis-server for `tollgate demo` and the tests: the system binary, a random
//! `requirepass` (in a 0600 config file, never on a command line), a random port on 127.0.0.1,
//! no persistence, its own private temp dir; stopped and removed on drop, and by a watchdog if
//! the owning process dies first (the same pattern as the PostgreSQL cluster).

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use super::scratch;

const PID_FILE: &str = "redis.pid";

#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    #[error("redis-server not found on PATH: install it (Debian/Ubuntu: `apt-get install redis-server redis-tools`)")]
    NotFound,
    #[error("{0}: {1}")]
    Io(String, io::Error),
    #[error(
        "redis-server did not accept connections on 127.0.0.1:{port} within 10 s; log:\n{log}"
    )]
    Timeout { port: u16, log: String },
}

pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    password: String,
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> RedisServerError + '_ {
    move |e| RedisServerError::Io(what.to_string(), e)
}

fn find_binary() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("redis-server"))
            .find(|c| c.is_file())
    })
}

impl RedisServer {
    pub async fn start() -> Result<RedisServer, RedisServerError> {
        let bin = find_binary().ok_or(RedisServerError::NotFound)?;
        let dir = scratch::private_dir("tollgate-redis")
            .map_err(io_err("cannot create the redis temp dir"))?;
        let password = scratch::random_password();
        let port = scratch::free_port().map_err(io_err("cannot find a free port"))?;
        let mut server = RedisServer {
            dir,
            port,
            password,
            child: None,
            watchdog: None,
        };
        server.watchdog = Some(
            scratch::spawn_watchdog(
                scratch::KILL_AND_REMOVE,
                "tollgate-redis-watchdog",
                std::process::id(),
                &server.dir,
                &[PID_FILE],
            )
            .map_err(io_err("cannot start the cleanup watchdog"))?,
        );
        let conf = format!(
            "bind 127.0.0.1\nport {port}\nrequirepass {}\nsave \"\"\nappendonly no\ndir {}\nlogfile {}\ndaemonize no\nprotected-mode yes\n",
            server.password,
            server.dir.display(),
            server.dir.join("redis.log").display(),
        );
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(server.conf_path())
            .map_err(io_err("cannot write redis.conf"))?;
        f.write_all(conf.as_bytes())
            .map_err(io_err("cannot write redis.conf"))?;
        server.bin_launch(&bin)?;
        server.wait_ready().await?;
        info!(port, "throwaway redis-server is up");
        Ok(server)
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    fn bin_launch(&mut self, bin: &Path) -> Result<(), RedisServerError> {
        let child = Command::new(bin)
            .arg(self.conf_path())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_err("cannot start redis-server"))?;
        fs::write(self.dir.join(PID_FILE), format!("{}\n", child.id()))
            .map_err(io_err("cannot write the redis pid file"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls with `AUTH` + `PING` until `+PONG`.
    async fn wait_ready(&self) -> Result<(), RedisServerError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let hello = format!(
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n*1\r\n$4\r\nPING\r\n",
            self.password.len(),
            self.password
        );
        while Instant::now() < deadline {
            if let Ok(mut s) =
                tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await
            {
                let mut buf = vec![0u8; 64];
                let mut got = Vec::new();
                if s.write_all(hello.as_bytes()).await.is_ok() {
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if got.ends_with(b"+PONG\r\n") {
                            return Ok(());
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(RedisServerError::Timeout {
            port: self.port,
            log: fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `requirepass` password (the demo stores it in the vault).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Direct URL of the upstream (for comparisons in tests and benchmarks).
    /// With the user name `default`: redis-cli 7.0 sends `AUTH "" password` for `redis://:pw@`,
    /// which fails, so the URL the demo prints would not work.
    pub fn url(&self) -> String {
        format!("redis://default:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// Kills the server as a crash would (the data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = fs::remove_file(self.dir.join(PID_FILE));
        }
    }

    /// Starts it again on the same port with the same password.
    pub async fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill();
        let bin = find_binary().ok_or(RedisServerError::NotFound)?;
        self.bin_launch(&bin)?;
        self.wait_ready().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The demo's Redis data: `cache:*` strings, `session:*` hashes with an `email` field,
/// `admin:*` keys. Pipelined in one write; returns when every reply has arrived.
pub async fn seed(server: &RedisServer, sessions: usize) -> Result<(), RedisServerError> {
    use crate::redis::command::encode_command;
    use bytes::Bytes;
    let b = |s: String| Bytes::from(s);
    let mut cmds: Vec<Vec<Bytes>> = vec![vec![b("AUTH".into()), b(server.password.clone())]];
    for i in 1..=sessions {
        cmds.push(vec![
            b("SET".into()),
            b(format!("cache:{i}")),
            b(format!("cached value {i}")),
        ]);
        cmds.push(vec![
            b("HSET".into()),
            b(format!("session:{i}")),
            b("user".into()),
            b(format!("user{i}")),
            b("email".into()),
            b(format!("user{i}@example.com")),
            b("plan".into()),
            b(if i % 3 == 0 { "pro" } else { "free" }.into()),
        ]);
    }
    cmds.push(vec![
        b("SET".into()),
        b("admin:config".into()),
        b("feature_flags=all".into()),
    ]);
    cmds.push(vec![
        b("HSET".into()),
        b("admin:users".into()),
        b("root".into()),
        b("admin@example.com".into()),
    ]);
    cmds.push(vec![
        b("SET".into()),
        b("admin:api_key".into()),
        b("sk_live_demo_0000".into()),
    ]);
    let mut out = Vec::new();
    for c in &cmds {
        out.extend_from_slice(&encode_command(c));
    }
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, server.port))
        .await
        .map_err(io_err("cannot connect to redis-server"))?;
    s.write_all(&out)
        .await
        .map_err(io_err("cannot seed redis"))?;
    let mut buf = bytes::BytesMut::new();
    let mut scanner = crate::redis::scan::ReplyScanner::default();
    let mut replies = 0;
    while replies < cmds.len() {
        match scanner.next_frame(&buf) {
            Ok(Some(n)) => {
                let frame = buf.split_to(n);
                if frame.first() == Some(&b'-') {
                    return Err(RedisServerError::Io(
                        "seeding redis".into(),
                        io::Error::other(String::from_utf8_lossy(&frame).trim().to_string()),
                    ));
                }
                replies += 1;
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                return Err(RedisServerError::Io(
                    "seeding redis".into(),
                    io::Error::other(e),
                ))
            }
        }
        if s.read_buf(&mut buf)
            .await
            .map_err(io_err("seeding redis"))?
            == 0
        {
            return Err(RedisServerError::Io(
                "seeding redis".into(),
                io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
    Ok(())
}
