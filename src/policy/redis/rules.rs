//! Compiled Redis rules of one agent for one upstream: union of allows, every deny kept.

use super::commands::{Categories, CommandInfo};
use super::mask::Strategy;
use crate::policy::glob::Glob;

/// A command name (`get`, `client|setname`; lower case) or an ACL category bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandPattern {
    Name(String),
    Category(u32),
}

impl CommandPattern {
    pub fn parse(word: &str) -> Option<CommandPattern> {
        if let Some(cat) = word.strip_prefix('@') {
            if cat.eq_ignore_ascii_case("all") {
                return Some(CommandPattern::Category(u32::MAX));
            }
            return Categories::bit(cat).map(CommandPattern::Category);
        }
        let ok = !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'|' | b'_' | b'-' | b'.'));
        ok.then(|| CommandPattern::Name(word.to_ascii_lowercase()))
    }

    /// Does this pattern cover `cmd` (for a subcommand: also its parent's name)?
    pub fn covers(&self, cmd: &CommandInfo) -> bool {
        match self {
            CommandPattern::Category(bits) => cmd.categories.intersects(*bits),
            CommandPattern::Name(n) => {
                n == &cmd.name
                    || cmd
                        .name
                        .split_once('|')
                        .is_some_and(|(parent, _)| parent == n)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommandRule {
    pub pattern: CommandPattern,
    pub rule: String,
}

#[derive(Debug, Clone)]
pub struct PatternRule {
    pub glob: Glob,
    pub rule: String,
}

#[derive(Debug, Clone)]
pub struct MaskMatcher {
    pub glob: Glob,
    /// Empty: the whole value / every field.
    pub fields: Vec<String>,
    pub strategy: Strategy,
    pub rule: String,
}

impl MaskMatcher {
    /// The strategy for hash field `field`, if masked.
    pub fn field(&self, field: &[u8]) -> Option<Strategy> {
        covers_field(&self.fields, field).then_some(self.strategy)
    }
}

/// Whether a mask rule's `fields` cover hash field `field` (none listed: every field).
pub fn covers_field(fields: &[String], field: &[u8]) -> bool {
    fields.is_empty() || fields.iter().any(|f| f.as_bytes() == field)
}

#[derive(Debug, Clone, Default)]
pub struct RedisRules {
    pub passthrough: bool,
    pub allow: Vec<CommandRule>,
    pub deny: Vec<CommandRule>,
    pub read_keys: Vec<PatternRule>,
    pub write_keys: Vec<PatternRule>,
    pub deny_keys: Vec<PatternRule>,
    pub channels: Vec<PatternRule>,
    pub databases: Vec<u32>,
    pub masks: Vec<MaskMatcher>,
    /// The policy files that contributed, for messages.
    pub sources: Vec<String>,
}

impl RedisRules {
    pub fn has_denies(&self) -> bool {
        !self.deny.is_empty() || !self.deny_keys.is_empty()
    }

    /// Every mask rule that matches `key`, if any does: they add up, as policy files and groups
    /// do (only the first one was applied, so a second file's mask of another field, or a
    /// narrower rule listed first, let values through; a live review).
    pub fn mask_for(&self, key: &[u8]) -> Option<KeyMask<'_>> {
        let mut matching = self.masks.iter().filter(|m| m.glob.matches_bytes(key));
        let first = matching.next()?;
        Some(KeyMask {
            rules: std::iter::once(first).chain(matching).collect(),
        })
    }

    /// Whether any mask rule matches `key`.
    pub fn is_masked(&self, key: &[u8]) -> bool {
        self.masks.iter().any(|m| m.glob.matches_bytes(key))
    }
}

/// The mask rules that apply to one key (at least one), combined: a field is masked if any rule
/// masks it, with the strictest of their strategies.
#[derive(Debug, Clone)]
pub struct KeyMask<'a> {
    rules: Vec<&'a MaskMatcher>,
}

impl KeyMask<'_> {
    /// The strategy for a whole value (GET, HVALS): the strictest of every rule's.
    pub fn value(&self) -> Strategy {
        self.rules
            .iter()
            .map(|m| m.strategy)
            .reduce(Strategy::stricter)
            .expect("a key mask has a rule")
    }

    /// The strategy for hash field `field`, if any rule masks it.
    pub fn field(&self, field: &[u8]) -> Option<Strategy> {
        self.rules
            .iter()
            .filter_map(|m| m.field(field))
            .reduce(Strategy::stricter)
    }

    /// The rules, for a refusal: the first, in file order.
    pub fn rule(&self) -> &str {
        &self.rules[0].rule
    }

    /// Each rule's fields and strategy, for masking a reply of field/value pairs.
    pub fn parts(&self) -> Vec<(Vec<String>, Strategy)> {
        self.rules
            .iter()
            .map(|m| (m.fields.clone(), m.strategy))
            .collect()
    }
}
