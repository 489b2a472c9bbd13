//! One audit record: the fields DESIGN.md names, serialised in a fixed order.

use serde::Serialize;

use super::json;

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
    /// Serialised (and labelled in metrics) as `mongodb`.
    #[serde(rename = "mongodb")]
    Mongo,
    /// Model Context Protocol tools (`src/mcp/`), whichever kind of upstream they reach.
    Mcp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Postgres,
        Protocol::Redis,
        Protocol::Mongo,
        Protocol::Mcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Redis => "redis",
            Protocol::Mongo => "mongodb",
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
    /// Shared with the session (no copy per record: a statement writes two).
    pub agent: std::sync::Arc<str>,
    pub protocol: Protocol,
    pub upstream: Option<std::sync::Arc<str>>,
    pub session: u64,
    pub client_addr: Option<std::sync::Arc<str>>,
    pub statement: Option<String>,
    pub decision: Decision,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub rows: Option<u64>,
    pub duration_us: Option<u64>,
    pub sqlstate: Option<String>,
    pub error: Option<String>,
    /// `agent` through `client_addr` as [`AuditEvent::who_members`] renders them: a session
    /// renders its own once, not per record. Must agree with those fields.
    pub who: Option<std::sync::Arc<[u8]>>,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Outcome => "outcome",
            EventKind::Session => "session",
        }
    }
}

impl AuditEvent {
    /// Calls `f` with the record's own fields as JSON members (`"ts":...,"error":...`, no
    /// braces), encoded into a buffer the thread reuses (no allocation per record), before the
    /// log's lock is taken: the chain adds `seq` in front and `prev_hash` and `hash` behind.
    /// Written by hand in a fixed order (what serde_json made of the same fields, with the
    /// characters that steer a terminal escaped too, `json::string`: a test keeps it so), because a general serializer was a visible share of a
    /// pipelined Redis command's cost.
    pub(super) fn with_fields<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut ts = [0u8; TS_LEN];
        let ts = format_ts(std::time::SystemTime::now(), &mut ts);
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                self.write_fields(ts, &mut out);
                let r = f(&out);
                if out.capacity() > 64 * 1024 {
                    // A huge statement does not keep its buffer for the thread's lifetime.
                    *out = Vec::new();
                }
                r
            }
            // Only if `f` itself appended a record on this thread: a buffer of its own.
            Err(_) => {
                let mut out = Vec::with_capacity(512);
                self.write_fields(ts, &mut out);
                f(&out)
            }
        })
    }

    fn write_fields(&self, ts: &str, out: &mut Vec<u8>) {
        json::key(out, "ts");
        json::plain(out, ts);
        out.push(b',');
        json::key(out, "kind");
        json::plain(out, self.kind.as_str());
        if let Some(r) = self.ref_seq {
            out.push(b',');
            json::key(out, "ref_seq");
            json::number(out, r);
        }
        out.push(b',');
        match &self.who {
            Some(who) => out.extend_from_slice(who),
            None => self.write_who(out),
        }
        out.push(b',');
        json::key(out, "statement");
        json::opt_string(out, self.statement.as_deref());
        out.push(b',');
        json::key(out, "decision");
        json::plain(out, self.decision.as_str());
        out.push(b',');
        json::key(out, "rule");
        json::opt_string(out, self.rule.as_deref());
        out.push(b',');
        json::key(out, "reason");
        json::opt_string(out, self.reason.as_deref());
        out.push(b',');
        json::key(out, "rows");
        json::opt_number(out, self.rows);
        out.push(b',');
        json::key(out, "duration_us");
        json::opt_number(out, self.duration_us);
        out.push(b',');
        json::key(out, "sqlstate");
        json::opt_string(out, self.sqlstate.as_deref());
        out.push(b',');
        json::key(out, "error");
        json::opt_string(out, self.error.as_deref());
    }
}

impl AuditEvent {
    /// The members `agent` through `client_addr` of this event, for [`AuditEvent::who`].
    pub fn who_members(&self) -> std::sync::Arc<[u8]> {
        let mut out = Vec::with_capacity(160);
        self.write_who(&mut out);
        out.into()
    }

    fn write_who(&self, out: &mut Vec<u8>) {
        json::key(out, "agent");
        json::string(out, &self.agent);
        out.push(b',');
        json::key(out, "protocol");
        json::plain(out, self.protocol.as_str());
        out.push(b',');
        json::key(out, "upstream");
        json::opt_string(out, self.upstream.as_deref());
        out.push(b',');
        json::key(out, "session");
        json::number(out, self.session);
        out.push(b',');
        json::key(out, "client_addr");
        json::opt_string(out, self.client_addr.as_deref());
    }
}

/// `2026-11-23T10:11:12.123456Z`
pub(super) const TS_LEN: usize = 27;

