//! No agent can make the gateway unavailable for the others: the vaulted upstream login (and the
//! server settings that would lock tollgate out) cannot be changed through the gateway, even by
//! the passthrough agent, on PostgreSQL and on Redis; every other agent keeps working, and each
//! refusal names its built-in rule, is audited, and never names the vaulted user.

mod support;

use std::time::Duration;

use support::{connect, db_message, harness, redis_connect, redis_error, sqlstate};
use tollgate::demo::files::UPSTREAM_ROLE;

/// Every agent still logs in and works on both protocols.
async fn everyone_still_works() {
    for agent in ["analyst", "writer", "trusted"] {
        let c = connect(agent).await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM orders WHERE id <= 10", &[])
            .await
            .unwrap_or_else(|e| panic!("{agent}: {e}"))
            .get(0);
        assert_eq!(n, 10, "{agent}");
        let mut r = redis_connect(agent, false).await;
        let pong: String = redis::cmd("PING").query_async(&mut r).await.unwrap();
        assert_eq!(pong, "PONG", "{agent}");
    }
}

#[tokio::test]
async fn postgres_login_database_and_server_settings_cannot_be_changed() {
    let c = connect("trusted").await;
    let role = UPSTREAM_ROLE;
    let cases = [
        (
            format!("ALTER ROLE {role} PASSWORD 'x'"),
            "builtin: vault-login",
        ),
        (format!("ALTER USER {role} NOLOGIN"), "builtin: vault-login"),
        (
            format!("ALTER ROLE {role} VALID UNTIL '2000-01-01'"),
            "builtin: vault-login",
        ),
        (
            format!("ALTER ROLE {role} CONNECTION LIMIT 0"),
            "builtin: vault-login",
        ),
        (
            format!("ALTER ROLE {role} RENAME TO gone"),
            "builtin: vault-login",
        ),
        (
            format!("ALTER ROLE {role} SET default_transaction_read_only = on"),
            "builtin: vault-login",
        ),
        (
            "ALTER ROLE CURRENT_USER PASSWORD 'x'".into(),
            "builtin: vault-login",
        ),
        (format!("DROP ROLE {role}"), "builtin: vault-login"),
        (
            "ALTER DATABASE shop CONNECTION LIMIT 0".into(),
            "builtin: vault-login",
        ),
        (
            "ALTER DATABASE shop WITH ALLOW_CONNECTIONS false".into(),
            "builtin: vault-login",
        ),
        (
            "REVOKE CONNECT ON DATABASE shop FROM PUBLIC".into(),
            "builtin: vault-login",
        ),
        (
            "DROP DATABASE shop WITH (FORCE)".into(),
            "builtin: vault-login",
        ),
        (
            "DO $$ BEGIN EXECUTE 'ALTER ROLE ' || current_user || ' PASSWORD ''x'''; END $$".into(),
            "builtin: vault-login",
        ),
        // SQL built at run time, or spelt with escapes: no word of the text says what it does
        // (a review changed the vaulted role's password from a base64 string).
        (
            "DO $$ DECLARE s text := convert_from(decode('QUxURVIgUk9MRSBDVVJSRU5UX1VTRVIgUEFTU1dPUkQgJ3p6Jw==', 'base64'), 'UTF8'); BEGIN EXECUTE s; END $$".into(),
            "builtin: vault-login",
        ),
        (
            r"DO E'BEGIN \x41LTER ROLE CURRENT_USER PASSWORD ''q''; END'".into(),
            "builtin: vault-login",
        ),
        (
            "DO 'BEGIN AL'\n'TER ROLE CURRENT_USER SET application_name = ''joined''; END'".into(),
            "builtin: vault-login",
        ),
        (
            "UPDATE pg_settings SET setting = '3GB' WHERE name LIKE 'work%em'".into(),
            "builtin: protected-setting",
        ),
        (
            "ALTER SYSTEM SET password_encryption = 'md5'".into(),
            "builtin: server-admin",
        ),
        (
            "SET standard_conforming_strings = off".into(),
            "builtin: protected-setting",
        ),
        // The same names spelled with U& escapes (no word of the passthrough screen in them).
        (
            "SET U&\"standard\\005fconforming_strings\" = off".into(),
            "builtin: protected-setting",
        ),
        (
            "SELECT U&\"set\\005fconfig\"('client_encoding', 'SJIS', false)".into(),
            "builtin: protected-setting",
        ),
    ];
    for (sql, rule) in &cases {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        let msg = db_message(&e);
        assert!(msg.ends_with(&format!("(rule: {rule})")), "{sql}: {msg}");
        let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or("");
        assert!(hint.contains("passthrough"), "{sql}: hint {hint:?}");
        for text in [msg.as_str(), hint] {
            assert!(
                !text.contains(role),
                "the vaulted role is never named: {text}"
            );
        }
        // The session stays usable.
        c.batch_execute("SELECT 1").await.unwrap();
    }
    // Other roles remain the passthrough agent's business (the server decides).
    let e = c
        .batch_execute("ALTER ROLE postgres PASSWORD 'x'")
        .await
        .expect_err("the upstream role may not alter a superuser");
    assert!(
        !db_message(&e).starts_with("tollgate:"),
        "refused by the server, not by tollgate: {e}"
    );
    everyone_still_works().await;
    // The role is unchanged upstream.
    let up = support::upstream().await;
    let row = up
        .query_one(
            "SELECT rolcanlogin, rolvaliduntil IS NULL, rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), -1);
    // Each refusal is audited as blocked with its rule.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    let blocked = log
        .lines()
        .filter(|l| l.contains("\"agent\":\"trusted\""))
        .filter(|l| l.contains("\"decision\":\"blocked\""))
        .filter(|l| l.contains("builtin: vault-login"))
        .count();
    assert!(blocked >= 13, "{blocked} blocked vault-login records");
}

#[tokio::test]
async fn redis_login_and_server_cannot_be_changed() {
    let mut t = redis_connect("trusted", false).await;
    let cases: [(&[&str], &str); 11] = [
        (
            &["CONFIG", "SET", "requirepass", "x"],
            "builtin: vault-login",
        ),
        (
            &["CONFIG", "SET", "masterauth", "x"],
            "builtin: vault-login",
        ),
        (
            &["ACL", "SETUSER", "default", "off"],
            "builtin: vault-login",
        ),
        (
            &["ACL", "SETUSER", "default", "resetpass", "nopass"],
            "builtin: vault-login",
        ),
        (&["ACL", "DELUSER", "default"], "builtin: vault-login"),
        (&["ACL", "LOAD"], "builtin: vault-login"),
        (
            &["CONFIG", "SET", "maxclients", "1"],
            "builtin: availability",
        ),
        (
            &["CONFIG", "SET", "maxmemory-clients", "200kb"],
            "builtin: availability",
        ),
        (&["CLIENT", "PAUSE", "10000"], "builtin: availability"),
        (&["SHUTDOWN", "NOSAVE"], "builtin: availability"),
        (&["REPLICAOF", "127.0.0.1", "1"], "builtin: availability"),
    ];
    for (words, rule) in cases {
        let mut q = redis::cmd(words[0]);
        for w in &words[1..] {
            q.arg(*w);
        }
        let e = q
            .query_async::<redis::Value>(&mut t)
            .await
            .expect_err(&words.join(" "));
        let text = redis_error(&e);
        assert!(text.starts_with("NOPERM tollgate:"), "{words:?}: {text}");
        assert!(
            text.contains(&format!("(rule: {rule}); hint: ")),
            "{words:?}: {text}"
        );
    }
    // The session goes on; AUTH inside a session is tollgate's own login, never forwarded.
    let pong: String = redis::cmd("PING").query_async(&mut t).await.unwrap();
    assert_eq!(pong, "PONG");
    everyone_still_works().await;
}

#[tokio::test]
async fn config_get_leaves_secrets_out_and_config_set_round_trips() {
    let mut t = redis_connect("trusted", false).await;
    let all: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query_async(&mut t)
        .await
        .unwrap();
    assert!(all.contains_key("maxclients") && all.contains_key("maxmemory-policy"));
    for secret in ["requirepass", "masterauth"] {
        assert!(!all.contains_key(secret), "{secret} left out");
    }
    let before = all["maxmemory-policy"].clone();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut t)
        .await
        .unwrap();
    let now: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut t)
        .await
        .unwrap();
    assert_eq!(now, ["maxmemory-policy", "allkeys-lru"]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(&before)
        .query_async(&mut t)
        .await
        .unwrap();
    // The vaulted user's password hash is left out of ACL LIST and ACL GETUSER.
    let lines: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut t)
        .await
        .unwrap();
    let default = lines
        .iter()
        .find(|l| l.starts_with("user default "))
        .unwrap();
    assert!(!default.contains('#'), "{default}");
    let user: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg("default")
        .query_async(&mut t)
        .await
        .unwrap();
    let text = format!("{user:?}");
    assert!(text.contains("passwords"), "{text}");
    let password = harness()
        .env
        .upstream_redis_url
        .trim_start_matches("redis://default:")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(password.as_bytes()));
    assert!(!text.contains(&hash), "the vaulted password's hash: {text}");
    assert!(!format!("{lines:?}").contains(&hash));
    // RESP3 answers a map: the secrets are left out of it too.
    let mut t3 = redis_connect("trusted", true).await;
    let v: redis::Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("requirepass")
        .query_async(&mut t3)
        .await
        .unwrap();
    assert!(format!("{v:?}").len() < 40, "no requirepass entry: {v:?}");
}
