//! Session settings a client may choose (startup packet, `options`, `SET`), and how.
//!
//! Settings that change how PostgreSQL reads SQL text (standard_conforming_strings, client-only
//! encodings such as SJIS whose multibyte characters can swallow a quote or backslash) would make
//! the analyser and the server disagree about a statement: only the client encodings tollgate
//! decodes exactly are accepted (`crate::client_encoding`), and `standard_conforming_strings`
//! stays on, for every agent (passthrough included: [`check_sql_reading_setting`]). Identity and
//! visibility settings (role, session_authorization, search_path) are pinned by the gateway.

/// Settings a client may set to any value, by lower-case name.
const FREE_SETTINGS: &[&str] = &[
    "application_name",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "bytea_output",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "transaction_isolation",
    "transaction_read_only",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "geqo",
    "jit",
    "enable_seqscan",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "xmloption",
    "array_nulls",
    "row_security",
];

/// `Ok` if a client may set `name` to `value`; otherwise the reason, naming the setting.
pub fn check_client_setting(name: &str, value: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if FREE_SETTINGS.contains(&lower.as_str()) {
        return Ok(());
    }
    if lower == "client_encoding" {
        return check_sql_reading_setting(&lower, value);
    }
    if lower == "client_min_messages" {
        return check_message_level(value);
    }
    if lower == "work_mem" {
        return check_work_mem(value);
    }
    Err(format!(
        "setting \"{name}\" may not be changed through the gateway"
    ))
}

/// The most `work_mem` a client may choose, in kB. It sizes each sort and hash of a query
/// before it spills to disk, in the shared server's memory: at `1TB` one analyst's cross join
/// grew its backend by ~125 MB per million rows (a live review), on the way to the postmaster's
/// OOM kill and every agent's outage.
pub const WORK_MEM_CEILING_KB: f64 = 64.0 * 1024.0;

/// The most `maintenance_work_mem` any agent (passthrough included) may choose, in kB: what
/// PostgreSQL's documentation calls a generous value for a VACUUM or an index build.
pub const MAINTENANCE_WORK_MEM_CEILING_KB: f64 = 1024.0 * 1024.0;
/// The most `hash_mem_multiplier` any agent may choose (PostgreSQL 15's default).
pub const HASH_MEM_MULTIPLIER_CEILING: f64 = 2.0;

/// What every agent, passthrough included, is held to when it sets `name` to `value`: how the
/// server reads SQL text ([`check_sql_reading_setting`]) and its memory sizes
/// ([`check_memory_setting`]).
pub fn check_setting_for_every_agent(name: &str, value: &str) -> Result<(), String> {
    check_sql_reading_setting(name, value).and_then(|()| check_memory_setting(name, value))
}

/// For every agent, passthrough included (DESIGN: no passthrough command may make the upstream
/// unavailable to others): the settings that size the shared server's memory per sort, hash or
/// maintenance operation stay within a ceiling. Other settings: `Ok`.
pub fn check_memory_setting(name: &str, value: &str) -> Result<(), String> {
    match name.to_ascii_lowercase().as_str() {
        "work_mem" => check_work_mem(value),
        "maintenance_work_mem" => check_memory_value(
            "maintenance_work_mem",
            value,
            MAINTENANCE_WORK_MEM_CEILING_KB,
            "1GB",
        ),
        "hash_mem_multiplier" => {
            let v = value.trim().trim_matches('\'').trim();
            match v.parse::<f64>() {
                _ if v.eq_ignore_ascii_case("default") => Ok(()),
                Ok(m) if (0.0..=HASH_MEM_MULTIPLIER_CEILING).contains(&m) => Ok(()),
                _ => Err(format!(
                    "hash_mem_multiplier = {v} is refused: at most {HASH_MEM_MULTIPLIER_CEILING} (it multiplies work_mem for each hash in the shared server's memory)"
                )),
            }
        }
        _ => Ok(()),
    }
}

/// `work_mem` up to [`WORK_MEM_CEILING_KB`] (`value` as SET renders it: a number of kB or
/// with PostgreSQL's units `B`, `kB`, `MB`, `GB`, `TB`; `DEFAULT`). Anything else, a value
/// computed at run time included, is refused.
pub fn check_work_mem(value: &str) -> Result<(), String> {
    check_memory_value("work_mem", value, WORK_MEM_CEILING_KB, "64MB")
}

