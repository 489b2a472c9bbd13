//! Reading the files a reload re-reads (policies, agents, admin tokens, the vault, the master
//! key file, the TLS certificate and key) without ever blocking on one that is not a regular
//! file.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads `path` as UTF-8 text if it is a regular file (a symlink to one is fine). A FIFO,
/// socket or device is refused with an error rather than read: opening a FIFO for reading
/// waits for a writer, and the review found a `policies/zz_fifo.toml` holding a reload (and,
/// on the async workers, every door) for as long as nobody wrote to it. The file is opened
/// with `O_NONBLOCK` (which returns at once for a FIFO and changes nothing for a regular
/// file) and judged by what was opened, so nothing can swap a FIFO in after the check.
pub fn read_regular_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket, device or directory); refusing to read it",
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_and_regular_files_and_links_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("zz_fifo.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Without a writer, a plain open would wait forever: this answers at once.
        let err = read_regular_file(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(read_regular_file(dir.path()).is_err(), "a directory");
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        assert_eq!(read_regular_file(&file).unwrap(), "x = 1\n");
        let link = dir.path().join("b.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular_file(&link).unwrap(), "x = 1\n");
        let missing = read_regular_file(&dir.path().join("none.toml")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
