//! `tollgate serve` as a child process on a copy of the harness's demo files, for the
//! reliability tests: its own config edits, an optional shell prefix (`ulimit -n`), its ports
//! read from its log, its resident memory, signals, and an in-test TCP proxy between it and an
//! upstream that can forward, stall or refuse.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{copy_demo_dir, harness, tollgate_bin};

/// A running `tollgate serve`; killed when dropped.
pub struct Served {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub pg_port: u16,
    pub redis_port: u16,
    pub admin_port: u16,
    pub log: Arc<Mutex<String>>,
    _watchdog: Watchdog,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a test may keep a gateway process before the watchdog ends it.
const WATCHDOG_LIMIT: Duration = Duration::from_secs(240);

/// Ends a test that hangs on its gateway process instead of letting it hang the suite (a test
/// awaiting a reply the process never sends waits forever: one once used up CI's 90 minutes).
/// At the limit it prints the process's log (to the real stderr: a hung test's captured output
/// is never shown) and kills it, which fails every await on its sockets; if the test is still
/// running a minute later, it aborts the test binary.
struct Watchdog {
    done: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Watchdog {
    fn start(pid: u32, log: Arc<Mutex<String>>, limit: Duration) -> Watchdog {
        let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let seen = done.clone();
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        std::thread::spawn(move || {
            let (finished, ended) = &*seen;
            let wait = |limit| {
                let guard = finished.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) = ended
                    .wait_timeout_while(guard, limit, |f| !*f)
                    .unwrap_or_else(|p| p.into_inner());
                *guard
            };
            if wait(limit) {
                return;
            }
            let log = log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = writeln!(
                std::io::stderr(),
                "\nwatchdog: {test} still holds `tollgate serve` (pid {pid}) after {limit:?}: \
                 killing it. Its last log lines:\n{}\n",
                tail.join("\n")
            );
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            if wait(Duration::from_secs(60)) {
                return;
            }
            let _ = writeln!(
                std::io::stderr(),
                "watchdog: {test} is still stuck a minute after its gateway was killed: aborting"
            );
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (finished, ended) = &*self.done;
        *finished.lock().unwrap_or_else(|p| p.into_inner()) = true;
        ended.notify_all();
    }
}

/// A copy of the demo's files with `edit` applied to `tollgate.toml`'s text.
pub fn demo_dir_with(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = copy_demo_dir();
    let cfg = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, edit(text)).unwrap();
    dir
}

/// Appends a `[limits]` table (the demo config has none).
pub fn with_limits(text: String, limits: &str) -> String {
    format!("{text}\n[limits]\n{limits}\n")
}

/// The harness upstream PostgreSQL's port.
pub fn upstream_pg_port() -> u16 {
    let url = &harness().env.upstream_pg_url;
    let after = url.split('@').nth(1).unwrap();
    after.split([':', '/']).nth(1).unwrap().parse().unwrap()
}

impl Served {
    /// Starts `tollgate serve` on `dir`, with `shell_prefix` (e.g. `ulimit -n 30000`) run
    /// before it in the same shell; waits for its PostgreSQL, Redis and admin listeners.
    pub fn start(dir: tempfile::TempDir, shell_prefix: &str) -> Served {
        Served::start_logging(dir, shell_prefix, "info")
    }

