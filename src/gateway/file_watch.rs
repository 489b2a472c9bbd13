//! What reloads a running gateway by itself: the policy files and the certificate changing on
//! disk (checked every few seconds), and SIGHUP. Every look at the disk and every reload runs
//! on the blocking pool (`off_workers`), never on an async worker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::{off_workers, Gateway};
use crate::config::Config;

/// (path, modified time, length) of each file watched. Taken with `stat` only: the watcher
/// never opens a file (a FIFO would block the open).
type Signature = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn stat(p: PathBuf) -> (PathBuf, Option<SystemTime>, u64) {
    let meta = std::fs::metadata(&p).ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok());
    (p, modified, meta.map(|m| m.len()).unwrap_or(0))
}

/// The agents file, the admin tokens file and every entry of the policies folder. A change
/// means "reload".
fn policy_files_signature(config: &Config) -> Signature {
    let mut sig = vec![
        stat(config.agents_file.clone()),
        stat(config.admin.tokens_file.clone()),
    ];
    if let Ok(entries) = std::fs::read_dir(&config.policies_dir) {
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        sig.extend(files.into_iter().map(stat));
    }
    sig
}

/// The certificate and key files, as [`policy_files_signature`] sees files.
fn tls_files_signature(config: &Config) -> Signature {
    config
        .tls
        .iter()
        .flat_map(|t| [stat(t.cert_file.clone()), stat(t.key_file.clone())])
        .collect()
}

/// The files the watcher compares from one tick to the next.
struct Watched {
    policies: Signature,
    tls: Signature,
}

impl Watched {
    fn now(config: &Config) -> Watched {
        Watched {
            policies: policy_files_signature(config),
            tls: tls_files_signature(config),
        }
    }

    /// One tick (on the blocking pool): reloads what changed since the last one.
    fn tick(&mut self, gateway: &Gateway) {
        let now = Watched::now(&gateway.config);
        if now.policies != self.policies {
            let _ = gateway.reload();
            let _ = gateway.reload_admin_tokens();
        }
        if now.tls != self.tls {
            let _ = gateway.reload_tls();
        }
        *self = now;
    }
}

/// Reloads agents, policies and admin tokens, and the TLS certificate, when their files change
/// (checked every `every`).
/// Stops when `stopping` says so: a gateway shutting down (the demo removes its files right
/// after) does not try to reload what is being removed.
pub fn reload_on_file_change(
    gateway: Arc<Gateway>,
    every: std::time::Duration,
    mut stopping: watch::Receiver<bool>,
) {
    // Taken before returning, so a change made right after this call is never missed.
    let mut watched = Watched::now(&gateway.config);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        // A slow reload delays the next look; missed ticks are not made up in a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stopping.changed() => return,
                _ = tick.tick() => {}
            }
            if *stopping.borrow() {
                return;
            }
            let looked = off_workers(&gateway, move |gw| {
                watched.tick(gw);
                watched
            });
            match looked.await {
                Some(w) => watched = w,
                None => return,
            }
        }
    });
}

/// Reloads policies, agents, the vault, the admin tokens and the TLS certificate on SIGHUP
/// until the process ends.
pub fn reload_on_sighup(gateway: Arc<Gateway>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = off_workers(&gateway, Gateway::reload_all).await;
        }
    });
}
