//! One line of the chain: `{"seq":N,<fields>,"prev_hash":H(N-1),"hash":H(N)}`, where `H(N)` is
//! the SHA-256 (lower-case hex) of the line up to `,"hash"` closed with `}`; and the fields of the
//! log's own records (rotation links, write failures, export gaps).

use sha2::{Digest, Sha256};

use super::json;
use super::record::{format_ts, TS_LEN};

/// A record hash as the 64 lower-case hex digits the lines carry.
pub type HexHash = [u8; 64];

/// The hash that precedes the first record of a log.
pub const GENESIS: HexHash = [b'0'; 64];

/// Appends the line for `seq` with `fields` chained after `prev`, and returns its hash.
/// Hashes the bytes in place: no copy of the line is made.
pub fn render(buf: &mut Vec<u8>, seq: u64, fields: &[u8], prev: &HexHash) -> HexHash {
    let start = buf.len();
    buf.reserve(fields.len() + FIXED_LEN + 20);
    buf.extend_from_slice(b"{\"seq\":");
    json::number(buf, seq);
    buf.push(b',');
    buf.extend_from_slice(fields);
    buf.extend_from_slice(b",\"prev_hash\":\"");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(b"\"}");
    let digest = Sha256::digest(&buf[start..]);
    buf.pop();
    let mut hash = [0u8; 64];
    hex_lower(&digest, &mut hash);
    buf.extend_from_slice(b",\"hash\":\"");
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(b"\"}\n");
    hash
}

/// Bytes a line adds around its fields, besides the digits of `seq`.
const FIXED_LEN: usize = r#"{"seq":,,"prev_hash":"","hash":""}"#.len() + 64 + 64 + 1;

/// The length of the line `render` makes for `seq` and fields of `fields_len` bytes.
pub fn line_len(seq: u64, fields_len: usize) -> usize {
    let digits = seq.checked_ilog10().map_or(1, |d| d as usize + 1);
    FIXED_LEN + digits + fields_len
}

pub fn hex_lower(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

/// The `seq` of a line (its first member).
pub fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The `kind` of a line written by this log (members start `"ts":"…","kind":"`).
pub fn line_kind(line: &[u8]) -> Option<&[u8]> {
    let at = memchr::memmem::find(line, b",\"kind\":\"")? + 9;
    let len = memchr::memchr(b'"', &line[at..])?;
    Some(&line[at..at + len])
}

/// Records the log writes about itself. Each starts with `ts` and `kind` like every record;
/// the first record of a file that continues another one names it in `prev_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemRecord {
    /// The first record of a file after a rotation.
    Rotation,
    /// A rotation was due but could not be done; the file goes on.
    RotationFailed { error: String },
    /// Records `from..=to` (this record takes number `to`) could not be written; `kinds` says
    /// what they were (see [`LostKinds`]: a lost decision's statement was refused, a lost
    /// outcome's statement had run).
    Lost {
        from: u64,
        to: u64,
        error: String,
        kinds: LostKinds,
    },
    /// At start the active file ended with an incomplete line (the machine stopped during a
    /// write: the log does not fsync) and was cut back to its last complete record; `line` is
    /// the start of what was cut (up to 4 KiB, read lossily), `seq` its number if readable.
    TailCut {
        bytes: u64,
        seq: Option<u64>,
        line: String,
    },
    /// Retention is about to delete a closed file (the oldest): the chain's new start is
    /// explained, so a deleted first file that retention did not delete is detected.
    Retention { removed_file: String },
    /// An exporter dropped records `first_seq..=last_seq` (`dropped` of them) because its queue
    /// was full; the local log still has them.
    ExportGap {
        exporter: String,
        dropped: u64,
        first_seq: u64,
        last_seq: u64,
    },
    /// The active file was removed or moved while open (found within a second): records up to
    /// `written_upto` went to it; this record starts a new active file under the name.
    FileReplaced { written_upto: u64 },
    /// The gateway started serving: from here on `session` numbers start again at 1.
    Start { version: String, pid: u32 },
    /// The gateway stopped after a drain; `forced` sessions were still open at its deadline
    /// (or at a second signal) and were closed. A `start` with no `stop` before the next one:
    /// the process ended without draining (killed, crashed, or its listeners failed to start).
    Stop { forced: u64 },
    /// An action through the admin API (reload, audit rotation, connector test): written
    /// before it runs (`outcome: "started"`) and after (`ok`/`failed`, with `ref_seq` naming the
    /// first), under the admin token's name, never the token.
    Admin(AdminAction),
}

