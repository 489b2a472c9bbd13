//! One audit record: the fields DESIGN.md names, serialised in a fixed order.

use serde::Serialize;

/// What tollgate decided about a statement (or what happened to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    #[default]
    Allowed,
    Masked,
    Rewritten,
    Blocked,
    WouldBlock,
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Masked => "masked",
            Decision::Rewritten => "rewritten",
            Decision::Blocked => "blocked",
            Decision::WouldBlock => "would_block",
            Decision::Error => "error",
        }
    }
}

/// The door a session came through: in audit records, metric labels and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Postgres,
    Redis,
    /// Model Context Protocol tools (`src/mcp/`), whichever kind of upstream they reach.
    Mcp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Postgres, Protocol::Redis, Protocol::Mcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Redis => "redis",
            Protocol::Mcp => "mcp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `decision` records are written before a statement is forwarded; `outcome` records after it
/// finished (linked by `ref_seq`); `session` records mark logins and refused connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    #[default]
    Decision,
    Outcome,
    Session,
}

/// The caller's half of a record; `ts`, `seq`, `prev_hash` and `hash` are added by the log.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub kind: EventKind,
    pub ref_seq: Option<u64>,
    pub agent: String,
    pub protocol: Protocol,
    pub upstream: Option<String>,
    pub session: u64,
    pub client_addr: Option<String>,
    pub statement: Option<String>,
    pub decision: Decision,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub rows: Option<u64>,
    pub duration_us: Option<u64>,
    pub sqlstate: Option<String>,
    pub error: Option<String>,
}

/// The fields between `seq` and `prev_hash`, which the log adds under its lock.
#[derive(Serialize)]
struct Wire<'a> {
    ts: &'a str,
    kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    ref_seq: Option<u64>,
    agent: &'a str,
    protocol: &'a str,
    upstream: Option<&'a str>,
    session: u64,
    client_addr: Option<&'a str>,
    statement: Option<&'a str>,
    decision: Decision,
    rule: Option<&'a str>,
    reason: Option<&'a str>,
    rows: Option<u64>,
    duration_us: Option<u64>,
    sqlstate: Option<&'a str>,
    error: Option<&'a str>,
}

impl AuditEvent {
    /// The record's own fields as JSON members (`"ts":...,"error":...`, no braces), written
    /// before the log's lock is taken: the chain adds `seq` in front and `prev_hash` and `hash`
    /// behind.
    pub(super) fn fields_json(&self) -> Vec<u8> {
        let mut ts = [0u8; TS_LEN];
        let wire = Wire {
            ts: format_ts(std::time::SystemTime::now(), &mut ts),
            kind: self.kind,
            ref_seq: self.ref_seq,
            agent: &self.agent,
            protocol: self.protocol.as_str(),
            upstream: self.upstream.as_deref(),
            session: self.session,
            client_addr: self.client_addr.as_deref(),
            statement: self.statement.as_deref(),
            decision: self.decision,
            rule: self.rule.as_deref(),
            reason: self.reason.as_deref(),
            rows: self.rows,
            duration_us: self.duration_us,
            sqlstate: self.sqlstate.as_deref(),
            error: self.error.as_deref(),
        };
        let mut out = Vec::with_capacity(384);
        serde_json::to_writer(&mut out, &wire).expect("audit record serialises");
        out.pop(); // '}'
        out.remove(0); // '{'
        out
    }
}

/// `2026-11-23T10:11:12.123456Z`
const TS_LEN: usize = 27;

/// The UTC time as RFC 3339 with microseconds, written by hand: the `time` crate's formatter
/// cost more than the rest of a record's serialisation on the statement path.
fn format_ts(now: std::time::SystemTime, buf: &mut [u8; TS_LEN]) -> &str {
    let d = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(d.subsec_micros()));
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        buf[i] = c;
    }
    std::str::from_utf8(buf).expect("ASCII digits")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_the_time_crate() {
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        for secs in [
            0u64,
            59,
            86_399,
            951_782_400, // 2000-02-29
            1_709_251_199,
            1_795_000_000,
            4_102_444_800, // 2100-01-01
        ] {
            for micros in [0u32, 1, 999_999] {
                let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000 + 999);
                let mut buf = [0u8; TS_LEN];
                let expected = time::OffsetDateTime::from(t).format(&fmt).unwrap();
                assert_eq!(format_ts(t, &mut buf), expected, "{secs}.{micros}");
            }
        }
    }
}
