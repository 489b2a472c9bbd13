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
    pub protocol: &'static str,
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

#[derive(Serialize)]
struct Wire<'a> {
    seq: u64,
    ts: String,
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
    prev_hash: &'a str,
}

impl AuditEvent {
    /// The record as JSON without its closing brace and `hash` (the log appends both).
    pub(super) fn to_json_body(&self, seq: u64, prev_hash: &str) -> String {
        let wire = Wire {
            seq,
            ts: now_rfc3339(),
            kind: self.kind,
            ref_seq: self.ref_seq,
            agent: &self.agent,
            protocol: self.protocol,
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
            prev_hash,
        };
        let mut json = serde_json::to_string(&wire).expect("audit record serialises");
        json.pop(); // the closing '}'
        json
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    now.format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}
