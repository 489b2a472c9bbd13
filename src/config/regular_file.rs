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
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| {
        // Where, as a text editor counts (a config error names line and column): the end of
        // the valid text before it.
        let valid = std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()]);
        let at = super::source_error::locate(valid.unwrap_or_default(), usize::MAX);
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text: an invalid byte at line {}, column {}",
                at.line, at.column
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_refused_naming_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, b"agents = [\"a\"]\n# caf\xe9\n").unwrap();
        let e = read_regular_file(&file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not UTF-8 text: an invalid byte at line 2, column 6"
        );
    }

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
