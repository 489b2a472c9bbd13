//! Loading the policy folder: parse every file, validate it against the config and the agents,
//! and merge the rules that apply to each agent (union of allows; explicit denies kept).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::file::{PolicyFile, PostgresRules, Profile};
use super::glob::Glob;
use super::limits::RowLimitMode;
use super::mask::MaskStrategy;
use super::rules::{
    ClassSet, FunctionMatcher, OpSet, SqlRules, StatementClass, TableMatcher, UpstreamRules,
};
use crate::auth::AgentStore;
use crate::config::{SourceError, UpstreamKind};

/// One agent's rules: those of enforcing files, and those of all files (for shadow decisions).
#[derive(Debug, Clone, Default)]
pub struct AgentPolicy {
    /// Volume limits from the enforcing files that apply (a shadow file blocks nothing).
    pub limits: super::limits::Limits,
    /// `None` when no enforcing file applies: only shadow files judge this agent.
    pub enforced: Option<HashMap<String, UpstreamRules>>,
    /// Present when at least one shadow (`enforce = false`) file applies.
    pub with_shadow: Option<HashMap<String, UpstreamRules>>,
    /// Set when some file that applies says `require_tls = true`.
    pub require_tls: Option<TlsRequirement>,
}

impl AgentPolicy {
    /// The pool mode the agent's rules ask for on `upstream` (`pool_mode` in its `[[postgres]]`
    /// block), if any: the upstream's own otherwise.
    pub fn pool_mode(&self, upstream: &str) -> Option<crate::config::PoolMode> {
        self.enforced
            .as_ref()
            .or(self.with_shadow.as_ref())
            .and_then(|m| m.get(upstream))
            .and_then(|r| r.sql())
            .and_then(|r| r.pool_mode)
    }

    /// Whether the enforced rules mask columns or filter rows of `upstream`'s tables: then a
    /// server's error DETAIL, which can quote a stored row ("Failing row contains (...)", a
    /// key's value), is not relayed.
    pub fn protects_rows(&self, upstream: &str) -> bool {
        self.enforced
            .as_ref()
            .and_then(|m| super::engine::sql_rules(m, upstream))
            .is_some_and(|r| r.has_protections())
    }

    /// Whether the agent has the passthrough profile on `upstream` (or only shadow files judge
    /// it: nothing is enforced), for checks made after the decision (`current_setting($1)` at
    /// Bind).
    pub fn passthrough(&self, upstream: &str) -> bool {
        match &self.enforced {
            Some(m) => super::engine::sql_rules(m, upstream).is_some_and(|r| r.passthrough),
            None => true,
        }
    }

    /// Whether statements of `class` may run on `upstream` under the enforced rules: for what
    /// a session goes on receiving after a reload (LISTEN's notifications). Only shadow files:
    /// nothing is enforced.
    pub fn allows_class(&self, upstream: &str, class: super::rules::StatementClass) -> bool {
        match (&self.enforced, &self.with_shadow) {
            (Some(m), _) => super::engine::sql_rules(m, upstream)
                .is_some_and(|r| r.passthrough || r.classes.contains(class)),
            (None, Some(_)) => true,
            (None, None) => false,
        }
    }
}

/// `require_tls = true` for an agent: the file that says so (an enforcing one if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRequirement {
    /// `FILE: require_tls`, named in refusals.
    pub rule: String,
    /// `false` when only shadow (`enforce = false`) files require it.
    pub enforced: bool,
}

/// Everything loaded from the policy folder, immutable once built; swapped whole on reload.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub agents: HashMap<String, Arc<AgentPolicy>>,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<SourceError>,
}

/// What the policy needs to know about the rest of the configuration.
pub struct PolicyContext<'a> {
    pub agents: &'a AgentStore,
    /// Upstream logical names, their kinds and (SQL) pinned search paths.
    pub upstreams: BTreeMap<String, UpstreamInfo>,
}

/// An upstream as the policy sees it.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    pub kind: UpstreamKind,
    pub search_path: Vec<String>,
}

