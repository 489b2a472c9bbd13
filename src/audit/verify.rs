//! `tollgate audit verify`: recompute the hash chain and report the first broken record.

use std::io::{BufRead, BufReader};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::GENESIS_HASH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRecord {
    /// 1-based line number in the file.
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked, up to and including the first broken one.
    pub records: usize,
    pub first_broken: Option<BrokenRecord>,
}

/// The chain fields of one line, after its own hash was checked.
pub(super) struct ChainFields {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
}

/// Checks one line's own hash and extracts its chain fields.
pub(super) fn parse_line(line: &str) -> Result<ChainFields, String> {
    const MARK: &str = ",\"hash\":\"";
    let at = line.rfind(MARK).ok_or("no hash field")?;
    let tail = &line[at + MARK.len()..];
    let hash = tail
        .strip_suffix("\"}")
        .ok_or("the hash is not the last field")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("malformed hash".into());
    }
    let body = format!("{}}}", &line[..at]);
    let computed = hex::encode(Sha256::digest(body.as_bytes()));
    if computed != hash {
        return Err("hash mismatch: the record was altered".into());
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let seq = value["seq"].as_u64().ok_or("no seq")?;
    let prev_hash = value["prev_hash"]
        .as_str()
        .ok_or("no prev_hash")?
        .to_string();
    Ok(ChainFields {
        seq,
        prev_hash,
        hash: hash.to_string(),
    })
}

pub fn verify_file(path: &Path) -> std::io::Result<VerifyReport> {
    let reader = BufReader::new(std::fs::File::open(path)?);
    let mut expected_prev = GENESIS_HASH.to_string();
    let mut expected_seq: Option<u64> = None;
    let mut records = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        records += 1;
        let broken = |reason: String| VerifyReport {
            records,
            first_broken: Some(BrokenRecord {
                line: i + 1,
                reason,
            }),
        };
        let fields = match parse_line(&line) {
            Ok(f) => f,
            Err(reason) => return Ok(broken(reason)),
        };
        if let Some(seq) = expected_seq {
            if fields.seq != seq {
                return Ok(broken(format!(
                    "expected seq {seq}, found {} (a record is missing)",
                    fields.seq
                )));
            }
        }
        if fields.prev_hash != expected_prev {
            return Ok(broken(
                "prev_hash does not match the previous record (a record is missing or reordered)"
                    .into(),
            ));
        }
        expected_prev = fields.hash;
        expected_seq = Some(fields.seq + 1);
    }
    Ok(VerifyReport {
        records,
        first_broken: None,
    })
}