/// What the records lost in a failed write were, by kind: what became of what they record
/// differs. A statement is forwarded only once its decision record is written, so a lost
/// decision's statement was refused and never ran; an outcome is written after its statement
/// ran (its decision record is in the log), so a lost outcome leaves only the outcome's details
/// (rows, duration, error) missing. Session records are best effort: a login went ahead or was
/// refused as decided. `other` counts admin actions and the log's own records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostKinds {
    pub decisions: u64,
    pub outcomes: u64,
    pub sessions: u64,
    pub other: u64,
}

impl LostKinds {
    /// Counts one record by the fields it was to be written with.
    pub fn count_fields(&mut self, fields: &[u8]) {
        match line_kind(fields) {
            Some(b"decision") => self.decisions += 1,
            Some(b"outcome") => self.outcomes += 1,
            Some(b"session") => self.sessions += 1,
            _ => self.other += 1,
        }
    }

    pub fn add(&mut self, more: &LostKinds) {
        self.decisions += more.decisions;
        self.outcomes += more.outcomes;
        self.sessions += more.sessions;
        self.other += more.other;
    }

    pub fn total(&self) -> u64 {
        self.decisions + self.outcomes + self.sessions + self.other
    }
}

/// The members of an `admin` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAction {
    /// For the record written after the action: the `seq` of the one written before.
    pub ref_seq: Option<u64>,
    /// The admin token's name.
    pub admin: String,
    pub client_addr: Option<String>,
    /// `reload`, `audit_rotate`, `connector_test`.
    pub action: String,
    /// What the action was on (a connector id), if anything.
    pub target: Option<String>,
    /// `started`, `ok` or `failed`.
    pub outcome: String,
    /// Why it failed, in tollgate's words (never server text or secrets).
    pub error: Option<String>,
}

pub const KIND_ROTATION: &str = "rotation";
pub const KIND_ROTATION_FAILED: &str = "rotation_failed";
pub const KIND_LOST: &str = "lost";
pub const KIND_TAIL_CUT: &str = "tail_cut";
pub const KIND_EXPORT_GAP: &str = "export_gap";
pub const KIND_RETENTION: &str = "retention";
pub const KIND_ADMIN: &str = "admin";
pub const KIND_START: &str = "start";
pub const KIND_FILE_REPLACED: &str = "file_replaced";
pub const KIND_STOP: &str = "stop";

