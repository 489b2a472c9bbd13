//! Review: how long another session's PING waits behind one session's pipeline of slow commands,
//! on a shared upstream connection and with the pipelining session on its own connection.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{harness, redis_cmd as cmd, redis_exchange, redis_login};

async fn ping_wait(heavy_moves: bool, ask: &[u8], n: usize) -> (Duration, Duration) {
    let mut a = redis_login("trusted").await;
    if heavy_moves {
        assert_eq!(
            redis_exchange(&mut a, &cmd(&["SELECT", "0"]), "\r\n").await,
            "+OK\r\n"
        );
    }
    let _x = redis_login("trusted").await; // the other slot
    let mut b = redis_login("trusted").await; // a's slot (when a shares)
    assert_eq!(
        redis_exchange(&mut b, &cmd(&["PING"]), "\r\n").await,
        "+PONG\r\n"
    );
    let t0 = Instant::now();
    a.write_all(ask).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let p = Instant::now();
    assert_eq!(
        redis_exchange(&mut b, &cmd(&["PING"]), "\r\n").await,
        "+PONG\r\n"
    );
    let ping = p.elapsed();
    // Drain a's replies.
    let reply = b"*1\r\n$1\r\n0\r\n".len();
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while got < n * reply {
        got += a.read(&mut buf).await.unwrap();
    }
    (ping, t0.elapsed())
}

#[tokio::test]
async fn review_head_of_line_on_a_shared_connection() {
    let mut up = redis::Client::open(harness().env.upstream_redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("cache:hol")
        .query_async(&mut up)
        .await
        .unwrap();
    let items: Vec<i64> = (0..5000).rev().collect();
    let _: () = redis::cmd("RPUSH")
        .arg("cache:hol")
        .arg(items)
        .query_async(&mut up)
        .await
        .unwrap();
    const N: usize = 2000;
    let mut ask = Vec::new();
    for _ in 0..N {
        ask.extend(cmd(&["SORT_RO", "cache:hol", "LIMIT", "0", "1"]));
    }
    let own = ping_wait(true, &ask, N).await;
    let shared = ping_wait(false, &ask, N).await;
    println!(
        "PING behind {N} SORT_RO: heavy session on its own connection: {:?} (pipeline {:?}); heavy session sharing: {:?} (pipeline {:?})",
        own.0, own.1, shared.0, shared.1
    );
}
