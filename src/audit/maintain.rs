//! Housekeeping of closed files, off every statement's path: gzip compression (the `.gz` is
//! written aside, then renamed into place, then the original removed, so a crash never leaves a
//! half file under a log name) and retention (oldest closed files removed beyond a count).

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::chain::SystemRecord;
use super::files::{self, LogFile, Naming};
use super::group::Shared;

#[derive(Clone)]
pub struct Maintenance {
    pub naming: Naming,
    pub compress: bool,
    pub retain: Option<usize>,
    /// The log, to record each deletion in the chain before doing it.
    pub log: Option<std::sync::Weak<Shared>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub compressed: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

impl Maintenance {
    pub fn needed(&self) -> bool {
        self.compress || self.retain.is_some()
    }

    /// Compresses closed files not yet compressed, then removes the oldest beyond `retain`.
    pub fn run(&self) -> Pass {
        let mut pass = Pass::default();
        self.clean_leftovers();
        let closed = match self.closed() {
            Ok(c) => c,
            Err(e) => {
                warn!(dir = %self.naming.dir.display(), error = %e, "audit maintenance cannot list the log's files");
                return pass;
            }
        };
        if let Some(keep) = self.retain {
            let excess = closed.len().saturating_sub(keep);
            for f in &closed[..excess] {
                if let Err(e) = self.record_removal(f) {
                    warn!(file = %f.name, error = %e, "audit retention: cannot record the removal in the log; the file is kept");
                    break;
                }
                match std::fs::remove_file(&f.path) {
                    Ok(()) => {
                        info!(file = %f.name, "audit retention: removed the oldest closed file");
                        pass.removed.push(f.path.clone());
                    }
                    Err(e) => warn!(file = %f.name, error = %e, "audit retention: cannot remove"),
                }
            }
        }
        if self.compress {
            for f in closed
                .iter()
                .filter(|f| !f.compressed && !pass.removed.contains(&f.path))
            {
                match compress(&f.path) {
                    Ok(gz) => pass.compressed.push(gz),
                    Err(e) => {
                        warn!(file = %f.name, error = %e, "audit compression failed; the file stays plain")
                    }
                }
            }
        }
        pass
    }

    /// Writes a `retention` record naming the file, so that verification can tell this removal
    /// from a deletion by someone else.
    fn record_removal(&self, f: &LogFile) -> Result<(), String> {
        let Some(shared) = self.log.as_ref().and_then(|w| w.upgrade()) else {
            return Err("the log is closed".into());
        };
        let record = SystemRecord::Retention {
            removed_file: f.link_name().to_string(),
        };
        shared
            .lock()
            .map_err(|e| e.to_string())?
            .push_system(record);
        shared.flush_sync().map_err(|e| e.to_string())
    }

    fn closed(&self) -> std::io::Result<Vec<LogFile>> {
        Ok(files::list(&self.naming)?
            .into_iter()
            .filter(|f| f.named_seq.is_some())
            .collect())
    }

    /// `.gz.tmp` files of an interrupted compression, and `.gz` twins of plain files (the
    /// compression finished but the original was not removed yet: it is redone).
    fn clean_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.naming.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let gz_tmp = name
                .strip_suffix(".gz.tmp")
                .is_some_and(|n| self.naming.closed_seq(n).is_some());
            let twin = name.strip_suffix(".gz").is_some_and(|n| {
                self.naming.closed_seq(n).is_some() && self.naming.dir.join(n).exists()
            });
            if gz_tmp || twin {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `x` → `x.gz` (0600); returns the new path.
fn compress(path: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", path.display()));
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut enc =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::default());
    std::io::copy(&mut std::fs::File::open(path)?, &mut enc)?;
    let file = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(path)?;
    Ok(gz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_then_keeps_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let naming = Naming::for_active(&dir.path().join("audit.log"));
        // Opened first: its chain starts empty (the closed files below are only stand-ins).
        let log = super::super::AuditLog::open(&dir.path().join("audit.log")).unwrap();
        for seq in [1, 101, 201] {
            std::fs::write(
                dir.path().join(naming.closed_name(seq)),
                format!("records from {seq}\n"),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join(naming.closed_name(201) + ".gz.tmp"), "half").unwrap();
        let m = Maintenance {
            naming: naming.clone(),
            compress: true,
            retain: Some(2),
            log: Some(std::sync::Arc::downgrade(log.shared())),
        };
        let pass = m.run();
        assert_eq!(pass.removed, [dir.path().join(naming.closed_name(1))]);
        assert_eq!(pass.compressed.len(), 2);
        let listed: Vec<String> = files::list(&naming)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            listed,
            [
                "audit.log.000000000101.gz",
                "audit.log.000000000201.gz",
                "audit.log"
            ]
        );
        let back = files::list(&naming).unwrap()[1].read_all().unwrap();
        assert_eq!(back, b"records from 201\n");
        assert!(!dir
            .path()
            .join(naming.closed_name(201) + ".gz.tmp")
            .exists());
        assert_eq!(m.run(), Pass::default(), "nothing left to do");
        // The removal is in the chain.
        let active = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(
            active.contains(r#""kind":"retention","removed_file":"audit.log.000000000001""#),
            "{active}"
        );
    }
}
