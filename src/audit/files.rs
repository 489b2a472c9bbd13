//! The files of one audit log: the active file (`audit.log`) and the closed ones it rotated into
//! (`audit.log.<first seq, 12 digits>`, gzip-compressed as `….gz`), listed in chain order.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Digits of the first sequence number in a closed file's name (more when a number needs it).
const SEQ_DIGITS: usize = 12;

/// Where a log lives and what its files are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub dir: PathBuf,
    /// The active file's name, e.g. `audit.log`; closed files add `.<seq>`.
    pub base: String,
}

impl Naming {
    pub fn for_active(path: &Path) -> Naming {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audit.log".into());
        Naming { dir, base }
    }

    pub fn active(&self) -> PathBuf {
        self.dir.join(&self.base)
    }

    /// The name a file takes when it is closed; `first_seq` is its first record's.
    pub fn closed_name(&self, first_seq: u64) -> String {
        format!("{}.{first_seq:0SEQ_DIGITS$}", self.base)
    }

    /// The first sequence number a closed file's name announces (`.gz` or not).
    pub fn closed_seq(&self, name: &str) -> Option<u64> {
        let name = name.strip_suffix(".gz").unwrap_or(name);
        let digits = name.strip_prefix(&self.base)?.strip_prefix('.')?;
        if digits.len() < SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// One file of a log, with what its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    /// The file name as shown in reports.
    pub name: String,
    /// The first sequence number the name announces (closed files only).
    pub named_seq: Option<u64>,
    pub compressed: bool,
}

impl LogFile {
    pub fn new(path: PathBuf, named_seq: Option<u64>) -> LogFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let compressed = name.ends_with(".gz");
        LogFile {
            path,
            name,
            named_seq,
            compressed,
        }
    }

    /// The name the next file's link record uses for this one (without `.gz`).
    pub fn link_name(&self) -> &str {
        self.name.strip_suffix(".gz").unwrap_or(&self.name)
    }

    /// The file's bytes, decompressed when it is gzip.
    pub fn reader(&self) -> std::io::Result<Box<dyn BufRead + Send>> {
        let file = std::fs::File::open(&self.path)?;
        Ok(if self.compressed {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                flate2::read::MultiGzDecoder::new(BufReader::new(file)),
            ))
        } else {
            Box::new(BufReader::with_capacity(256 * 1024, file))
        })
    }

    /// The whole file, decompressed.
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.reader()?.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Closed files (oldest first) and the active file of the log whose active file is `naming`'s.
pub fn list(naming: &Naming) -> std::io::Result<Vec<LogFile>> {
    let mut closed: Vec<LogFile> = Vec::new();
    for entry in std::fs::read_dir(&naming.dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(seq) = naming.closed_seq(&name) else {
            continue;
        };
        if !entry.file_type()?.is_file() {
            continue;
        }
        closed.push(LogFile::new(entry.path(), Some(seq)));
    }
    // A crash between writing `x.gz` and removing `x` leaves both: the plain file is the original.
    closed.sort_by_key(|f| (f.named_seq, f.compressed));
    closed.dedup_by(|later, earlier| later.named_seq == earlier.named_seq);
    let active = naming.active();
    if active.is_file() {
        closed.push(LogFile::new(active, None));
    }
    Ok(closed)
}

/// The files of the one log in `dir`: closed files (named `<base>.<seq>`) and active files
/// (recognised by their first bytes, `{"seq":`); other files are not the log's and are left
/// out. Several logs in one folder are an error naming them: pass the files instead.
pub fn list_dir(dir: &Path) -> Result<Vec<LogFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut bases = Vec::new();
    // An active file the gateway opened but has written nothing to yet.
    let mut empty = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || name.starts_with('.') || name.ends_with(".tmp") {
            continue;
        }
        let base = base_of(&name);
        if base != name || starts_like_a_record(&entry.path()) {
            bases.push(base.to_string());
        } else if entry.metadata().is_ok_and(|m| m.len() == 0) {
            empty.push(name);
        }
    }
    bases.sort();
    bases.dedup();
    empty.sort();
    match bases.as_slice() {
        [] if !empty.is_empty() => Err(format!(
            "{}: no audit records yet ({} empty)",
            dir.display(),
            empty.join(", ")
        )),
        [] => Err(format!("{}: no audit log files here", dir.display())),
        [base] => list(&Naming {
            dir: dir.to_path_buf(),
            base: base.clone(),
        })
        .map_err(|e| format!("{}: {e}", dir.display())),
        many => Err(format!(
            "{}: holds files of several logs ({}): name the files to check",
            dir.display(),
            many.join(", ")
        )),
    }
}

