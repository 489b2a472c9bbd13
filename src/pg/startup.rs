//! The startup phase after encryption is settled (`encryption.rs`): CancelRequest, and the
//! startup packet with its parameters checked (protocol 3.0 only, no replication, no unchecked options).

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::backend::PgErrorFields;
use super::frame::{FrameError, FrameReader};
use crate::config::ScramIterations;
use crate::policy::settings::{check_client_setting, parse_startup_options};
use crate::refusal::Refusal;
use crate::session::VerifierStrength;

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;

#[derive(Debug)]
pub enum StartupRequest {
    Cancel { pid: i32, secret: i32 },
    Startup(StartupParams),
}

/// A validated startup packet.
#[derive(Debug, Clone)]
pub struct StartupParams {
    pub user: String,
    pub database: String,
    /// Client settings to pass upstream (already checked against the safe-settings list).
    pub settings: Vec<(String, String)>,
    /// Minor protocol version the client asked for (we speak 3.0 and negotiate down).
    pub minor_version: u16,
    /// `_pq_.*` protocol options the client asked for; all are unsupported.
    pub protocol_options: Vec<String>,
    /// Every parameter is one libpq sends itself (see [`LIBPQ_PARAMETERS`]): the client is
    /// libpq or a driver as lenient about SCRAM iterations.
    pub libpq_parameters_only: bool,
}

/// The startup parameters libpq sends (its `options`, `application_name` and
/// `client_encoding` connection settings). Drivers that send others (pgjdbc: `DateStyle`,
/// `TimeZone`, `extra_float_digits`) may insist on RFC 7677's 4096 SCRAM iterations.
pub const LIBPQ_PARAMETERS: [&str; 6] = [
    "user",
    "database",
    "options",
    "application_name",
    "client_encoding",
    "replication",
];

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("client closed the connection during startup")]
    Closed,
    /// A refusal to report to the client as a FATAL error.
    #[error("{}", .0.message)]
    Refused(PgErrorFields),
    /// A policy refusal of what the startup packet asks (a replication connection, a protected
    /// setting): recorded under `user`, then reported as a FATAL error.
    #[error("{}", .refusal.reason)]
    Denied { user: String, refusal: Refusal },
}

fn fatal(code: &'static str, message: impl Into<String>) -> StartupError {
    StartupError::Refused(PgErrorFields::fatal(code, message))
}

/// The rule named when a startup packet asks for a replication connection.
pub const REPLICATION_RULE: &str = "builtin: replication";
/// The rule named when it sets a protected setting (as `SET` of it is refused).
const SETTING_RULE: &str = "builtin: protected-setting";

fn denied(user: &str, rule: &str, reason: impl Into<String>) -> StartupError {
    StartupError::Denied {
        user: user.to_string(),
        refusal: Refusal::permission(rule, reason),
    }
}

/// Reads the startup packet or cancel request (`first`, when encryption negotiation already
/// read it from a plain connection).
pub async fn negotiate<R>(
    reader: &mut FrameReader<R>,
    first: Option<Bytes>,
) -> Result<StartupRequest, StartupError>
where
    R: AsyncRead + Unpin,
{
    let packet = match first {
        Some(p) => p,
        None => reader
            .next_startup_packet()
            .await?
            .ok_or(StartupError::Closed)?,
    };
    let code = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
    match code {
        // Encryption is negotiated once, before anything else (see `encryption.rs`).
        SSL_REQUEST | GSSENC_REQUEST => Err(fatal(
            "08P01",
            "encryption negotiation requested on an encrypted connection",
        )),
        CANCEL_REQUEST => {
            if packet.len() != 12 {
                return Err(fatal("08P01", "invalid cancel request"));
            }
            let pid = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
            let secret = i32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
            Ok(StartupRequest::Cancel { pid, secret })
        }
        _ => parse_startup(&packet).map(StartupRequest::Startup),
    }
}

/// Each setting once, with the value given last (names compare as PostgreSQL's do, ignoring
/// case), in the order they were given. The settings are sorted into the pool key and sent
/// upstream in that order: a setting given twice would otherwise take whichever value sorts
/// last, and sessions that meant different values would share connections.
fn last_wins(all: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in all {
        out.retain(|(o, _)| !o.eq_ignore_ascii_case(&k));
        out.push((k, v));
    }
    out
}

