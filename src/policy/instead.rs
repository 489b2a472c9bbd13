//! What an agent may do instead, said with a refusal: the tables and operations (or Redis
//! commands, keys and channels) its policy gives it on the upstream it used, the masked columns
//! and fields, or the upstreams it may reach. Pure: built from the compiled rules, bounded in
//! length so a refusal stays one readable line, with the same words on every protocol.

use std::collections::HashMap;

use super::redis::rules::CommandPattern;
use super::redis::RedisRules;
use super::rules::{Op, OpSet, SqlRules, StatementClass, UpstreamRules};

/// Longest `instead` text, in bytes; longer lists end with "… and N more".
pub const MAX_INSTEAD: usize = 480;

/// Joins `items` with `sep` after `head`, stopping before `MAX_INSTEAD` and saying how many
/// items were left out.
fn bounded(head: &str, items: &[String], sep: &str) -> String {
    let mut out = head.to_string();
    for (i, item) in items.iter().enumerate() {
        let left = items.len() - i;
        let tail = format!("{sep}… and {left} more");
        let piece = if i == 0 {
            item.clone()
        } else {
            format!("{sep}{item}")
        };
        // Keep room for the "and N more" note unless this is the last item.
        let room = if left == 1 { 0 } else { tail.len() };
        if out.len() + piece.len() + room > MAX_INSTEAD {
            if i == 0 {
                out.push_str(&format!("… {left} items"));
            } else {
                out.push_str(&tail);
            }
            return out;
        }
        out.push_str(&piece);
    }
    out
}