fn starts_like_a_record(path: &Path) -> bool {
    let mut head = [0u8; 7];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"{\"seq\":")
}

/// The active file's name for a log's files (`audit.log` for `audit.log.000000000001.gz`, ...).
pub fn active_name_of(files: &[LogFile]) -> Option<String> {
    files.first().map(|f| base_of(&f.name).to_string())
}

/// `audit.log.000000001001.gz` → `audit.log`; a name without a sequence suffix is its own base.
fn base_of(name: &str) -> &str {
    let plain = name.strip_suffix(".gz").unwrap_or(name);
    match plain.rsplit_once('.') {
        Some((base, digits))
            if digits.len() >= SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    }
}

/// Files named on the command line, in chain order: closed files by the sequence number in
/// their names, then files without one (an active file) in the order given.
pub fn order_given(paths: &[PathBuf]) -> Vec<LogFile> {
    let mut files: Vec<LogFile> = paths
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = base_of(&name);
            let seq = (base != name)
                .then(|| {
                    Naming {
                        dir: PathBuf::new(),
                        base: base.to_string(),
                    }
                    .closed_seq(&name)
                })
                .flatten();
            LogFile::new(p.clone(), seq)
        })
        .collect();
    // Stable: files without a sequence keep their order, after the numbered ones.
    files.sort_by_key(|f| f.named_seq.map_or((1, 0), |s| (0, s)));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        let n = Naming::for_active(Path::new("/var/log/tollgate/audit.log"));
        assert_eq!(n.dir, Path::new("/var/log/tollgate"));
        assert_eq!(n.closed_name(1001), "audit.log.000000001001");
        assert_eq!(n.closed_seq("audit.log.000000001001.gz"), Some(1001));
        assert_eq!(n.closed_seq("audit.log.1001"), None, "too short to be ours");
        assert_eq!(n.closed_seq("audit.log"), None);
        assert_eq!(n.closed_seq("other.log.000000001001"), None);
        assert_eq!(
            n.closed_seq(&n.closed_name(12_345_678_901_234)),
            Some(12_345_678_901_234)
        );
        assert_eq!(
            Naming::for_active(Path::new("audit.log")).dir,
            Path::new(".")
        );
    }

    #[test]
    fn listing_orders_closed_files_then_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let n = Naming::for_active(&dir.path().join("audit.log"));
        for name in [
            n.closed_name(2001) + ".gz",
            n.closed_name(1),
            n.closed_name(1001),
            n.closed_name(1001) + ".gz", // an interrupted compression: the plain file wins
            "audit.log".into(),
            "audit.log.000000003001.gz.tmp".into(),
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = list(&n).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "audit.log.000000000001",
                "audit.log.000000001001",
                "audit.log.000000002001.gz",
                "audit.log"
            ]
        );
        let from_dir: Vec<String> = list_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(from_dir, names);
        // Other files beside the log are not the log's.
        std::fs::write(dir.path().join("tollgate.toml"), "[audit]\n").unwrap();
        assert_eq!(list_dir(dir.path()).unwrap().len(), 4);
        std::fs::write(dir.path().join("other.log"), "{\"seq\":1}\n").unwrap();
        let err = list_dir(dir.path()).unwrap_err();
        assert!(err.contains("several logs (audit.log, other.log)"), "{err}");
    }

    #[test]
    fn given_files_are_put_in_chain_order() {
        let given: Vec<PathBuf> = [
            "x/audit.log",
            "x/audit.log.000000001001",
            "x/audit.log.000000000001.gz",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let names: Vec<String> = order_given(&given).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "audit.log.000000000001.gz",
                "audit.log.000000001001",
                "audit.log"
            ]
        );
    }
}
