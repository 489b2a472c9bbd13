//! The log's background work, started once by the gateway: time-based rotation, rotation on
//! SIGUSR1, compression and retention of closed files, and the exporters. Nothing here runs on
//! a statement's path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::export::{self, Select, Sink};
use super::maintain::Maintenance;
use super::AuditLog;
use crate::config::{parse_interval, Config};

#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("audit.syslog: {0}")]
    Syslog(String),
    #[error("audit.webhook: {0}")]
    Webhook(String),
    #[error("audit.rotate.interval: {0}")]
    Interval(String),
}

/// Starts everything `[audit]` asks for beside writing, on the current tokio runtime, until
/// `shutdown` turns true. Fails before starting anything if an exporter cannot be set up (its
/// TLS trust anchors, the webhook's vaulted key).
pub fn spawn_background(
    log: &AuditLog,
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> Result<(), super::AuditError> {
    let audit = &config.audit;
    let interval = audit
        .rotate
        .interval
        .as_deref()
        .map(parse_interval)
        .transpose()
        .map_err(BackgroundError::Interval)?;
    start_tasks(log, config, interval, shutdown)
}

/// Spawns one exporter's task (once the exporters are registered with the log): its name, its task.
type StartExporter = Box<dyn FnOnce() -> (String, JoinHandle<()>) + Send>;

fn start_tasks(
    log: &AuditLog,
    config: &Config,
    interval: Option<Duration>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), super::AuditError> {
    let audit = &config.audit;
    let mut sinks = Vec::new();
    let mut starts: Vec<StartExporter> = Vec::new();
    let weak = Arc::downgrade(log.shared());
    if let Some(s) = &audit.syslog {
        let target = export::syslog::Target::new(s).map_err(BackgroundError::Syslog)?;
        let header = export::syslog::Header::new(s);
        let sink = Sink::new("syslog", Select::Everything, s.queue);
        sinks.push(sink.clone());
        let (weak, rx) = (weak.clone(), shutdown.clone());
        starts.push(Box::new(move || {
            let name = sink.name.clone();
            let task = tokio::spawn(export::syslog::run(sink, target, header, weak, rx));
            (name, task)
        }));
    }
    if let Some(w) = &audit.webhook {
        let target = export::webhook::Target::new(w).map_err(BackgroundError::Webhook)?;
        let key = webhook_key(config, &w.secret).map_err(BackgroundError::Webhook)?;
        let select = Select::Alerts {
            decisions: w.decisions.clone(),
            rules: w
                .rules
                .iter()
                .map(|r| crate::policy::glob::Glob::new(r))
                .collect(),
        };
        let sink = Sink::new("webhook", select, w.queue);
        sinks.push(sink.clone());
        let pacing = export::webhook::Pacing::new(w);
        let (weak, rx) = (weak.clone(), shutdown.clone());
        starts.push(Box::new(move || {
            let name = sink.name.clone();
            let task = tokio::spawn(export::webhook::run(sink, target, key, pacing, weak, rx));
            (name, task)
        }));
    }
    if !sinks.is_empty() {
        if log
            .shared()
            .exports
            .set(export::Exports::new(sinks))
            .is_err()
        {
            warn!("audit exporters were already started for this log");
            return Ok(());
        }
        let tasks: Vec<_> = starts.into_iter().map(|start| start()).collect();
        if let Some(exports) = log.shared().exports.get() {
            *exports.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        }
    }
    let maintenance = Maintenance {
        naming: super::files::Naming::for_active(log.path()),
        compress: audit.rotate.compress,
        retain: audit.rotate.retain,
        log: Some(weak.clone()),
    };
    if maintenance.needed() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if log.shared().closed_tx.set(tx).is_ok() {
            tokio::spawn(maintain(maintenance, rx, shutdown.clone()));
        }
    }
    if let Some(age) = interval {
        tokio::spawn(rotate_by_age(log.clone(), age, shutdown.clone()));
    }
    tokio::spawn(rotate_on_sigusr1(log.clone(), shutdown));
    Ok(())
}

/// The webhook's HMAC key, read from the vault.
fn webhook_key(config: &Config, reference: &str) -> Result<Vec<u8>, String> {
    let name = reference
        .strip_prefix("vault:")
        .ok_or("secret must be a vault reference")?;
    let key = crate::vault::MasterKey::load(config.vault.key_file.as_deref())
        .map_err(|e| e.to_string())?;
    let vault = crate::vault::Vault::open(&config.vault.file, key).map_err(|e| e.to_string())?;
    let secret = vault.get(name).map_err(|e| e.to_string())?;
    Ok(secret.expose().as_bytes().to_vec())
}

/// Rotates the log on the blocking pool (a rotation waits for a write).
async fn rotate_now(log: &AuditLog, why: &'static str) {
    let log = log.clone();
    match tokio::task::spawn_blocking(move || log.rotate()).await {
        Ok(Ok(Some(r))) => info!(
            closed = %r.closed.display(),
            first_seq = r.first_seq,
            last_seq = r.last_seq,
            why,
            "audit log rotated"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!(error = %e, why, "audit rotation failed"),
        Err(e) => warn!(error = %e, why, "audit rotation task failed"),
    }
}

async fn rotate_by_age(log: AuditLog, age: Duration, mut shutdown: watch::Receiver<bool>) {
    // Checked often enough that a file is closed within a quarter of its age limit.
    let every = (age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due = log
            .shared()
            .writer
            .lock()
            .map(|w| w.opened().elapsed().unwrap_or_default() >= age)
            .unwrap_or(false);
        if due {
            rotate_now(&log, "interval").await;
        }
    }
}

async fn rotate_on_sigusr1(log: AuditLog, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        warn!("cannot install the SIGUSR1 handler: rotate the audit log through the admin API");
        return;
    };
    loop {
        tokio::select! {
            s = usr1.recv() => if s.is_none() { return },
            _ = shutdown.changed() => return,
        }
        rotate_now(&log, "SIGUSR1").await;
    }
}

async fn maintain(
    m: Maintenance,
    mut closed: tokio::sync::mpsc::UnboundedReceiver<super::Rotation>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let m2 = m.clone();
        let _ = tokio::task::spawn_blocking(move || m2.run()).await;
        tokio::select! {
            r = closed.recv() => if r.is_none() { return },
            _ = shutdown.changed() => return,
        }
        // Several rotations in a burst are one pass.
        while closed.try_recv().is_ok() {}
    }
}