/// The UTC time as RFC 3339 with microseconds, written by hand: the `time` crate's formatter
/// cost more than the rest of a record's serialisation on the statement path.
pub(super) fn format_ts(now: std::time::SystemTime, buf: &mut [u8; TS_LEN]) -> &str {
    thread_local! {
        /// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.` text: the
        /// calendar is worked out once per second, not per record.
        static LAST: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let d = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let put = |buf: &mut [u8], at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    let (last, mut head) = LAST.get();
    if last != secs {
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        put(&mut head, 0, 4, year as u64);
        put(&mut head, 5, 2, u64::from(month));
        put(&mut head, 8, 2, u64::from(day));
        put(&mut head, 11, 2, rem / 3600);
        put(&mut head, 14, 2, rem / 60 % 60);
        put(&mut head, 17, 2, rem % 60);
        for (i, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ] {
            head[i] = c;
        }
        LAST.set((secs, head));
    }
    buf[..20].copy_from_slice(&head);
    put(buf, 20, 6, u64::from(d.subsec_micros()));
    buf[26] = b'Z';
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
    use proptest::prelude::*;

    /// The serde form the log used before the hand-written encoder: lines must not change.
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

    fn serde_form(e: &AuditEvent, ts: &str) -> Vec<u8> {
        let wire = Wire {
            ts,
            kind: e.kind,
            ref_seq: e.ref_seq,
            agent: &e.agent,
            protocol: e.protocol.as_str(),
            upstream: e.upstream.as_deref(),
            session: e.session,
            client_addr: e.client_addr.as_deref(),
            statement: e.statement.as_deref(),
            decision: e.decision,
            rule: e.rule.as_deref(),
            reason: e.reason.as_deref(),
            rows: e.rows,
            duration_us: e.duration_us,
            sqlstate: e.sqlstate.as_deref(),
            error: e.error.as_deref(),
        };
        let mut out = serde_json::to_vec(&wire).unwrap();
        out.pop();
        out.remove(0);
        out
    }

    fn arb_event() -> impl Strategy<Value = AuditEvent> {
        let text = proptest::option::of(any::<String>());
        let kinds = prop_oneof![
            Just(EventKind::Decision),
            Just(EventKind::Outcome),
            Just(EventKind::Session)
        ];
        let decisions = prop_oneof![
            Just(Decision::Allowed),
            Just(Decision::Masked),
            Just(Decision::Rewritten),
            Just(Decision::Blocked),
            Just(Decision::WouldBlock),
            Just(Decision::Error)
        ];
        (
            (kinds, proptest::option::of(any::<u64>()), any::<String>()),
            (any::<bool>(), text.clone(), any::<u64>(), text.clone()),
            (text.clone(), decisions, text.clone(), text.clone()),
            (
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
                text.clone(),
                text,
            ),
        )
            .prop_map(
                |(
                    (kind, ref_seq, agent),
                    (redis, upstream, session, client_addr),
                    (statement, decision, rule, reason),
                    (rows, duration_us, sqlstate, error),
                )| AuditEvent {
                    kind,
                    ref_seq,
                    agent: agent.into(),
                    protocol: if redis {
                        Protocol::Redis
                    } else {
                        Protocol::Postgres
                    },
                    upstream: upstream.map(Into::into),
                    session,
                    client_addr: client_addr.map(Into::into),
                    statement,
                    decision,
                    rule,
                    reason,
                    rows,
                    duration_us,
                    sqlstate,
                    error,
                    who: None,
                },
            )
    }

    proptest! {
        #[test]
        fn hand_encoding_is_serde_with_steering_characters_escaped(e in arb_event()) {
            let ts = "2026-12-05T10:11:12.123456Z";
            let mut ours = Vec::new();
            e.write_fields(ts, &mut ours);
            let serde = String::from_utf8(serde_form(&e, ts)).unwrap();
            prop_assert_eq!(String::from_utf8(ours.clone()).unwrap(), super::super::json::steering_escaped(&serde));
            // A session's members rendered once give the same line.
            let rendered = AuditEvent { who: Some(e.who_members()), ..e };
            let mut again = Vec::new();
            rendered.write_fields(ts, &mut again);
            prop_assert_eq!(again, ours);
        }
    }

    #[test]
    fn timestamps_match_the_time_crate() {
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        let seconds = [
            0u64,
            59,
            86_399,
            951_782_400, // 2000-02-29
            1_709_251_199,
            1_795_000_000,
            4_102_444_800, // 2100-01-01
        ];
        // Forwards, then backwards: the per-second cache must follow the clock either way.
        for secs in seconds.into_iter().chain(seconds.into_iter().rev()) {
            for micros in [0u32, 1, 999_999] {
                let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000 + 999);
                let mut buf = [0u8; TS_LEN];
                let expected = time::OffsetDateTime::from(t).format(&fmt).unwrap();
                assert_eq!(format_ts(t, &mut buf), expected, "{secs}.{micros}");
            }
        }
    }
}
