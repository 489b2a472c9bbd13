//! The server must read SQL text as tollgate's analysis reads it. `standard_conforming_strings`
//! off makes `'a\' || ' , (select ...) -- '` one string and a subquery where the analyser sees
//! two strings: no agent may set it, and a server connection that reports it off anyway (a role
//! default set by a passthrough agent's DO block, a function, an administrator) is never used
//! for an agent whose statements tollgate analyses, at login or when the change shows up in a
//! reply; nothing judged under the old reading is forwarded after it. A gateway of its own,
//! logged in upstream as a role of its own, so role defaults changed here touch no other test.

mod support;

use std::time::Duration;

use support::{connect_url, copy_demo_dir, harness, upstream, vault_set};

/// The analyst's chain query: under `standard_conforming_strings = off` it reads every API key.
const CHAIN: &str = "select 'a\\' || ' , (select string_agg(api_key, ',') from secrets) as k -- '";

struct Gw {
    running: tollgate::gateway::Running,
    _dir: tempfile::TempDir,
    role: String,
    /// A function the analyst may call that turns the setting off in its session.
    flip: String,
}

impl Gw {
    /// Drops what the test made upstream (a failed test leaves it: the names are its own).
    async fn clean_up(self) {
        let su = upstream().await;
        su.batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
            self.role
        ))
        .await
        .ok();
        su.batch_execute(&format!("DROP FUNCTION IF EXISTS public.{}()", self.flip))
            .await
            .ok();
        drop(self.running);
    }
}

async fn gateway() -> Gw {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = format!(
        "{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let role = format!("tg_reading_{n}");
    let flip = format!("reading_flip_{n}");
    let password = format!("pw-{role}-0123456789");
    upstream()
        .await
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE tollgate_shop;
             CREATE OR REPLACE FUNCTION public.{flip}() RETURNS int LANGUAGE plpgsql AS
               $f$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 1; END $f$"
        ))
        .await
        .unwrap();
    let dir = copy_demo_dir();
    vault_set(dir.path(), "reading_user", &role);
    vault_set(dir.path(), "reading_password", &password);
    let config = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen(
            "user = \"vault:shop_user\"",
            "user = \"vault:reading_user\"",
            1,
        )
        .replacen(
            "password = \"vault:shop_password\"",
            "password = \"vault:reading_password\"",
            1,
        );
    std::fs::write(&config, text).unwrap();
    let analyst = dir.path().join("policies/analyst.toml");
    let text = std::fs::read_to_string(&analyst).unwrap().replacen(
        "upstream = \"shop\"\n",
        &format!("upstream = \"shop\"\nfunctions = [\"public.{flip}\"]\n"),
        1,
    );
    std::fs::write(&analyst, text).unwrap();
    let config = tollgate::config::Config::load(&config).unwrap();
    let running = tollgate::gateway::start(config).await.unwrap();
    Gw {
        running,
        _dir: dir,
        role,
        flip,
    }
}

fn url(gw: &Gw, agent: &str, extra: &str) -> String {
    let token = harness().env.token(agent);
    let port = gw.running.pg_addr.unwrap().port();
    format!("postgresql://{agent}:{token}@127.0.0.1:{port}/shop?sslmode=disable{extra}")
}

/// Everything the server side sends until ReadyForQuery or the end of the connection: the
/// DataRows' bytes, and each error's (severity, SQLSTATE, message).
async fn replies(s: &mut tokio::net::TcpStream) -> (Vec<u8>, Vec<(String, String, String)>) {
    use tokio::io::AsyncReadExt;
    let (mut data, mut errors) = (Vec::new(), Vec::new());
    loop {
        let mut head = [0u8; 5];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await;
        let Ok(Ok(_)) = read else {
            return (data, errors); // closed (or nothing more)
        };
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        match head[0] {
            b'D' => data.extend_from_slice(&body),
            b'E' => errors.push((
                support::error_field(&body, b'S').unwrap_or_default(),
                support::error_field(&body, b'C').unwrap_or_default(),
                support::error_field(&body, b'M').unwrap_or_default(),
            )),
            b'Z' => return (data, errors),
            _ => {}
        }
    }
}

fn protected(errors: &[(String, String, String)]) -> bool {
    errors.iter().any(|(severity, _, m)| {
        severity == "FATAL"
            && m.contains("standard_conforming_strings = off")
            && m.ends_with("(rule: builtin: protected-setting)")
    })
}

