//! What the demo's throwaway servers (PostgreSQL, Redis, the MongoDB test server) share: a
//! private directory of their own, a random password, a free port on 127.0.0.1, and a watchdog
//! process that stops the server and removes the directory when the owning process dies
//! without cleaning up.

use std::fs::{self, DirBuilder};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Generated passwords have this many alphanumeric characters.
pub const PASSWORD_LEN: usize = 32;

/// The watchdog of a server that needs no graceful stop: `$1` is the owner pid, `$2` the
/// directory, `$3` the file in it holding the server's pid. While the owner lives it sleeps
/// (a zombie counts as dead: an orphan is reaped by whoever adopts it, in some containers
/// nobody); then it kills the server and removes the directory. It ignores terminal signals, so
/// a Ctrl-C aimed at the owner does not end it first.
pub const KILL_AND_REMOVE: &str = r#"trap '' HUP INT QUIT
owner="$1"; dir="$2"
while kill -0 "$owner" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$owner/status" 2>/dev/null; do sleep 0.5; done
pid=$(cat "$dir/$3" 2>/dev/null)
[ -n "$pid" ] && kill -s KILL "$pid" 2>/dev/null
rm -rf "$dir"
"#;

pub fn random_password() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// A port free on 127.0.0.1 now (bound to port 0 and let go).
pub fn free_port() -> io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
}

/// Creates `/tmp/<prefix>-<pid>-<random>` with mode 0700 (a new name if one is taken). /tmp
/// rather than $TMPDIR where it exists: traversable by an unprivileged server user, and short
/// enough for the unix socket path limit (~107 bytes).
pub fn private_dir(prefix: &str) -> io::Result<PathBuf> {
    let base = if Path::new("/tmp").is_dir() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let mut rng = rand::thread_rng();
    for _ in 0..16 {
        let dir = base.join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            rng.gen::<u32>()
        ));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask may have narrowed the mode; nothing may have widened it.
                use std::os::unix::fs::PermissionsExt;
                if let Err(e) = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)) {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no unique directory name under {}", base.display()),
    ))
}

/// Starts `script` under `/bin/sh` in a process group of its own (so the owner's terminal
/// signals miss it), named `name`, with `owner_pid`, `dir` and `extra` as `$1`, `$2`, `$3`...
pub fn spawn_watchdog(
    script: &str,
    name: &str,
    owner_pid: u32,
    dir: &Path,
    extra: &[&str],
) -> io::Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(name)
        .arg(owner_pid.to_string())
        .arg(dir)
        .args(extra)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_and_differ() {
        assert_eq!(random_password().len(), PASSWORD_LEN);
        assert_ne!(random_password(), random_password());
    }

    #[test]
    fn a_private_dir_is_new_and_closed_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let a = private_dir("tollgate-scratch-test").unwrap();
        let b = private_dir("tollgate-scratch-test").unwrap();
        assert_ne!(a, b);
        let mode = fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::remove_dir(&a).unwrap();
        fs::remove_dir(&b).unwrap();
    }
}
