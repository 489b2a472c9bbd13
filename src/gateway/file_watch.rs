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

/// When a change is reloaded: once the files have looked the same for two ticks in a row.
/// A file written in place (`cat > f`, an editor saving without a rename) is half-written for
/// a while, and a tick that falls inside the write sees a prefix that may well parse: the
/// review cut a policy file just before its `mask = {...}` line, the watcher put it in force
/// and the columns went out unmasked until the rest arrived. A write still going on at the
/// next tick changes the length or the modified time, so it is waited for.
struct Settling<T> {
    /// What the files looked like at the last reload (or at start).
    applied: T,
    /// A change seen at the previous tick, not reloaded yet.
    seen: Option<T>,
}

impl<T: PartialEq> Settling<T> {
    fn new(now: T) -> Settling<T> {
        Settling {
            applied: now,
            seen: None,
        }
    }

    /// Takes this tick's look at the files; whether to reload now.
    fn settled(&mut self, now: T) -> bool {
        if now == self.applied {
            self.seen = None;
            return false;
        }
        if self.seen.as_ref() == Some(&now) {
            self.applied = now;
            self.seen = None;
            return true;
        }
        self.seen = Some(now);
        false
    }
}

/// The files the watcher compares from one tick to the next.
struct Watched {
    policies: Settling<Signature>,
    tls: Settling<Signature>,
}

impl Watched {
    fn now(config: &Config) -> Watched {
        Watched {
            policies: Settling::new(policy_files_signature(config)),
            tls: Settling::new(tls_files_signature(config)),
        }
    }

    /// One tick (on the blocking pool): reloads what changed and then stayed as it was.
    fn tick(&mut self, gateway: &Gateway) {
        if self
            .policies
            .settled(policy_files_signature(&gateway.config))
        {
            let _ = gateway.reload();
            let _ = gateway.reload_admin_tokens();
        }
        if self.tls.settled(tls_files_signature(&gateway.config)) {
            let _ = gateway.reload_tls();
        }
    }
}

/// Reloads agents, policies and admin tokens, and the TLS certificate, when their files change
/// (checked every `every`) and then stay unchanged for one more check ([`Settling`]).
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

/// Reloads policies, agents, the vault, the admin tokens and the TLS certificate on each
/// SIGHUP `hup` receives until the process ends (made before the listeners start, so a SIGHUP
/// meanwhile is a reload once they have, not the default action that ends the process).
pub fn reload_on_sighup(gateway: Arc<Gateway>, mut hup: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = off_workers(&gateway, Gateway::reload_all).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::Settling;

    /// Each tick's look at the files (a letter per state), and whether that tick reloads.
    fn check(ticks: &[(&str, bool)]) {
        let mut s = Settling::new("a");
        for (i, (now, reload)) in ticks.iter().enumerate() {
            assert_eq!(s.settled(*now), *reload, "tick {i} ({now}) of {ticks:?}");
        }
    }

    #[test]
    fn a_change_is_reloaded_once_it_stayed_the_same_for_a_tick() {
        check(&[
            ("a", false),
            ("b", false),
            ("b", true),
            ("b", false),
            ("b", false),
        ]);
    }

    #[test]
    fn a_file_still_being_written_is_waited_for() {
        // b, c, d: a write seen half-way three times (growing), then e: the whole file.
        check(&[
            ("b", false),
            ("c", false),
            ("d", false),
            ("e", false),
            ("e", true),
        ]);
    }

    #[test]
    fn a_change_undone_before_it_settled_reloads_nothing() {
        check(&[
            ("b", false),
            ("a", false),
            ("a", false),
            ("b", false),
            ("b", true),
        ]);
    }

    #[test]
    fn after_a_reload_the_next_change_settles_the_same_way() {
        check(&[
            ("b", false),
            ("b", true),
            ("c", false),
            ("c", true),
            // Back to what is in force before it settled: nothing to reload.
            ("d", false),
            ("c", false),
            ("c", false),
        ]);
    }
}
