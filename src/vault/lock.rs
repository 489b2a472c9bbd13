//! An exclusive lock over a file the CLI reads, changes and writes back (the vault, the agents
//! file, the admin tokens file). Without it two commands at once each wrote back what they read,
//! and one's change was lost: 20 concurrent `vault set` kept 8 secrets, and a `rotate-key` racing a
//! `vault set` said "re-encrypted" while the file ended up under the old key (a live review).
//!
//! The lock is taken on a sidecar file (`.NAME.lock` beside it), not on the file itself: every
//! write replaces the file by a rename, which would leave a lock on the old inode behind.

use std::fs::File;
use std::path::Path;

/// Held from before the file is read until after it is written back; released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for, then takes, the lock over `path` (which need not exist yet).
    pub fn exclusive(path: &Path) -> std::io::Result<FileLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let lock_path = super::hidden_beside(path, ".lock")?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A symlink planted at the lock's path is not followed (and a file created there).
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)?;
        file.lock()?;
        Ok(FileLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let first = FileLock::exclusive(&path).unwrap();
        assert!(dir.path().join(".vault.json.lock").exists());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _second = FileLock::exclusive(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::os::unix::fs::symlink(&victim, dir.path().join(".vault.json.lock")).unwrap();
        assert!(FileLock::exclusive(&dir.path().join("vault.json")).is_err());
        assert!(!victim.exists());
    }
}