fn parse_startup(packet: &Bytes) -> Result<StartupParams, StartupError> {
    let major = u16::from_be_bytes([packet[0], packet[1]]);
    let minor = u16::from_be_bytes([packet[2], packet[3]]);
    if major != 3 {
        return Err(fatal(
            "0A000",
            format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"),
        ));
    }
    let pairs = read_pairs(&packet[4..]).ok_or_else(|| {
        fatal(
            "08P01",
            "invalid startup packet layout: expected terminator as last byte",
        )
    })?;
    // Known before the checks below, so what they refuse is recorded under the name given.
    let pairs_user = pairs
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut user = None;
    let mut database = None;
    // PostgreSQL applies `options` first, then the other parameters, each in order: the last
    // value of a setting wins (`last_wins`).
    let mut from_options: Vec<(String, String)> = Vec::new();
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut protocol_options = Vec::new();
    let mut libpq_parameters_only = true;
    for (key, value) in pairs {
        libpq_parameters_only &= LIBPQ_PARAMETERS.contains(&key.as_str());
        match key.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "replication" => {
                if !matches!(
                    value.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ) {
                    return Err(denied(
                        &pairs_user,
                        REPLICATION_RULE,
                        "replication connections are not allowed through tollgate",
                    ));
                }
            }
            "options" => {
                let parsed = parse_startup_options(&value).map_err(|e| fatal("08P01", e))?;
                for (k, v) in parsed {
                    check_client_setting(&k, &v)
                        .map_err(|e| denied(&pairs_user, SETTING_RULE, e))?;
                    from_options.push((k, v));
                }
            }
            k if k.starts_with("_pq_.") => protocol_options.push(k.to_string()),
            k => {
                check_client_setting(k, &value)
                    .map_err(|e| denied(&pairs_user, SETTING_RULE, e))?;
                settings.push((k.to_string(), value));
            }
        }
    }
    let user = user.filter(|u| !u.is_empty()).ok_or_else(|| {
        fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let settings = last_wins(from_options.into_iter().chain(settings));
    Ok(StartupParams {
        user,
        database,
        settings,
        minor_version: minor,
        protocol_options,
        libpq_parameters_only,
    })
}

/// The verifier this client's SCRAM exchange runs against under `setting`.
pub fn scram_strength(setting: ScramIterations, params: &StartupParams) -> VerifierStrength {
    match setting {
        ScramIterations::Auto if params.libpq_parameters_only => VerifierStrength::Login,
        _ => VerifierStrength::Full,
    }
}

/// Key/value C-strings up to an empty key; `None` if the layout or the UTF-8 is invalid.
fn read_pairs(mut body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        let nul = body.iter().position(|&b| b == 0)?;
        if nul == 0 {
            return if body.len() == 1 { Some(out) } else { None };
        }
        let key = std::str::from_utf8(&body[..nul]).ok()?.to_string();
        body = &body[nul + 1..];
        let vnul = body.iter().position(|&b| b == 0)?;
        let value = std::str::from_utf8(&body[..vnul]).ok()?.to_string();
        body = &body[vnul + 1..];
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(pairs: &[(&str, &str)]) -> Bytes {
        let mut v = vec![0, 3, 0, 0];
        for (k, val) in pairs {
            v.extend_from_slice(k.as_bytes());
            v.push(0);
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v.push(0);
        Bytes::from(v)
    }

    fn refused(r: Result<StartupParams, StartupError>) -> PgErrorFields {
        match r {
            Err(StartupError::Refused(f)) => f,
            Err(StartupError::Denied { refusal, .. }) => crate::pg::refusal::fatal(&refusal),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn accepts_what_libpq_and_jdbc_send() {
        let p = parse_startup(&startup(&[
            ("user", "analyst"),
            ("database", "shop"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
        ]))
        .unwrap();
        assert_eq!((p.user.as_str(), p.database.as_str()), ("analyst", "shop"));
        assert_eq!(p.settings.len(), 5);
    }

    #[test]
    fn scram_iterations_follow_the_client_and_the_setting() {
        use ScramIterations::{Auto, Full};
        use VerifierStrength::Login;
        let libpq = parse_startup(&startup(&[
            ("user", "analyst"),
            ("database", "shop"),
            ("application_name", "pgbench"),
            ("client_encoding", "UTF8"),
            ("options", "-c statement_timeout=5s"),
        ]))
        .unwrap();
        assert_eq!(scram_strength(Auto, &libpq), Login);
        assert_eq!(scram_strength(Full, &libpq), VerifierStrength::Full);
        // pgjdbc's startup: it refuses fewer than 4096 iterations.
        let jdbc = parse_startup(&startup(&[
            ("user", "analyst"),
            ("database", "shop"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "2"),
            ("application_name", "PostgreSQL JDBC Driver"),
        ]))
        .unwrap();
        assert_eq!(scram_strength(Auto, &jdbc), VerifierStrength::Full);
        // Any parameter libpq does not send means an unknown driver: full strength.
        let other = parse_startup(&startup(&[("user", "a"), ("TimeZone", "UTC")])).unwrap();
        assert_eq!(scram_strength(Auto, &other), VerifierStrength::Full);
    }

    #[test]
    fn refuses_replication_role_and_unsafe_options() {
        // Policy refusals carry the name given and a rule, so they can be recorded.
        match parse_startup(&startup(&[("replication", "database"), ("user", "a")])) {
            Err(StartupError::Denied { user, refusal }) => {
                assert_eq!(
                    (user.as_str(), refusal.rule.as_str()),
                    ("a", REPLICATION_RULE)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            refused(parse_startup(&startup(&[
                ("user", "a"),
                ("replication", "database")
            ])))
            .code,
            "42501"
        );
        assert_eq!(
            refused(parse_startup(&startup(&[
                ("user", "a"),
                ("role", "postgres")
            ])))
            .code,
            "42501"
        );
        assert_eq!(
            refused(parse_startup(&startup(&[
                ("user", "a"),
                ("options", "-c role=postgres")
            ])))
            .code,
            "42501"
        );
        assert_eq!(
            refused(parse_startup(&startup(&[
                ("user", "a"),
                ("options", "-csearch_path=secret")
            ])))
            .code,
            "42501"
        );
        assert_eq!(
            refused(parse_startup(&startup(&[
                ("user", "a"),
                ("client_encoding", "SJIS")
            ])))
            .code,
            "42501"
        );
        assert_eq!(
            refused(parse_startup(&startup(&[("database", "shop")]))).code,
            "28000"
        );
        let p = parse_startup(&startup(&[
            ("user", "a"),
            ("options", "-c application_name=x --DateStyle=ISO"),
        ]))
        .unwrap();
        assert_eq!(
            p.settings,
            vec![
                ("application_name".into(), "x".into()),
                ("DateStyle".into(), "ISO".into())
            ]
        );
        // A setting given twice: the last value wins, and the parameters come after `options`
        // (a review saw the value that sorted last win, and sessions that meant other values
        // share its connections).
        let p = parse_startup(&startup(&[
            ("user", "a"),
            ("TimeZone", "Europe/Paris"),
            (
                "options",
                "-c TimeZone=Asia/Tokyo -c timezone=UTC -c DateStyle=ISO",
            ),
        ]))
        .unwrap();
        assert_eq!(
            p.settings,
            vec![
                ("DateStyle".into(), "ISO".into()),
                ("TimeZone".into(), "Europe/Paris".into())
            ]
        );
        let p = parse_startup(&startup(&[
            ("user", "a"),
            ("options", "-c TimeZone=UTC -c TimeZone=Asia/Tokyo"),
        ]))
        .unwrap();
        assert_eq!(p.settings, vec![("TimeZone".into(), "Asia/Tokyo".into())]);
    }

    #[test]
    fn malformed_packets_are_refused_without_panicking() {
        for body in [
            &[0u8, 3, 0, 0][..],
            &[0, 3, 0, 0, b'u', 0],
            &[0, 3, 0, 0, b'u', 0, b'x', 0],
            &[0, 3, 0, 0, 0xff, 0, 0, 0],
        ] {
            assert_eq!(
                refused(parse_startup(&Bytes::copy_from_slice(body))).code,
                "08P01"
            );
        }
        assert_eq!(
            refused(parse_startup(&Bytes::from_static(&[0, 2, 0, 0, 0]))).code,
            "0A000"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any startup packet body gives parameters or a refusal, never a panic.
        #[test]
        fn arbitrary_startup_packets_never_panic(body in proptest::collection::vec(any::<u8>(), 4..300)) {
            let _ = parse_startup(&Bytes::from(body));
        }

        /// Structured packets with arbitrary keys and values.
        #[test]
        fn arbitrary_parameters_never_panic(pairs in proptest::collection::vec((".{0,20}", ".{0,40}"), 0..8)) {
            let mut v = vec![0, 3, 0, 0];
            for (k, val) in &pairs {
                v.extend_from_slice(k.as_bytes());
                v.push(0);
                v.extend_from_slice(val.as_bytes());
                v.push(0);
            }
            v.push(0);
            let _ = parse_startup(&Bytes::from(v));
        }
    }
}