impl SystemRecord {
    pub fn kind(&self) -> &'static str {
        match self {
            SystemRecord::Rotation => KIND_ROTATION,
            SystemRecord::RotationFailed { .. } => KIND_ROTATION_FAILED,
            SystemRecord::Lost { .. } => KIND_LOST,
            SystemRecord::TailCut { .. } => KIND_TAIL_CUT,
            SystemRecord::ExportGap { .. } => KIND_EXPORT_GAP,
            SystemRecord::Retention { .. } => KIND_RETENTION,
            SystemRecord::Admin(_) => KIND_ADMIN,
            SystemRecord::Start { .. } => KIND_START,
            SystemRecord::FileReplaced { .. } => KIND_FILE_REPLACED,
            SystemRecord::Stop { .. } => KIND_STOP,
        }
    }

    /// The record's fields (between `seq` and `prev_hash`).
    pub fn fields(&self, now: std::time::SystemTime, prev_file: Option<&str>) -> Vec<u8> {
        let mut ts = [0u8; TS_LEN];
        let mut out = Vec::with_capacity(160);
        json::key(&mut out, "ts");
        json::string(&mut out, format_ts(now, &mut ts));
        out.push(b',');
        json::key(&mut out, "kind");
        json::string(&mut out, self.kind());
        if let Some(p) = prev_file {
            out.push(b',');
            json::key(&mut out, "prev_file");
            json::string(&mut out, p);
        }
        let num = |out: &mut Vec<u8>, k: &str, v: u64| {
            out.push(b',');
            json::key(out, k);
            json::number(out, v);
        };
        let text = |out: &mut Vec<u8>, k: &str, v: &str| {
            out.push(b',');
            json::key(out, k);
            json::string(out, v);
        };
        let opt_text = |out: &mut Vec<u8>, k: &str, v: Option<&str>| {
            out.push(b',');
            json::key(out, k);
            json::opt_string(out, v);
        };
        match self {
            SystemRecord::Rotation => {}
            SystemRecord::Admin(a) => {
                if let Some(r) = a.ref_seq {
                    num(&mut out, "ref_seq", r);
                }
                text(&mut out, "admin", &a.admin);
                opt_text(&mut out, "client_addr", a.client_addr.as_deref());
                text(&mut out, "action", &a.action);
                opt_text(&mut out, "target", a.target.as_deref());
                text(&mut out, "outcome", &a.outcome);
                opt_text(&mut out, "error", a.error.as_deref());
            }
            SystemRecord::Start { version, pid } => {
                text(&mut out, "version", version);
                num(&mut out, "pid", u64::from(*pid));
            }
            SystemRecord::Stop { forced } => num(&mut out, "forced", *forced),
            SystemRecord::FileReplaced { written_upto } => {
                num(&mut out, "written_upto", *written_upto)
            }
            SystemRecord::Retention { removed_file } => {
                text(&mut out, "removed_file", removed_file)
            }
            SystemRecord::RotationFailed { error } => text(&mut out, "error", error),
            SystemRecord::Lost {
                from,
                to,
                error,
                kinds,
            } => {
                num(&mut out, "lost_from", *from);
                num(&mut out, "lost_to", *to);
                num(&mut out, "lost_decisions", kinds.decisions);
                num(&mut out, "lost_outcomes", kinds.outcomes);
                num(&mut out, "lost_sessions", kinds.sessions);
                num(&mut out, "lost_other", kinds.other);
                text(&mut out, "error", error);
            }
            SystemRecord::TailCut { bytes, seq, line } => {
                num(&mut out, "cut_bytes", *bytes);
                if let Some(s) = seq {
                    num(&mut out, "cut_seq", *s);
                }
                text(&mut out, "cut_line", line);
            }
            SystemRecord::ExportGap {
                exporter,
                dropped,
                first_seq,
                last_seq,
            } => {
                text(&mut out, "exporter", exporter);
                num(&mut out, "dropped", *dropped);
                num(&mut out, "first_seq", *first_seq);
                num(&mut out, "last_seq", *last_seq);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_hashes_its_own_text_and_knows_its_length() {
        let mut buf = b"previous line\n".to_vec();
        let fields = br#""ts":"2026-12-05T10:00:00.000000Z","kind":"decision""#;
        for seq in [1u64, 9, 10, 12_345, u64::MAX] {
            buf.truncate(14);
            let hash = render(&mut buf, seq, fields, &GENESIS);
            let line = &buf[14..];
            assert_eq!(line.len(), line_len(seq, fields.len()), "seq {seq}");
            assert_eq!(line_seq(line), Some(seq));
            assert_eq!(line_kind(line), Some(&b"decision"[..]));
            let text = std::str::from_utf8(line).unwrap().trim_end();
            let body = format!("{}}}", &text[..text.rfind(",\"hash\"").unwrap()]);
            assert_eq!(
                hex::encode(Sha256::digest(body.as_bytes())).as_bytes(),
                &hash[..]
            );
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["prev_hash"], String::from_utf8(GENESIS.to_vec()).unwrap());
        }
    }

    #[test]
    fn system_records_are_json_members() {
        let now = std::time::UNIX_EPOCH;
        let rec = SystemRecord::Lost {
            from: 5,
            to: 9,
            error: "No space left on device (os error 28)".into(),
            kinds: LostKinds {
                decisions: 2,
                outcomes: 1,
                sessions: 1,
                other: 1,
            },
        };
        let f = rec.fields(now, Some("audit.log.000000000001"));
        let v: serde_json::Value =
            serde_json::from_slice(&[b"{".as_slice(), &f, b"}"].concat()).unwrap();
        assert_eq!(v["kind"], "lost");
        assert_eq!(v["prev_file"], "audit.log.000000000001");
        assert_eq!(
            (v["lost_from"].as_u64(), v["lost_to"].as_u64()),
            (Some(5), Some(9))
        );
        assert_eq!(
            [
                &v["lost_decisions"],
                &v["lost_outcomes"],
                &v["lost_sessions"],
                &v["lost_other"]
            ],
            [2, 1, 1, 1]
        );
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000Z");
        let rec = SystemRecord::Admin(AdminAction {
            ref_seq: Some(41),
            admin: "ops \"x\"".into(),
            client_addr: None,
            action: "reload".into(),
            target: None,
            outcome: "failed".into(),
            error: Some("policies".into()),
        });
        let f = rec.fields(now, None);
        let v: serde_json::Value =
            serde_json::from_slice(&[b"{".as_slice(), &f, b"}"].concat()).unwrap();
        assert_eq!(v["kind"], "admin");
        assert_eq!(v["ref_seq"], 41);
        assert_eq!(v["admin"], "ops \"x\"");
        assert_eq!(v["client_addr"], serde_json::Value::Null);
        assert_eq!(
            (&v["action"], &v["outcome"], &v["error"]),
            (&"reload".into(), &"failed".into(), &"policies".into())
        );
    }
}