impl<'a> PolicyContext<'a> {
    /// A context from (name, kind, search path) triples.
    pub fn for_upstreams(
        agents: &'a AgentStore,
        upstreams: impl IntoIterator<Item = (String, UpstreamKind, Vec<String>)>,
    ) -> PolicyContext<'a> {
        PolicyContext {
            agents,
            upstreams: upstreams
                .into_iter()
                .map(|(n, kind, search_path)| (n, UpstreamInfo { kind, search_path }))
                .collect(),
        }
    }

    /// Why a `[[block]]` may not name `upstream`: unknown, or of another kind.
    pub fn check_upstream(
        &self,
        upstream: &str,
        kind: UpstreamKind,
        block: &str,
    ) -> Result<(), String> {
        match self.upstreams.get(upstream) {
            None => Err(format!("unknown upstream \"{upstream}\" (not in tollgate.toml)")),
            Some(u) if u.kind != kind => Err(format!(
                "upstream \"{upstream}\" is of kind \"{}\"; a [[{block}]] block names a {} upstream",
                u.kind.as_str(),
                kind.as_str()
            )),
            Some(_) => Ok(()),
        }
    }
}

struct Loaded {
    path: PathBuf,
    stem: String,
    text: String,
    file: PolicyFile,
}

/// A file with nothing but blanks and comments: what a truncating write (`> file`, an editor
/// saving in place) leaves for a moment. Loaded, it would withdraw every rule the file had, masks
/// included; refused, the last good policy stays in force until the write is done (the admin
/// tokens file is read the same way).
fn holds_nothing(text: &str) -> bool {
    // A byte order mark is not whitespace to `trim`, and the TOML parser skips it (a file of a
    // BOM alone reloaded as a valid file; a live re-review).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

impl PolicySet {
    /// Loads every `*.toml` in `dir` (sorted by name). The first error aborts the load.
    pub fn load_dir(dir: &Path, ctx: &PolicyContext) -> Result<PolicySet, SourceError> {
        let entries = std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, &e))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
            .collect();
        paths.sort();
        let mut sources = Vec::new();
        for path in paths {
            let text =
                crate::config::read_regular_file(&path).map_err(|e| SourceError::io(&path, &e))?;
            sources.push((path, text));
        }
        PolicySet::from_sources(sources, ctx)
    }

    /// Builds a set from (path, text) pairs; the paths only name files in errors.
    pub fn from_sources(
        sources: Vec<(PathBuf, String)>,
        ctx: &PolicyContext,
    ) -> Result<PolicySet, SourceError> {
        let mut loaded = Vec::new();
        let mut warnings = Vec::new();
        for (path, text) in sources {
            if holds_nothing(&text) {
                return Err(SourceError::semantic(
                    &path,
                    "holds no policy (empty, or only comments): a file cut short by a write in progress? To remove a file's rules, delete the file".into(),
                ));
            }
            let file: PolicyFile =
                toml::from_str(&text).map_err(|e| SourceError::from_toml(&path, &text, &e))?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("policy")
                .to_string();
            let l = Loaded {
                path,
                stem,
                text,
                file,
            };
            validate(&l, ctx, &mut warnings)?;
            loaded.push(l);
        }
        let mut agents = HashMap::new();
        for name in ctx.agents.names() {
            let groups = ctx.agents.groups_of(name);
            let applies = |f: &PolicyFile| {
                f.agents.iter().any(|a| a.get_ref() == name)
                    || f.groups.iter().any(|g| groups.contains(g.get_ref()))
            };
            let enforcing: Vec<&Loaded> = loaded
                .iter()
                .filter(|l| applies(&l.file) && l.file.enforce)
                .collect();
            let all: Vec<&Loaded> = loaded.iter().filter(|l| applies(&l.file)).collect();
            // Limits of enforcing files only: a shadow file blocks nothing (a live review had a
            // shadow file's max_rows refuse, and its timeout cancel, statements).
            let mut limits = super::limits::Limits::default();
            for l in &enforcing {
                if let Some(f) = &l.file.limits {
                    limits.merge(f.get_ref(), &l.stem);
                }
            }
            let require_tls = all
                .iter()
                .filter(|l| l.file.require_tls)
                .max_by_key(|l| l.file.enforce)
                .map(|l| TlsRequirement {
                    rule: format!("{}: require_tls", l.stem),
                    enforced: l.file.enforce,
                });
            let policy = AgentPolicy {
                limits,
                require_tls,
                enforced: (!enforcing.is_empty()).then(|| merge(&enforcing, ctx)),
                with_shadow: (all.len() > enforcing.len()).then(|| merge(&all, ctx)),
            };
            agents.insert(name.to_string(), Arc::new(policy));
        }
        Ok(PolicySet {
            agents,
            files: loaded.into_iter().map(|l| l.path).collect(),
            warnings,
        })
    }
}