fn check_memory_value(
    name: &str,
    value: &str,
    ceiling_kb: f64,
    ceiling: &str,
) -> Result<(), String> {
    let v = value.trim().trim_matches('\'').trim();
    if v.eq_ignore_ascii_case("default") {
        return Ok(());
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let kb = number.parse::<f64>().ok().and_then(|n| {
        let per_unit = match unit.trim() {
            "" | "kB" => 1.0,
            "B" => 1.0 / 1024.0,
            "MB" => 1024.0,
            "GB" => 1024.0 * 1024.0,
            "TB" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        Some(n * per_unit)
    });
    match kb {
        Some(kb) if kb <= ceiling_kb => Ok(()),
        _ => Err(format!(
            "{name} = {v} is refused: a client may choose at most {ceiling} (it sizes each sort, hash or maintenance operation in the shared server's memory)"
        )),
    }
}

/// The levels of `client_min_messages` a client may choose (`value` as SET renders it,
/// `DEFAULT` for `SET ... TO DEFAULT`; anything else, a value computed at run time included, is
/// refused). At `log` and the `debug` levels the server sends the client the statements it runs
/// as it received them ("parse <unnamed>: ...", and "statement: ..." where the server logs
/// statements): tollgate's rewrites, a `hash` mask's key among them (a live review).
pub fn check_message_level(value: &str) -> Result<(), String> {
    let v = value.trim().trim_matches('\'').to_ascii_lowercase();
    match v.as_str() {
        "notice" | "warning" | "error" | "default" => Ok(()),
        _ => Err(format!(
            "client_min_messages = {v} is refused: at log and debug levels the server sends the client the statements as tollgate rewrote them; choose notice, warning or error"
        )),
    }
}

/// For every agent, passthrough included: `Ok` unless `name` changes how the server reads SQL
/// text to something tollgate's analysis would read differently (a client encoding it cannot
/// decode exactly, `standard_conforming_strings` off). `value` as SET renders it (`DEFAULT` for
/// `SET x TO DEFAULT`).
pub fn check_sql_reading_setting(name: &str, value: &str) -> Result<(), String> {
    let v = value.trim().trim_matches('\'');
    match name.to_ascii_lowercase().as_str() {
        "client_encoding" => {
            if v.eq_ignore_ascii_case("default") {
                return Ok(());
            }
            crate::client_encoding::check_name(v).map(|_| ())
        }
        "standard_conforming_strings" => {
            if matches!(
                v.to_ascii_lowercase().as_str(),
                "on" | "true" | "yes" | "1" | "default"
            ) {
                Ok(())
            } else {
                Err(format!(
                    "standard_conforming_strings = {v} is refused: with it off the server reads backslashes in string literals differently from tollgate's analysis"
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Splits a startup `options` string (`-c name=value`, `-cname=value`, `--name=value`, backslash
/// escapes as libpq writes them) into settings. Anything else is an error.
pub fn parse_startup_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(options);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let assignment = if w == "-c" {
            i += 1;
            words
                .get(i)
                .cloned()
                .ok_or("startup option -c needs name=value")?
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else {
            return Err(format!(
                "unsupported startup option \"{w}\" (only -c name=value is accepted)"
            ));
        };
        let (name, value) = assignment
            .split_once('=')
            .ok_or("startup option -c needs name=value")?;
        // PostgreSQL treats '-' in option names as '_'.
        out.push((name.replace('-', "_"), value.to_string()));
        i += 1;
    }
    Ok(out)
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_table() {
        for (name, value, ok) in [
            ("application_name", "x", true),
            ("DateStyle", "ISO, MDY", true),
            ("client_encoding", "UTF8", true),
            ("client_encoding", "utf-8", true),
            ("client_encoding", "SJIS", false),
            ("client_encoding", "GBK", false),
            ("client_encoding", "LATIN1", true),
            ("client_encoding", "'EUC_JP'", true),
            ("client_encoding", "EUC_TW", false),
            ("standard_conforming_strings", "on", false),
            ("standard_conforming_strings", "off", false),
            ("search_path", "public", false),
            ("role", "postgres", false),
            ("session_authorization", "postgres", false),
            ("log_statement", "none", false),
            ("backslash_quote", "on", false),
            ("work_mem", "'64MB'", true),
            ("work_mem", "65536", true),
            ("work_mem", "'1.5MB'", true),
            ("work_mem", "DEFAULT", true),
            ("WORK_MEM", "'4096kB'", true),
            ("work_mem", "65537", false),
            ("work_mem", "'1TB'", false),
            ("work_mem", "'65MB'", false),
            ("work_mem", "'1 GB'", false),
            ("work_mem", "'64mb'", false),
            ("work_mem", "", false),
            ("work_mem", "'-1'", false),
        ] {
            assert_eq!(
                check_client_setting(name, value).is_ok(),
                ok,
                "{name}={value}"
            );
        }
    }

    #[test]
    fn options_parsing() {
        assert_eq!(
            parse_startup_options(r"-c a=b -cc=d --e-f=g -c x=with\ space").unwrap(),
            vec![
                ("a".into(), "b".into()),
                ("c".into(), "d".into()),
                ("e_f".into(), "g".into()),
                ("x".into(), "with space".into())
            ]
        );
        assert!(parse_startup_options("-D /tmp").is_err());
        assert!(parse_startup_options("-c").is_err());
        assert!(parse_startup_options("-c novalue").is_err());
        assert_eq!(parse_startup_options("").unwrap(), vec![]);
    }
}