fn ops(set: OpSet) -> String {
    if Op::ALL.iter().all(|o| set.contains(*o)) {
        return "all".into();
    }
    Op::ALL
        .iter()
        .filter(|o| set.contains(**o))
        .map(|o| o.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// For a refusal on SQL upstream `upstream`: what `rules` allow there.
pub fn sql(upstream: &str, rules: &SqlRules) -> String {
    let mut items = Vec::new();
    let head = if rules.passthrough {
        format!(
            "agent has the passthrough profile on \"{upstream}\": everything the upstream role may do except tollgate's built-in protections"
        )
    } else {
        format!("allowed on \"{upstream}\": ")
    };
    if !rules.passthrough {
        for t in rules.tables.iter().filter(|t| !t.allow.is_empty()) {
            let mut s = format!("{} ({}", t.glob.as_str(), ops(t.allow));
            if !t.masks.is_empty() {
                let cols: Vec<&str> = t.masks.iter().map(|(c, _)| c.as_str()).collect();
                s.push_str(&format!("; masked: {}", cols.join(", ")));
            }
            if t.row_filter.is_some() {
                s.push_str("; rows filtered");
            }
            s.push(')');
            items.push(s);
        }
        if rules.catalog {
            items.push("catalog tables (select)".into());
        }
        let kinds: Vec<&str> = StatementClass::ALL
            .iter()
            .filter(|c| rules.classes.contains(**c))
            .map(|c| c.name())
            .collect();
        if !kinds.is_empty() {
            items.push(format!("statement kinds: {}", kinds.join(", ")));
        }
        if !rules.allow_functions.is_empty() {
            let f: Vec<&str> = rules
                .allow_functions
                .iter()
                .map(|f| f.glob.as_str())
                .collect();
            items.push(format!("functions: {}", f.join(", ")));
        }
        if items.is_empty() {
            items.push("nothing (no table, statement kind or function is granted)".into());
        }
    }
    let denied: Vec<String> = rules
        .tables
        .iter()
        .filter(|t| !t.deny.is_empty())
        .map(|t| format!("{} on {}", ops(t.deny), t.glob.as_str()))
        .chain(
            rules
                .deny_functions
                .iter()
                .map(|f| format!("function {}", f.glob.as_str())),
        )
        .collect();
    let mut out = bounded(&head, &items, "; ");
    if !denied.is_empty() && out.len() < MAX_INSTEAD - 40 {
        let rest = bounded("; denied: ", &denied, ", ");
        if out.len() + rest.len() <= MAX_INSTEAD {
            out.push_str(&rest);
        }
    }
    out
}

fn command_word(p: &CommandPattern) -> String {
    match p {
        CommandPattern::Name(n) => n.clone(),
        CommandPattern::Category(u32::MAX) => "@all".into(),
        CommandPattern::Category(bits) => super::redis::commands::CATEGORIES
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, c)| format!("@{c}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// For a refusal on Redis upstream `upstream`: what `rules` allow there.
pub fn redis(upstream: &str, rules: &RedisRules) -> String {
    let globs = |list: &[super::redis::rules::PatternRule]| -> String {
        list.iter()
            .map(|r| r.glob.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut items = Vec::new();
    let head = if rules.passthrough {
        format!(
            "agent has the passthrough profile on \"{upstream}\": every command except tollgate's built-in protections"
        )
    } else {
        format!("allowed on \"{upstream}\": ")
    };
    if !rules.passthrough {
        if rules.allow.is_empty() {
            items.push("no commands".into());
        } else {
            let words: Vec<String> = rules
                .allow
                .iter()
                .map(|a| command_word(&a.pattern))
                .collect();
            items.push(format!("commands {}", words.join(", ")));
        }
        if !rules.read_keys.is_empty() {
            items.push(format!("read keys {}", globs(&rules.read_keys)));
        }
        if !rules.write_keys.is_empty() {
            items.push(format!("write keys {}", globs(&rules.write_keys)));
        }
        if rules.read_keys.is_empty() && rules.write_keys.is_empty() {
            items.push("no keys".into());
        }
        if !rules.channels.is_empty() {
            items.push(format!("channels {}", globs(&rules.channels)));
        }
        if rules.databases != [0] {
            let dbs: Vec<String> = rules.databases.iter().map(u32::to_string).collect();
            items.push(format!("databases {}", dbs.join(", ")));
        }
    }
    for m in &rules.masks {
        let what = if m.fields.is_empty() {
            "values".to_string()
        } else {
            format!("fields {}", m.fields.join(", "))
        };
        items.push(format!("masked: {} ({what})", m.glob.as_str()));
    }
    let mut denied: Vec<String> = rules
        .deny
        .iter()
        .map(|d| command_word(&d.pattern))
        .collect();
    denied.extend(
        rules
            .deny_keys
            .iter()
            .map(|k| format!("keys {}", k.glob.as_str())),
    );
    if !denied.is_empty() {
        items.push(format!("denied: {}", denied.join(", ")));
    }
    if rules.passthrough && !items.is_empty() {
        return bounded(&format!("{head}; "), &items, "; ");
    }
    bounded(&head, &items, "; ")
}

/// For a refusal on MongoDB upstream `upstream`: the collections and operations `rules` allow,
/// with their masked fields.
pub fn mongo(upstream: &str, rules: &super::mongo::rules::MongoRules) -> String {
    use super::mongo::rules::Op as MongoOp;
    if rules.passthrough {
        return format!(
            "agent has the passthrough profile on \"{upstream}\": every command except tollgate's built-in protections"
        );
    }
    let mut items = Vec::new();
    for c in &rules.collections {
        let allowed: Vec<&str> = MongoOp::ALL
            .iter()
            .filter(|o| c.allow.contains(**o) && !c.deny.contains(**o))
            .map(|o| o.name())
            .collect();
        if allowed.is_empty() {
            continue;
        }
        let mut s = format!("{} ({}", c.glob.as_str(), allowed.join(", "));
        if !c.masks.is_empty() {
            let fields: Vec<&str> = c.masks.iter().map(|(f, _)| f.as_str()).collect();
            s.push_str(&format!("; masked: {}", fields.join(", ")));
        }
        if c.row_filter.is_some() {
            s.push_str("; documents filtered");
        }
        s.push(')');
        items.push(s);
    }
    if items.is_empty() {
        items.push("nothing (no collection is granted)".into());
    }
    bounded(&format!("allowed on \"{upstream}\": "), &items, "; ")
}

/// For a refusal on `upstream` of any kind.
pub fn for_upstream(upstream: &str, rules: &UpstreamRules) -> String {
    match rules {
        UpstreamRules::Sql(r) => sql(upstream, r),
        UpstreamRules::Redis(r) => redis(upstream, r),
        UpstreamRules::Mongo(r) => mongo(upstream, r),
    }
}

/// For an agent refused an upstream: the upstreams its policy names.
pub fn upstreams(map: Option<&HashMap<String, UpstreamRules>>) -> String {
    let mut names: Vec<String> = map
        .map(|m| m.keys().map(|k| format!("\"{k}\"")).collect())
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        return "no upstream is granted to this agent".into();
    }
    bounded("upstreams this agent may use: ", &names, ", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::glob::Glob;
    use crate::policy::mask::MaskStrategy;
    use crate::policy::rules::{ClassSet, TableMatcher};

    fn table(name: &str, allow: &[&str], masks: &[&str]) -> TableMatcher {
        let mut set = OpSet::default();
        for w in allow {
            let s = OpSet::parse_word(w).unwrap();
            for op in Op::ALL {
                if s.contains(op) {
                    set.insert(op);
                }
            }
        }
        TableMatcher {
            glob: Glob::new(name),
            allow: set,
            deny: OpSet::default(),
            rule: "t".into(),
            masks: masks
                .iter()
                .map(|c| (c.to_string(), MaskStrategy::Null))
                .collect(),
            exact: true,
            row_filter: None,
        }
    }

    #[test]
    fn sql_lists_tables_masks_and_kinds() {
        let rules = SqlRules {
            classes: ClassSet::defaults(),
            tables: vec![
                table("public.customers", &["select"], &["email", "phone", "ssn"]),
                table("public.orders", &["select"], &[]),
            ],
            ..SqlRules::default()
        };
        assert_eq!(
            sql("shop", &rules),
            "allowed on \"shop\": public.customers (select; masked: email, phone, ssn); \
             public.orders (select); statement kinds: transaction, session, explain, prepare, cursor"
        );
        let pass = SqlRules {
            passthrough: true,
            ..SqlRules::default()
        };
        assert!(sql("shop", &pass).starts_with("agent has the passthrough profile on \"shop\""));
    }

    #[test]
    fn long_lists_are_bounded() {
        let rules = SqlRules {
            tables: (0..200)
                .map(|i| table(&format!("public.table_number_{i}"), &["read"], &[]))
                .collect(),
            ..SqlRules::default()
        };
        let s = sql("shop", &rules);
        assert!(s.len() <= MAX_INSTEAD, "{} bytes", s.len());
        assert!(s.contains("more"), "{s}");
        assert!(s.starts_with("allowed on \"shop\": public.table_number_0 (select)"));
    }

    #[test]
    fn redis_lists_commands_keys_channels_and_masks() {
        let mut r = RedisRules {
            allow: vec![
                crate::policy::redis::rules::CommandRule {
                    pattern: CommandPattern::parse("@read").unwrap(),
                    rule: "a".into(),
                },
                crate::policy::redis::rules::CommandRule {
                    pattern: CommandPattern::parse("get").unwrap(),
                    rule: "a".into(),
                },
            ],
            databases: vec![0],
            ..RedisRules::default()
        };
        r.read_keys.push(crate::policy::redis::rules::PatternRule {
            glob: Glob::new("cache:*"),
            rule: "a".into(),
        });
        r.channels.push(crate::policy::redis::rules::PatternRule {
            glob: Glob::new("news.*"),
            rule: "a".into(),
        });
        r.masks.push(crate::policy::redis::rules::MaskMatcher {
            glob: Glob::new("session:*"),
            fields: vec!["email".into()],
            strategy: crate::policy::redis::Strategy::Redact,
            rule: "a".into(),
        });
        assert_eq!(
            redis("cache", &r),
            "allowed on \"cache\": commands @read, get; read keys cache:*; channels news.*; \
             masked: session:* (fields email)"
        );
    }

    #[test]
    fn upstream_lists_are_sorted() {
        let mut m = HashMap::new();
        m.insert("shop".to_string(), UpstreamRules::Sql(SqlRules::default()));
        m.insert(
            "cache".to_string(),
            UpstreamRules::Redis(RedisRules::default()),
        );
        assert_eq!(
            upstreams(Some(&m)),
            "upstreams this agent may use: \"cache\", \"shop\""
        );
        assert_eq!(upstreams(None), "no upstream is granted to this agent");
    }
}