    /// `start` with the process's log filter (`RUST_LOG`).
    pub fn start_logging(dir: tempfile::TempDir, shell_prefix: &str, rust_log: &str) -> Served {
        let config = dir.path().join("tollgate.toml");
        let script = format!("{shell_prefix}\nexec \"$0\" serve --config \"$1\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(tollgate_bin())
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .env_remove("TOLLGATE_MASTER_KEY")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            // Read to the end whatever comes: a reader that stopped early (at a line that is not
            // UTF-8) would leave the pipe full and the gateway blocked on its next log line.
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\n', '\r']);
                let kind = if line.contains("PostgreSQL listener ready") {
                    Some("pg")
                } else if line.contains("Redis listener ready") && line.contains("tls=false") {
                    Some("redis")
                } else if line.contains("admin API listener ready") {
                    Some("admin")
                } else {
                    None
                };
                let port = port_after(line, "local=127.0.0.1:")
                    .or_else(|| port_after(line, "admin=127.0.0.1:"));
                if let (Some(kind), Some(port)) = (kind, port) {
                    let _ = tx.send((kind, port));
                }
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(line);
                l.push('\n');
            }
        });
        let mut ports = std::collections::HashMap::new();
        while ports.len() < 3 {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((kind, port)) => {
                    ports.insert(kind, port);
                }
                Err(_) => panic!(
                    "serve did not start (ports {ports:?}):\n{}",
                    log.lock().unwrap()
                ),
            }
        }
        let watchdog = Watchdog::start(child.id(), log.clone(), WATCHDOG_LIMIT);
        Served {
            child,
            dir,
            pg_port: ports["pg"],
            redis_port: ports["redis"],
            admin_port: ports["admin"],
            log,
            _watchdog: watchdog,
        }
    }

    /// `agent`'s PostgreSQL URL on this gateway.
    pub fn pg_url(&self, agent: &str) -> String {
        let env = &harness().env;
        env.pg_url(agent).replace(
            &format!(":{}/", env.pg_port),
            &format!(":{}/", self.pg_port),
        )
    }

    /// `agent`'s Redis URL on this gateway.
    pub fn redis_url(&self, agent: &str) -> String {
        let env = &harness().env;
        env.redis_url(agent).replace(
            &format!(":{}", env.redis_port),
            &format!(":{}", self.redis_port),
        )
    }

    /// The port of the plain MongoDB listener (read from the log; waits up to 30 s for it).
    pub fn mongo_port(&self) -> u16 {
        self.port_in_log(|l| l.contains("MongoDB listener ready") && l.contains("tls=false"))
    }

    /// The port of the MCP listener (read from the log; waits up to 30 s for it).
    pub fn mcp_port(&self) -> u16 {
        self.port_in_log(|l| l.contains("MCP listener ready"))
    }

    /// The `local=127.0.0.1:PORT` of the first log line `is` picks, waiting up to 30 s for it.
    fn port_in_log(&self, is: impl Fn(&str) -> bool) -> u16 {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .log_text()
                .lines()
                .find_map(|l| is(l).then(|| port_after(l, "local=127.0.0.1:")).flatten());
            if let Some(p) = found {
                return p;
            }
            assert!(
                Instant::now() < until,
                "no such listener:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gateway process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The gateway process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the gateway is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// The gateway process's open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

fn port_after(line: &str, prefix: &str) -> Option<u16> {
    let i = line.find(prefix)?;
    line[i + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProxyMode {
    /// Relay both ways.
    Forward = 0,
    /// Accept, then never send or forward anything (a hung upstream).
    Stall = 1,
    /// Relay, each chunk held back this long (a slow upstream): 200 ms.
    Slow = 2,
    /// Accept and close at once.
    Reset = 3,
}

/// A TCP proxy on 127.0.0.1 in front of `target`, on the harness's runtime.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    pub fn start(target: u16, mode: ProxyMode) -> Proxy {
        Proxy::start_on(0, target, mode)
    }

    /// On a given port (0: any).
    pub fn start_on(port: u16, target: u16, mode: ProxyMode) -> Proxy {
        let mode = Arc::new(AtomicU8::new(mode as u8));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let m = mode.clone();
        harness().runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let m = m.clone();
                tokio::spawn(async move { proxy_one(client, target, m).await });
            }
        });
        Proxy { port, mode }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

async fn proxy_one(client: tokio::net::TcpStream, target: u16, mode: Arc<AtomicU8>) {
    let current = || mode.load(Ordering::SeqCst);
    if current() == ProxyMode::Reset as u8 {
        return;
    }
    if current() == ProxyMode::Stall as u8 {
        // Hold the connection open, silent, for a minute.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(client);
        return;
    }
    let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let slow = move || mode.load(Ordering::SeqCst) == ProxyMode::Slow as u8;
    let slow2 = slow.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if slow() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if slow2() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
