//! One line of the log checked on its own: its hash recomputed, its chain members read.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::audit::chain::{hex_lower, HexHash, LostKinds};

#[derive(Debug, Clone)]
pub struct ChainFields {
    pub seq: u64,
    pub prev_hash: HexHash,
    pub hash: HexHash,
    pub kind: Option<String>,
    pub prev_file: Option<String>,
    pub lost_from: Option<u64>,
    pub lost_to: Option<u64>,
    /// What the lost records were (absent in logs written before they were counted).
    pub lost_kinds: Option<LostKinds>,
    pub error: Option<String>,
    pub exporter: Option<String>,
    pub dropped: Option<u64>,
    pub removed_file: Option<String>,
    /// `tail_cut`: the bytes cut, and the cut line's number if it was readable.
    pub cut_bytes: Option<u64>,
    pub cut_seq: Option<u64>,
}

#[derive(Deserialize)]
struct Members {
    seq: Option<u64>,
    prev_hash: Option<String>,
    kind: Option<String>,
    prev_file: Option<String>,
    lost_from: Option<u64>,
    lost_to: Option<u64>,
    lost_decisions: Option<u64>,
    lost_outcomes: Option<u64>,
    lost_sessions: Option<u64>,
    lost_other: Option<u64>,
    error: Option<String>,
    exporter: Option<String>,
    dropped: Option<u64>,
    removed_file: Option<String>,
    cut_bytes: Option<u64>,
    cut_seq: Option<u64>,
}

fn hex64(s: &str) -> Option<HexHash> {
    let b = s.as_bytes();
    (b.len() == 64
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)))
    .then(|| b.try_into().expect("64 bytes"))
}

/// Checks one line's own hash and extracts its chain members.
pub fn parse_line(line: &[u8]) -> Result<ChainFields, String> {
    const MARK: &[u8] = b",\"hash\":\"";
    let at = memchr::memmem::rfind(line, MARK).ok_or("no hash field")?;
    let hash = line[at + MARK.len()..]
        .strip_suffix(b"\"}")
        .ok_or("the hash is not the last field")?;
    let hash = std::str::from_utf8(hash)
        .ok()
        .and_then(hex64)
        .ok_or("malformed hash")?;
    let mut hasher = Sha256::new();
    hasher.update(&line[..at]);
    hasher.update(b"}");
    let mut computed = [0u8; 64];
    hex_lower(&hasher.finalize(), &mut computed);
    if computed != hash {
        return Err("hash mismatch: the record was altered".into());
    }
    let m: Members = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let prev_hash = m
        .prev_hash
        .as_deref()
        .and_then(hex64)
        .ok_or("no prev_hash")?;
    Ok(ChainFields {
        seq: m.seq.ok_or("no seq")?,
        prev_hash,
        hash,
        kind: m.kind,
        prev_file: m.prev_file,
        lost_from: m.lost_from,
        lost_to: m.lost_to,
        lost_kinds: match (
            m.lost_decisions,
            m.lost_outcomes,
            m.lost_sessions,
            m.lost_other,
        ) {
            (Some(decisions), Some(outcomes), Some(sessions), Some(other)) => Some(LostKinds {
                decisions,
                outcomes,
                sessions,
                other,
            }),
            _ => None,
        },
        error: m.error,
        exporter: m.exporter,
        dropped: m.dropped,
        removed_file: m.removed_file,
        cut_bytes: m.cut_bytes,
        cut_seq: m.cut_seq,
    })
}
