//! Mask strategies for Redis values: pure functions from the real bytes to what the agent sees.

use bytes::Bytes;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A fixed text: `[REDACTED]`.
    Redact,
    /// `***@domain` (the domain of an e-mail address is kept; anything else is redacted).
    Email,
    /// `sha256:` and the first 16 hex digits of the value's SHA-256 (equal values stay equal).
    Hash,
}

pub const REDACTED: &str = "[REDACTED]";

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["redact", "email", "hash"];

    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "redact" => Some(Strategy::Redact),
            "email" => Some(Strategy::Email),
            "hash" => Some(Strategy::Hash),
            _ => None,
        }
    }

    /// How little the strategy reveals: where two rules mask one value, the higher wins (as
    /// for PostgreSQL columns: `redact` > `hash` > `email`).
    pub fn strictness(self) -> u8 {
        match self {
            Strategy::Redact => 3,
            Strategy::Hash => 2,
            Strategy::Email => 1,
        }
    }

    /// The stricter of two strategies.
    pub fn stricter(self, other: Strategy) -> Strategy {
        if other.strictness() > self.strictness() {
            other
        } else {
            self
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Redact => "redact",
            Strategy::Email => "email",
            Strategy::Hash => "hash",
        }
    }

    pub fn apply(self, value: &[u8]) -> Bytes {
        match self {
            Strategy::Redact => Bytes::from_static(REDACTED.as_bytes()),
            Strategy::Email => match value.iter().rposition(|&b| b == b'@') {
                Some(at) if at > 0 && at + 1 < value.len() => {
                    let mut out = b"***".to_vec();
                    out.extend_from_slice(&value[at..]);
                    Bytes::from(out)
                }
                _ => Bytes::from_static(REDACTED.as_bytes()),
            },
            Strategy::Hash => {
                let digest = Sha256::digest(value);
                Bytes::from(format!("sha256:{}", hex::encode(&digest[..8])))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies() {
        for (s, input, out) in [
            (Strategy::Redact, "x", "[REDACTED]"),
            (Strategy::Email, "ann@example.com", "***@example.com"),
            (Strategy::Email, "not-an-email", "[REDACTED]"),
            (Strategy::Email, "@x", "[REDACTED]"),
            (Strategy::Email, "a@", "[REDACTED]"),
        ] {
            assert_eq!(s.apply(input.as_bytes()), out.as_bytes(), "{s:?} {input}");
        }
        let h = Strategy::Hash.apply(b"secret");
        assert!(h.starts_with(b"sha256:") && h.len() == 23);
        assert_eq!(h, Strategy::Hash.apply(b"secret"));
    }
}
