//! Review: what a client that stops reading costs the gateway, on a shared upstream connection
//! and on a connection of its own.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{harness, redis_cmd as cmd, redis_exchange, redis_login};

fn rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

#[tokio::test]
async fn review_stalled_clients_hold_their_replies_in_gateway_memory() {
    let mut up = redis::Client::open(harness().env.upstream_redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("cache:stall")
        .arg(vec![b's'; 1 << 20])
        .query_async(&mut up)
        .await
        .unwrap();
    let mut ask = Vec::new();
    for _ in 0..100 {
        ask.extend(cmd(&["GET", "cache:stall"]));
    }
    const N: usize = 4;
    // Warm up allocator and harness.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = rss_mib();
    // Sessions on their own connections (SELECT moves them), 100 MiB asked, nothing read.
    let mut own = Vec::new();
    for _ in 0..N {
        let mut s = redis_login("trusted").await;
        assert_eq!(
            redis_exchange(&mut s, &cmd(&["SELECT", "0"]), "\r\n").await,
            "+OK\r\n"
        );
        s.write_all(&ask).await.unwrap();
        own.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_own = rss_mib();
    // The same on the shared connections.
    let mut shared = Vec::new();
    for _ in 0..N {
        let mut s = redis_login("trusted").await;
        s.write_all(&ask).await.unwrap();
        shared.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_shared = rss_mib();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = rss_mib();
    println!(
        "RSS MiB: base {base}, {N} stalled own sessions {after_own} (+{}), {N} stalled shared sessions {after_shared} (+{}), 10 s later {later}",
        after_own.saturating_sub(base),
        after_shared.saturating_sub(after_own)
    );
    // Is a cut-off session still open 13 s later? Drain one and see what it still had.
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let s = &mut shared[0];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("still open after {total} bytes"),
        }
    }
    println!(
        "the first stalled shared session still delivered {} MiB before closing",
        total >> 20
    );
    assert!(
        after_shared.saturating_sub(after_own) < 64,
        "{N} stalled shared sessions hold {} MiB of gateway memory (own: {} MiB)",
        after_shared.saturating_sub(after_own),
        after_own.saturating_sub(base)
    );
}
