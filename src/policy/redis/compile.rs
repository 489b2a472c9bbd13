//! Validating `[[redis]]` blocks (errors with file:line:col) and merging them into an agent's
//! rules: union of allows, every deny kept, databases united (default: 0).

use std::collections::BTreeSet;
use std::path::Path;

use toml::Spanned;

use super::file::RedisBlock;
use super::mask::Strategy;
use super::rules::{CommandPattern, CommandRule, MaskMatcher, PatternRule, RedisRules};
use crate::config::SourceError;
use crate::policy::file::Profile;
use crate::policy::glob::Glob;
use crate::policy::PolicyContext;

fn at<T>(path: &Path, text: &str, s: &Spanned<T>, message: String) -> SourceError {
    SourceError::at(path, text, s.span().start, message)
}

/// A policy's key and channel globs know `*` and `?` only. Redis's own patterns (SCAN MATCH,
/// PSUBSCRIBE, KEYS) also read `[...]` as a class and `\` as an escape: a policy pattern
/// written that way would be matched literally here, so `deny_keys = ["secret:[ab]*"]` would
/// deny nothing the author meant. Refused at load rather than read one way or the other.
fn redis_syntax_unsupported(pattern: &str) -> Option<String> {
    let c = pattern.chars().find(|c| matches!(c, '[' | ']' | '\\'))?;
    Some(format!(
        "'{c}' in the pattern \"{pattern}\": tollgate's patterns know only * (any run) and ? (one character); Redis would read [...] as a character class and \\ as an escape, so the pattern would not mean what it says"
    ))
}

pub fn validate(
    path: &Path,
    text: &str,
    blocks: &[RedisBlock],
    ctx: &PolicyContext,
) -> Result<(), SourceError> {
    let mut seen = BTreeSet::new();
    for block in blocks {
        let up = block.upstream.get_ref();
        ctx.check_upstream(up, crate::config::UpstreamKind::Redis, "redis")
            .map_err(|e| at(path, text, &block.upstream, e))?;
        if !seen.insert(up.clone()) {
            return Err(at(
                path,
                text,
                &block.upstream,
                format!("upstream \"{up}\" has two [[redis]] blocks in this file"),
            ));
        }
        for word in block.commands.iter().chain(&block.deny_commands) {
            if CommandPattern::parse(word.get_ref()).is_none() {
                return Err(at(
                    path,
                    text,
                    word,
                    format!(
                        "\"{}\" is neither a command name nor a known category (@read, @write, @keyspace, @admin, @dangerous, @scripting, @pubsub, @blocking, ... or @all)",
                        word.get_ref()
                    ),
                ));
            }
        }
        for p in block
            .read_keys
            .iter()
            .chain(&block.write_keys)
            .chain(&block.deny_keys)
            .chain(&block.channels)
        {
            if p.get_ref().is_empty() {
                return Err(at(path, text, p, "empty pattern".into()));
            }
            if let Some(e) = redis_syntax_unsupported(p.get_ref()) {
                return Err(at(path, text, p, e));
            }
        }
        for m in &block.mask {
            if m.keys.get_ref().is_empty() {
                return Err(at(path, text, &m.keys, "empty key pattern".into()));
            }
            if let Some(e) = redis_syntax_unsupported(m.keys.get_ref()) {
                return Err(at(path, text, &m.keys, e));
            }
            if let Some(s) = &m.strategy {
                if Strategy::parse(s.get_ref()).is_none() {
                    return Err(at(
                        path,
                        text,
                        s,
                        format!(
                            "unknown mask strategy \"{}\" (known: {})",
                            s.get_ref(),
                            Strategy::NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn merge(rules: &mut RedisRules, stem: &str, block: &RedisBlock) {
    rules.sources.push(stem.to_string());
    rules.passthrough |= block.profile == Profile::Passthrough;
    for w in &block.commands {
        if let Some(pattern) = CommandPattern::parse(w.get_ref()) {
            rules.allow.push(CommandRule {
                pattern,
                rule: format!("{stem}: commands {}", w.get_ref()),
            });
        }
    }
    for w in &block.deny_commands {
        if let Some(pattern) = CommandPattern::parse(w.get_ref()) {
            rules.deny.push(CommandRule {
                pattern,
                rule: format!("{stem}: deny_commands {}", w.get_ref()),
            });
        }
    }
    let patterns = |list: &[Spanned<String>], what: &str| -> Vec<PatternRule> {
        list.iter()
            .map(|p| PatternRule {
                glob: Glob::new(p.get_ref()),
                rule: format!("{stem}: {what} {}", p.get_ref()),
            })
            .collect()
    };
    rules
        .read_keys
        .extend(patterns(&block.read_keys, "read_keys"));
    rules
        .write_keys
        .extend(patterns(&block.write_keys, "write_keys"));
    rules
        .deny_keys
        .extend(patterns(&block.deny_keys, "deny_keys"));
    rules.channels.extend(patterns(&block.channels, "channels"));
    match &block.databases {
        Some(dbs) => rules.databases.extend(dbs.iter().map(|d| *d.get_ref())),
        None => rules.databases.push(0),
    }
    rules.databases.sort_unstable();
    rules.databases.dedup();
    for m in &block.mask {
        rules.masks.push(MaskMatcher {
            glob: Glob::new(m.keys.get_ref()),
            fields: m.fields.iter().map(|f| f.get_ref().clone()).collect(),
            strategy: m
                .strategy
                .as_ref()
                .and_then(|s| Strategy::parse(s.get_ref()))
                .unwrap_or(Strategy::Redact),
            rule: format!("{stem}: mask {}", m.keys.get_ref()),
        });
    }
}
