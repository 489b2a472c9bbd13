//! The upstream Redis dies and comes back: clear errors meanwhile, recovery on new connections.

mod support;

use support::{harness, redis_connect, redis_exchange, redis_login};

#[tokio::test]
async fn upstream_restart_gives_clear_errors_then_recovers() {
    let h = harness();
    let mut before = redis_login("writer").await;
    assert_eq!(
        redis_exchange(&mut before, b"PING\r\n", "\r\n").await,
        "+PONG\r\n"
    );
    let server = h.redis.clone();
    h.runtime
        .spawn(async move { server.lock().await.kill() })
        .await
        .unwrap();
    let got = redis_exchange(&mut before, b"GET cache:1\r\n", "\r\n").await;
    assert!(
        got.contains("connection to upstream \"cache\" lost"),
        "{got}"
    );
    // A new session while the upstream is down: a clear error, not a hang.
    let mut during = support::redis_raw().await;
    let token = h.env.token("writer").to_string();
    let got = redis_exchange(
        &mut during,
        format!("AUTH writer {token}\r\n").as_bytes(),
        "\r\n",
    )
    .await;
    assert!(got.contains("upstream \"cache\" is unavailable"), "{got}");
    let server = h.redis.clone();
    h.runtime
        .spawn(async move { server.lock().await.restart().await })
        .await
        .unwrap()
        .unwrap();
    let mut c = redis_connect("writer", false).await;
    let _: () = redis::cmd("SET")
        .arg("cache:after")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("cache:after")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "1");
}