fn at<T>(l: &Loaded, spanned: &Spanned<T>, message: String) -> SourceError {
    SourceError::at(&l.path, &l.text, spanned.span().start, message)
}

fn validate(
    l: &Loaded,
    ctx: &PolicyContext,
    warnings: &mut Vec<SourceError>,
) -> Result<(), SourceError> {
    // A warning, not an error: removing an agent from agents.toml is how it is revoked, and
    // an error here kept the whole last set (the removed agent included) serving until every
    // policy file naming it was edited too (two live reviews).
    for a in &l.file.agents {
        if ctx.agents.get(a.get_ref()).is_none() {
            warnings.push(at(
                l,
                a,
                format!(
                    "agent \"{}\" is not in the agents file: this file's rules never apply to it (add it with `tollgate agent add {}`)",
                    a.get_ref(),
                    a.get_ref()
                ),
            ));
        }
    }
    let known_groups: BTreeSet<&String> = ctx
        .agents
        .names()
        .flat_map(|n| ctx.agents.groups_of(n))
        .collect();
    for g in &l.file.groups {
        if !known_groups.contains(g.get_ref()) {
            warnings.push(at(
                l,
                g,
                format!(
                    "no agent is in group \"{}\": this file's rules never apply to it",
                    g.get_ref()
                ),
            ));
        }
    }
    if l.file.agents.is_empty() && l.file.groups.is_empty() {
        warnings.push(SourceError::semantic(
            &l.path,
            "names no agents or groups: its rules never apply".into(),
        ));
    }
    let mut seen_upstreams = BTreeSet::new();
    for block in &l.file.postgres {
        let up = block.upstream.get_ref();
        ctx.check_upstream(up, UpstreamKind::Postgres, "postgres")
            .map_err(|e| at(l, &block.upstream, e))?;
        if !seen_upstreams.insert(up.clone()) {
            return Err(at(
                l,
                &block.upstream,
                format!("upstream \"{up}\" has two blocks in this file"),
            ));
        }
        for s in &block.statements {
            if StatementClass::parse(s.get_ref()).is_none() {
                let known: Vec<&str> = StatementClass::ALL.iter().map(|c| c.name()).collect();
                return Err(at(
                    l,
                    s,
                    format!(
                        "unknown statement kind \"{}\" (known: {})",
                        s.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
        let mut seen_tables = BTreeSet::new();
        for t in &block.tables {
            let name = t.name.get_ref();
            if name.is_empty() || name.matches('.').count() > 1 {
                return Err(at(
                    l,
                    &t.name,
                    format!("table \"{name}\" must be `name` or `schema.name`"),
                ));
            }
            if !seen_tables.insert(qualify(name)) {
                return Err(at(
                    l,
                    &t.name,
                    format!("table \"{name}\" is named twice for upstream \"{up}\""),
                ));
            }
            for word in t.allow.iter().chain(&t.deny) {
                if OpSet::parse_word(word.get_ref()).is_none() {
                    return Err(at(l, word, format!("unknown operation \"{}\" (known: select, insert, update, delete, truncate, ddl, dcl, lock, maintenance, read, write, *)", word.get_ref())));
                }
            }
            for (column, strategy) in &t.mask {
                if let Err(e) = MaskStrategy::parse(strategy.get_ref()) {
                    return Err(at(
                        l,
                        strategy,
                        format!("column \"{column}\" of \"{name}\": {e}"),
                    ));
                }
            }
            if let Some(f) = &t.row_filter {
                check_row_filter(f.get_ref()).map_err(|e| at(l, f, e))?;
            }
            if t.allow.is_empty() && t.deny.is_empty() {
                warnings.push(at(
                    l,
                    &t.name,
                    format!("table \"{name}\" allows and denies nothing"),
                ));
            }
        }
    }
    if let Some(limits) = &l.file.limits {
        if let Some(m) = &limits.get_ref().on_max_rows {
            if RowLimitMode::parse(m.get_ref()).is_none() {
                return Err(at(
                    l,
                    m,
                    format!(
                        "unknown on_max_rows \"{}\" (known: truncate, refuse)",
                        m.get_ref()
                    ),
                ));
            }
        }
        if limits.get_ref().statements_per_minute == Some(0) {
            let message = "statements_per_minute must be at least 1".to_string();
            // At the key itself (the table's header when it cannot be found).
            let key =
                crate::config::key_span::locate_key(&l.text, &["limits", "statements_per_minute"]);
            return Err(match key {
                Some(offset) => SourceError::at(&l.path, &l.text, offset, message),
                None => at(l, limits, message),
            });
        }
    }
    super::redis::compile::validate(&l.path, &l.text, &l.file.redis, ctx)?;
    super::mongo::compile::validate(&l.path, &l.text, &l.file.mongo, ctx)?;
    Ok(())
}

/// A row filter must be one boolean condition PostgreSQL parses, calling only safe built-ins
/// and reading no other relation (it runs with the gateway's upstream role, for the agent).
fn check_row_filter(filter: &str) -> Result<(), String> {
    let probe = format!("SELECT 1 FROM t WHERE ({filter})");
    let analysis = crate::policy::sql::analyze(&probe)
        .map_err(|e| format!("row_filter is not a SQL condition: {e}"))?;
    let ok_shape = analysis.statements.len() == 1
        && analysis.statements[0].relations.len() == 1
        && analysis.statements[0].kind == crate::policy::sql::StatementKind::Select;
    if !ok_shape {
        return Err("row_filter must be one condition over the table's own columns".into());
    }
    if let Some(f) = analysis.statements[0]
        .functions
        .iter()
        .find(|f| !crate::policy::sql::is_safe_builtin_function(f))
    {
        return Err(format!(
            "row_filter calls {}, which is not a safe built-in function",
            f.name
        ));
    }
    Ok(())
}

/// `orders` → `public.orders`; `s.t` unchanged.
/// A table pattern as `schema.table`: a bare name is in `public`, except `*` alone, which is
/// every table of every schema (DESIGN.md's `*`; read as `public.*`, a `deny = ["*"]` missed
/// every other schema).
fn qualify(name: &str) -> String {
    if name == "*" {
        "*.*".to_string()
    } else if name.contains('.') {
        name.to_string()
    } else {
        format!("public.{name}")
    }
}

fn ops(words: &[Spanned<String>]) -> OpSet {
    let mut set = OpSet::default();
    for w in words {
        if let Some(s) = OpSet::parse_word(w.get_ref()) {
            for op in super::rules::Op::ALL {
                if s.contains(op) {
                    set.insert(op);
                }
            }
        }
    }
    set
}

fn merge(files: &[&Loaded], ctx: &PolicyContext) -> HashMap<String, UpstreamRules> {
    let mut out: HashMap<String, UpstreamRules> = HashMap::new();
    for l in files {
        for block in &l.file.postgres {
            let up = block.upstream.get_ref().clone();
            let rules = out.entry(up.clone()).or_insert_with(|| {
                UpstreamRules::Sql(SqlRules {
                    classes: ClassSet::defaults(),
                    search_path: ctx
                        .upstreams
                        .get(&up)
                        .map(|u| u.search_path.clone())
                        .unwrap_or_default(),
                    ..SqlRules::default()
                })
            });
            // Validation made sure a block's kind is its upstream's.
            if let UpstreamRules::Sql(rules) = rules {
                merge_block(rules, l, block);
            }
        }
        for block in &l.file.redis {
            let up = block.upstream.get_ref().clone();
            let rules = out
                .entry(up)
                .or_insert_with(|| UpstreamRules::Redis(Default::default()));
            if let UpstreamRules::Redis(rules) = rules {
                super::redis::compile::merge(rules, &l.stem, block);
            }
        }
        for block in &l.file.mongo {
            let up = block.upstream.get_ref().clone();
            let rules = out
                .entry(up)
                .or_insert_with(|| UpstreamRules::Mongo(Default::default()));
            if let UpstreamRules::Mongo(rules) = rules {
                super::mongo::compile::merge(rules, &l.stem, block);
            }
        }
    }
    out
}

fn merge_block(rules: &mut SqlRules, l: &Loaded, block: &PostgresRules) {
    rules.sources.push(l.stem.clone());
    rules.passthrough |= block.profile == Profile::Passthrough;
    // Session pooling is never taken away by another file.
    rules.pool_mode = match (rules.pool_mode, block.pool_mode) {
        (Some(crate::config::PoolMode::Session), _)
        | (_, Some(crate::config::PoolMode::Session)) => Some(crate::config::PoolMode::Session),
        (a, b) => b.or(a),
    };
    rules.catalog |= block.catalog;
    for s in &block.statements {
        if let Some(c) = StatementClass::parse(s.get_ref()) {
            rules.classes.insert(c);
        }
    }
    for t in &block.tables {
        let name = qualify(t.name.get_ref());
        rules.tables.push(TableMatcher {
            glob: Glob::new(&name),
            allow: ops(&t.allow),
            deny: ops(&t.deny),
            rule: format!("{}: table {}", l.stem, name),
            masks: t
                .mask
                .iter()
                .filter_map(|(c, s)| Some((c.clone(), MaskStrategy::parse(s.get_ref()).ok()?)))
                .collect(),
            exact: !name.contains(['*', '?', '[']),
            row_filter: t.row_filter.as_ref().map(|f| f.get_ref().clone()),
        });
    }
    for f in &block.functions {
        rules.allow_functions.push(FunctionMatcher {
            glob: Glob::new(f.get_ref()),
            rule: format!("{}: functions", l.stem),
        });
    }
    for f in &block.deny_functions {
        rules.deny_functions.push(FunctionMatcher {
            glob: Glob::new(f.get_ref()),
            rule: format!("{}: deny_functions {}", l.stem, f.get_ref()),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{PolicyContext, PolicySet};
    use crate::auth::{AgentStore, AgentsFile};
    use crate::config::UpstreamKind;

    fn load(text: &str) -> Result<PolicySet, crate::config::SourceError> {
        let mut agents = AgentsFile::default();
        agents.add("analyst", "tg_x", vec![]).unwrap();
        let store = AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
        let shop = ("shop".into(), UpstreamKind::Postgres, vec!["public".into()]);
        let cache = ("cache".into(), UpstreamKind::Redis, vec![]);
        let ctx = PolicyContext::for_upstreams(&store, [shop, cache]);
        PolicySet::from_sources(vec![(PathBuf::from("a.toml"), text.into())], &ctx)
    }

    #[test]
    fn a_file_cut_to_nothing_is_refused_not_read_as_no_rules() {
        for cut in [
            "",
            "\n\n",
            "   \n",
            "# grants\n\n  # more\n",
            "\u{feff}",
            "\u{feff}# x\r\n",
        ] {
            let e = load(cut).err().unwrap_or_else(|| panic!("{cut:?} loaded"));
            assert!(e.to_string().contains("holds no policy"), "{e}");
        }
        // A file that says something, if only that it names no one, loads (with a warning).
        let set = load("# nobody yet\nagents = []\n").unwrap();
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    }

    #[test]
    fn a_zero_rate_is_refused_at_its_key() {
        let text = "agents = [\"analyst\"]\n[limits]\nmax_rows = 5\nstatements_per_minute = 0\n";
        let Err(e) = load(text) else {
            panic!("a rate of 0 loaded")
        };
        assert!(
            e.to_string()
                .contains("a.toml:4:1: statements_per_minute must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn redis_patterns_with_classes_or_escapes_are_refused_where_they_stand() {
        // tollgate's globs know * and ? only; Redis reads [..] and \ too, so a deny written
        // with a class would deny nothing its author meant.
        for (field, pattern) in [
            ("read_keys", "cache:["),
            ("deny_keys", "secret:[ab]*"),
            ("write_keys", "cache:\\*"),
            ("channels", "news.]"),
        ] {
            let text = format!(
                "agents = [\"analyst\"]\n[[redis]]\nupstream = \"cache\"\n{field} = ['{pattern}']\n"
            );
            let e = load(&text)
                .err()
                .unwrap_or_else(|| panic!("{pattern} loaded"));
            let e = e.to_string();
            assert!(e.contains("a.toml:4:"), "{e}");
            assert!(e.contains("know only * (any run) and ?"), "{e}");
        }
        let masked = "agents = [\"analyst\"]\n[[redis]]\nupstream = \"cache\"\nread_keys = [\"s:*\"]\n[[redis.mask]]\nkeys = \"s:[0-9]*\"\n";
        let Err(e) = load(masked) else {
            panic!("a class in a mask's keys loaded")
        };
        let e = e.to_string();
        assert!(e.contains("a.toml:6:"), "{e}");
        load("agents = [\"analyst\"]\n[[redis]]\nupstream = \"cache\"\nread_keys = [\"cache:?x*\"]\n")
            .unwrap();
    }
}
