//! `tollgate explain` for a Redis upstream: the decision, the rule, the keys found and the mask.
//! The command table is read from the upstream itself (`COMMAND`), as the gateway does.

use std::time::Duration;

use crate::config::Config;
use crate::policy::redis::{MaskPlan, RedisPolicy};
use crate::policy::{Engine, Outcome};
use crate::redis::command::split_args;
use crate::redis::upstream::RedisTarget;
use crate::vault::{MasterKey, Vault};

pub fn explain(
    config: &Config,
    engine: &Engine,
    agent: &str,
    upstream: &str,
    statement: &str,
) -> Result<i32, String> {
    let u = &config.upstreams[upstream];
    let key = MasterKey::load(config.vault.key_file.as_deref()).map_err(|e| e.to_string())?;
    let vault = Vault::open(&config.vault.file, key).map_err(|e| e.to_string())?;
    let target = RedisTarget::from_config(upstream, u, &vault).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(config.limits.upstream_connect_timeout_ms);
    let table = rt
        .block_on(target.table(timeout))
        .map_err(|e| format!("reading the command table of upstream \"{upstream}\": {e}"))?;
    let args = split_args(statement.as_bytes()).ok_or("unbalanced quotes in the command")?;
    if args.is_empty() {
        return Err("empty command".into());
    }
    let mut policy = RedisPolicy::new(agent.into(), upstream.into());
    let verdict = policy.check(engine, &table, &args);
    for k in &verdict.keys {
        let what = match (k.access.read || k.access.exposes, k.access.write) {
            (true, true) => "read+write",
            (true, false) => "read",
            (false, true) => "write",
            _ => "metadata",
        };
        say!(
            "key:       {} ({what})",
            String::from_utf8_lossy(&args[k.index])
        );
    }
    let (decision, rule) = match verdict.outcome {
        Outcome::Block => ("blocked", None),
        Outcome::WouldBlock => ("would_block (shadow policy: the command runs)", None),
        Outcome::Allow if !verdict.mask.is_none() => ("masked", verdict.mask_rule.clone()),
        Outcome::Allow => match &verdict.rewritten {
            Some((_, rule)) => ("rewritten", Some(rule.clone())),
            None => ("allowed", None),
        },
    };
    say!("decision:  {decision}");
    if let Some(d) = &verdict.denial {
        say!("rule:      {}", d.rule);
        say!("reason:    {}", d.reason);
    } else if let Some(rule) = rule {
        say!("rule:      {rule}");
    }
    if !matches!(verdict.mask, MaskPlan::None) {
        say!("mask:      {}", verdict.mask.describe());
    }
    if let Some((args, _)) = &verdict.rewritten {
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        say!("rewritten: {}", shown.join(" "));
        say!("reason:    blocking timeout capped to the statement timeout");
    }
    super::admin_cmds::say_limits(engine, agent);
    Ok(0)
}