/// A function the analyst may call turns the setting off in its server session, and the chain
/// query is pipelined right behind it: the server's report ends the session before the query,
/// judged under the old reading, is forwarded. The connection is closed, never reused.
#[test]
fn a_server_that_starts_reading_backslashes_otherwise_ends_the_session() {
    harness().runtime.block_on(async {
        let gw = gateway().await;
        let mut a = support::raw_login_at(gw.running.pg_addr.unwrap(), "analyst").await;
        let q = |sql: &str| support::message(b'Q', format!("{sql}\0").as_bytes());
        use tokio::io::AsyncWriteExt;
        a.write_all(&[q(&format!("SELECT {}()", gw.flip)), q(CHAIN)].concat())
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut all_errors = Vec::new();
        for _ in 0..2 {
            let (data, errors) = replies(&mut a).await;
            seen.extend(data);
            let fatal = protected(&errors);
            all_errors.extend(errors);
            if fatal {
                break;
            }
        }
        let leaked = String::from_utf8_lossy(&seen).contains("sk_demo_");
        assert!(!leaked, "secrets read: {}", String::from_utf8_lossy(&seen));
        assert!(protected(&all_errors), "{all_errors:?}");
        // The session is over.
        let (_, errors) = replies(&mut a).await;
        assert!(errors.is_empty());
        // The agent's next session gets a connection that reads as tollgate does.
        let c = connect_url(&url(&gw, "analyst", "")).await.unwrap();
        let rows = c
            .simple_query("SHOW standard_conforming_strings")
            .await
            .unwrap();
        let shown = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(shown.as_deref(), Some("on"));
        // The passthrough agent's session ends the same way: its login guard read text as with
        // the setting on, so the server would have run an ALTER ROLE hidden in what the guard
        // read as a string literal (a re-review did so).
        let mut t = support::raw_login_at(gw.running.pg_addr.unwrap(), "trusted").await;
        let smuggle = r"SELECT '\' AS a, ' ; ALTER ROLE CURRENT_USER SET application_name = smuggled; -- ' AS b";
        t.write_all(&[q(&format!("SELECT {}()", gw.flip)), q(smuggle)].concat())
            .await
            .unwrap();
        let mut all_errors = Vec::new();
        for _ in 0..2 {
            let (_, errors) = replies(&mut t).await;
            let fatal = protected(&errors);
            all_errors.extend(errors);
            if fatal {
                break;
            }
        }
        assert!(protected(&all_errors), "{all_errors:?}");
        let config: Option<Vec<String>> = upstream()
            .await
            .query_one(
                "SELECT rolconfig FROM pg_roles WHERE rolname = $1",
                &[&gw.role],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            !config.unwrap_or_default().iter().any(|c| c.contains("smuggled")),
            "the hidden ALTER ROLE ran"
        );
        gw.clean_up().await;
    });
}

/// The reviewer's chain: `standard_conforming_strings = off` becomes the vaulted role's default
/// (the passthrough agent did it through a DO block built from pieces, which is refused now:
/// dynamic SQL in a body; an administrator still can); a new server connection then reports it
/// off at login, and every agent's session on it is refused, the passthrough agent's too.
/// Fixed upstream, sessions work again.
#[test]
fn a_connection_that_logs_in_reading_backslashes_otherwise_is_never_used() {
    harness().runtime.block_on(async {
        let gw = gateway().await;
        let t = connect_url(&url(&gw, "trusted", "")).await.unwrap();
        let e = t
            .batch_execute(
                "do $$ begin execute 'AL' || 'TER ROLE ' || current_user || ' SET standard_conf' || 'orming_strings = of' || 'f'; end $$",
            )
            .await
            .expect_err("dynamic SQL in a DO block is refused");
        assert!(
            support::db_message(&e).ends_with("(rule: builtin: vault-login)"),
            "{e:?}"
        );
        upstream()
            .await
            .batch_execute(&format!(
                "ALTER ROLE {} SET standard_conforming_strings = off",
                gw.role
            ))
            .await
            .unwrap();
        // New settings, so new server connections, which log in with the role's new default:
        // no agent is served on them, the passthrough one neither (its login guard reads the
        // text too: a re-review hid ALTER ROLE in what it read as a string literal).
        for agent in ["analyst", "writer", "trusted"] {
            let fresh = format!("&application_name=fresh-{agent}");
            let refused = match connect_url(&url(&gw, agent, &fresh)).await {
                Ok(c) => c.simple_query(CHAIN).await.err(),
                Err(e) => Some(e),
            };
            let e = refused.unwrap_or_else(|| panic!("{agent} was served"));
            let message = support::db_message(&e);
            assert!(
                message.contains("standard_conforming_strings = off")
                    && message.ends_with("(rule: builtin: protected-setting)"),
                "{agent}: {message}"
            );
        }
        upstream()
            .await
            .batch_execute(&format!("ALTER ROLE {} RESET ALL", gw.role))
            .await
            .unwrap();
        let c = connect_url(&url(&gw, "analyst", "&application_name=fresh-again"))
            .await
            .unwrap();
        let rows = c.simple_query(CHAIN).await.unwrap();
        let leaked = rows.iter().any(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                (0..r.len()).any(|i| r.get(i).is_some_and(|v| v.contains("sk_demo_")))
            }
            _ => false,
        });
        assert!(!leaked);
        gw.clean_up().await;
    });
}

/// An analysed agent cannot change the setting itself, in any of the ways PostgreSQL offers;
/// RESET brings back the value its connection logged in with, which tollgate checked.
#[test]
fn analysed_agents_cannot_turn_the_setting_off() {
    harness().runtime.block_on(async {
        let gw = gateway().await;
        let c = connect_url(&url(&gw, "analyst", "")).await.unwrap();
        for sql in [
            "SET standard_conforming_strings = off",
            "SET SESSION standard_conforming_strings TO false",
            "BEGIN; SET LOCAL standard_conforming_strings = off",
            "SELECT set_config('standard_conforming_strings', 'off', true)",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SET standard_conforming_strings TO DEFAULT; SET standard_conforming_strings = 0",
        ] {
            let e = c.batch_execute(sql).await.expect_err(sql);
            let message = support::db_message(&e);
            assert!(
                message.ends_with("(rule: builtin: protected-setting)"),
                "{sql}: {message}"
            );
            c.batch_execute("ROLLBACK").await.ok();
        }
        c.batch_execute("RESET standard_conforming_strings; RESET ALL")
            .await
            .unwrap();
        let rows = c
            .simple_query("SHOW standard_conforming_strings")
            .await
            .unwrap();
        assert!(rows.iter().any(|m| matches!(m,
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("on"))));
        let options = "&options=-c%20standard_conforming_strings%3Doff";
        let Err(e) = connect_url(&url(&gw, "analyst", options)).await else {
            panic!("startup options are refused");
        };
        assert!(
            support::db_message(&e).contains("standard_conforming_strings"),
            "{e}"
        );
        gw.clean_up().await;
    });
}
