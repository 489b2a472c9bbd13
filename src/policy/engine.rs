//! The policy engine the front ends call: current rules (swapped atomically on reload), analysis,
//! decision, and a bounded decision cache keyed by policy version, agent, upstream and exact text.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use super::compile::{AgentPolicy, PolicySet};
use super::decide::{self, decide, SessionFacts, DEFAULT_DENY};
use super::mask::{PositionMap, RewritePlan, SchemaSnapshot};
use super::sql::login_guard::{self, UpstreamLogin};
use super::sql::{self, Analysis, StatementKind};
use crate::refusal::{Refusal, RefusalClass};

/// How a statement may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Refused.
    Block,
    /// Refused by a shadow (`enforce = false`) policy only: audited, then run.
    WouldBlock,
}

/// Changes to session state a statement makes, which later decisions depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Prepared(String),
    Deallocated(Option<String>),
    /// `EXECUTE name`, directly or inside EXPLAIN.
    Executes(String),
    /// `pg_cancel_backend` / `pg_terminate_backend` of process ids given as literals or
    /// parameters: the front end checks each with `backends::check_target` before forwarding
    /// (parameters at Bind).
    Signals(Vec<sql::SignalTarget>),
    /// `current_setting($n)`: the parameters whose values name a setting, checked at Bind for
    /// restricted agents (`decide::check_setting_read`).
    SettingParams(Vec<i32>),
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    pub denial: Option<Refusal>,
    pub effects: Vec<Effect>,
    /// Masking / row-filter rewrite to apply before forwarding (allowed statements only).
    pub rewrite: Option<Arc<RewritePlan>>,
    /// Running it may leave state in the server session beyond its transaction (SET, LISTEN,
    /// PREPARE, temporary tables, unknown functions, ...; true when not analysed): under
    /// transaction pooling the session then keeps its server connection.
    pub leaves_state: bool,
    /// It holds a `SET LOCAL` of a setting: that ends with the transaction, but a statement
    /// prepared meanwhile keeps what it read under it (a date literal under `DateStyle`, its
    /// text under `client_encoding`). Under transaction pooling prepared statements are shared
    /// by every session on the connection, so it is reset before another session gets it.
    pub sets_local: bool,
    /// It holds a statement that takes session state back to the connection's defaults
    /// (`RESET`, `DISCARD`, `DEALLOCATE`, `UNLISTEN`): it does not pin (`leaves_state` is false
    /// for it), but settings tollgate reads may change.
    pub clears_state: bool,
    /// How many statements the text holds, as analysed (each takes one token of the agent's
    /// rate); 0 when it was not analysed (the passthrough fast path, a refusal before analysis).
    pub statements: usize,
}

impl Verdict {
    pub fn runs(&self) -> bool {
        self.outcome != Outcome::Block
    }

    pub fn blocked(denial: Refusal) -> Verdict {
        Verdict {
            outcome: Outcome::Block,
            denial: Some(denial),
            effects: Vec::new(),
            rewrite: None,
            leaves_state: false,
            sets_local: false,
            clears_state: false,
            statements: 0,
        }
    }

    /// The text to forward: `sql` itself, or its masked rewrite.
    pub fn forwarded_text<'a>(&self, sql: &'a str) -> Result<std::borrow::Cow<'a, str>, Refusal> {
        Ok(match self.rewritten(sql)? {
            Some((text, _)) => std::borrow::Cow::Owned(text),
            None => std::borrow::Cow::Borrowed(sql),
        })
    }

    /// The masked rewrite of `sql` and where its text came from, or `None`: forwarded as is.
    pub fn rewritten(&self, sql: &str) -> Result<Option<(String, PositionMap)>, Refusal> {
        match &self.rewrite {
            Some(plan) if plan.has_edits() => plan
                .apply(sql)
                .map(Some)
                .map_err(|e| Refusal::permission(e.rule, e.reason)),
            _ => Ok(None),
        }
    }
}

/// Cache lookups since start, as the engine counts them (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub shape_hits: u64,
    pub misses: u64,
}

impl CacheCounts {
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.shape_hits + self.misses;
        if total == 0 {
            0.0
        } else {
            (self.hits + self.shape_hits) as f64 / total as f64
        }
    }
}

const CACHE_CAPACITY: usize = 50_000;

/// One cache per (policy version, agent, upstream): looking a text up needs no allocation.
#[derive(Hash, PartialEq, Eq, Clone)]
struct Scope {
    version: u64,
    agent: Arc<str>,
    upstream: Arc<str>,
}

/// Verdicts of one scope: by exact text, and by shape (PostgreSQL-scanner fingerprint: the
/// same statement with other literals, comments or whitespace). Only verdicts that do not depend
/// on literals or session state are stored.
#[derive(Default)]
struct ScopeCache {
    texts: DashMap<Box<str>, Arc<Verdict>>,
    shapes: DashMap<u64, Arc<Verdict>>,
}

/// What a cache miss already found out, so `check_sql` does not look it up again.
struct Miss {
    policy: Option<Arc<AgentPolicy>>,
    cache: Arc<ScopeCache>,
    shape: Option<u64>,
}

pub struct Engine {
    current: ArcSwap<PolicySet>,
    version: AtomicU64,
    cache: DashMap<Scope, Arc<ScopeCache>>,
    cached: AtomicUsize,
    allow_all: Arc<Verdict>,
    /// Table shapes per upstream, for masking subqueries.
    schemas: ArcSwap<std::collections::HashMap<String, Arc<SchemaSnapshot>>>,
    /// Key of the `hash` mask (hex), derived from the master key.
    mask_key: ArcSwap<String>,
    /// What tollgate logs in to each SQL upstream as (from the vault and the config): the
    /// built-in login protections of every agent's statements need it.
    logins: ArcSwap<std::collections::HashMap<String, UpstreamLogin>>,
    /// Cache lookups since start: hits, shape hits, misses (read by the metrics endpoint).
    cache_counts: [AtomicU64; 3],
    /// Bumped whenever the cache is cleared.
    cache_epoch: AtomicU64,
}

/// A session's handle on its (agent, upstream) scope: the scope's cache and the agent's policy
/// as of a policy version and cache epoch.
#[derive(Default)]
pub struct ScopeHandle {
    resolved: Option<(u64, u64)>,
    cache: Option<Arc<ScopeCache>>,
    policy: Option<Arc<AgentPolicy>>,
    passthrough: bool,
}

impl std::fmt::Debug for ScopeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeHandle")
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("version", &self.version.load(Ordering::Relaxed))
            .finish()
    }
}

impl Engine {
    pub fn new(set: PolicySet) -> Engine {
        Engine {
            current: ArcSwap::from_pointee(set),
            version: AtomicU64::new(1),
            cache: DashMap::new(),
            cached: AtomicUsize::new(0),
            allow_all: Arc::new(Verdict {
                outcome: Outcome::Allow,
                denial: None,
                effects: Vec::new(),
                rewrite: None,
                // Not analysed: whatever it does may outlive its transaction.
                leaves_state: true,
                sets_local: false,
                clears_state: false,
                statements: 0,
            }),
            schemas: ArcSwap::from_pointee(Default::default()),
            mask_key: ArcSwap::from_pointee(String::new()),
            logins: ArcSwap::from_pointee(Default::default()),
            cache_counts: Default::default(),
            cache_epoch: AtomicU64::new(0),
        }
    }

    /// Decision cache lookups since start (passthrough fast-path answers are not lookups).
    pub fn cache_counts(&self) -> CacheCounts {
        let n = |i: usize| self.cache_counts[i].load(Ordering::Relaxed);
        CacheCounts {
            hits: n(0),
            shape_hits: n(1),
            misses: n(2),
        }
    }

    /// The key of the `hash` mask (hex).
    pub fn mask_key(&self) -> String {
        self.mask_key.load().as_str().to_owned()
    }

    /// The text `verdict` forwards for `sql`, as shown to a person (the MCP `explain` tool,
    /// `tollgate explain`): the `hash` mask's key replaced by `'<mask key>'`.
    pub fn shown_rewrite(&self, verdict: &Verdict, sql: &str) -> Result<String, Refusal> {
        let text = verdict.forwarded_text(sql)?;
        Ok(super::mask::key::hide(&text, &self.mask_key.load()).into_owned())
    }

    /// Sets the key of the `hash` mask.
    pub fn set_mask_key(&self, hex_key: String) {
        self.mask_key.store(Arc::new(hex_key));
        self.bump();
    }

    /// Installs freshly loaded table shapes of `upstream` (a no-op if nothing changed).
    pub fn set_schema(&self, upstream: &str, snapshot: SchemaSnapshot) {
        let current = self.schemas.load();
        if current.get(upstream).is_some_and(|s| **s == snapshot) {
            return;
        }
        let mut next = (**current).clone();
        next.insert(upstream.to_owned(), Arc::new(snapshot));
        self.schemas.store(Arc::new(next));
        self.bump();
    }

    /// Installs what tollgate logs in to SQL upstream `upstream` as (a no-op if unchanged).
    /// Until it is known, every role and database name counts as the login's (fail closed).
    pub fn set_upstream_login(&self, upstream: &str, login: UpstreamLogin) {
        let current = self.logins.load();
        if current.get(upstream) == Some(&login) {
            return;
        }
        let mut next = (**current).clone();
        next.insert(upstream.to_owned(), login);
        self.logins.store(Arc::new(next));
        self.bump();
    }

    /// What tollgate logs in to `upstream` as, once a door said so.
    pub fn upstream_login(&self, upstream: &str) -> Option<UpstreamLogin> {
        self.logins.load().get(upstream).cloned()
    }

    pub fn schema(&self, upstream: &str) -> Option<Arc<SchemaSnapshot>> {
        self.schemas.load().get(upstream).cloned()
    }

    /// Masks of exact table names that name a column the loaded table does not have (a typo),
    /// as `RULE: column "c" of schema.table`: every statement reading such a table is refused,
    /// so the operator is told when the table shapes load (`Gateway::refresh_schemas`).
    pub fn masks_on_missing_columns(&self, upstream: &str) -> Vec<String> {
        let Some(schema) = self.schema(upstream) else {
            return Vec::new();
        };
        let set = self.current.load();
        let mut out: Vec<String> = set
            .agents
            .values()
            .flat_map(|p| p.enforced.iter().chain(p.with_shadow.iter()))
            .filter_map(|m| sql_rules(m, upstream))
            .flat_map(|r| r.tables.iter().filter(|t| t.exact))
            .flat_map(|t| {
                let shape = schema.table(t.glob.as_str());
                t.masks
                    .iter()
                    .filter(move |(column, _)| {
                        shape.is_some_and(|s| !s.columns.iter().any(|c| &c.name == column))
                    })
                    .map(move |(column, _)| {
                        format!("{}: column \"{column}\" of {}", t.rule, t.glob.as_str())
                    })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Tables any policy masks or filters, per upstream: what the schema loader must fetch.
    pub fn protected_upstreams(&self) -> Vec<String> {
        let set = self.current.load();
        let mut out: Vec<String> = set
            .agents
            .values()
            .flat_map(|p| p.enforced.iter().chain(p.with_shadow.iter()))
            .flat_map(|m| m.iter())
            .filter(|(_, r)| r.has_protections())
            .map(|(u, _)| u.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A new version: cached decisions made under the old one are dropped.
    fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.clear_cache();
    }

    /// Swaps in a new policy set; sessions see it at their next statement.
    pub fn replace(&self, set: PolicySet) {
        self.current.store(Arc::new(set));
        self.version.fetch_add(1, Ordering::SeqCst);
        self.clear_cache();
        metrics::counter!("tollgate_policy_reloads_total", "result" => "ok").increment(1);
    }

    fn clear_cache(&self) {
        self.cache.clear();
        self.cached.store(0, Ordering::Relaxed);
        // Sessions' handles on the old scopes resolve again.
        self.cache_epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn agent(&self, agent: &str) -> Option<Arc<AgentPolicy>> {
        self.current.load().agents.get(agent).cloned()
    }

    /// The agent's merged policy (limits included), as currently loaded.
    pub fn agent_policy(&self, agent: &str) -> Option<Arc<AgentPolicy>> {
        self.agent(agent)
    }

    /// Must `agent` connect over TLS? (`require_tls = true` in a file that applies to it.)
    pub fn tls_requirement(&self, agent: &str) -> Option<super::compile::TlsRequirement> {
        self.agent(agent).and_then(|p| p.require_tls.clone())
    }

    /// May `agent` open a session on `upstream`? (Some policy, enforcing or shadow, must name it.)
    pub fn may_connect(&self, agent: &str, upstream: &str) -> Result<(), Refusal> {
        let named = |p: &AgentPolicy| {
            p.enforced
                .as_ref()
                .is_some_and(|m| m.contains_key(upstream))
                || p.with_shadow
                    .as_ref()
                    .is_some_and(|m| m.contains_key(upstream))
        };
        match self.agent(agent) {
            Some(p) if named(&p) => Ok(()),
            p => Err(Refusal::permission(
                DEFAULT_DENY,
                format!("permission denied for database \"{upstream}\": no policy lets agent \"{agent}\" reach it"),
            )
            .with_instead(super::instead::upstreams(
                p.as_ref().and_then(|p| p.enforced.as_ref().or(p.with_shadow.as_ref())),
            ))),
        }
    }

    /// May `agent` call function `oid` on `upstream` through the fast-path protocol? Only the
    /// large-object functions libpq uses, and only for passthrough agents (the call carries no
    /// SQL to analyse), unless a policy denies the function by name. `Ok`: the function's name.
    pub fn fastpath_call(
        &self,
        agent: &str,
        upstream: &str,
        oid: u32,
    ) -> Result<&'static str, Refusal> {
        let refused = |reason: String| Refusal::permission("builtin: fastpath", reason);
        let Some(name) = sql::fastpath::large_object_function(oid) else {
            return Err(refused(format!(
                "fast-path function calls (FunctionCall messages) are allowed for large objects only (function OID {oid})"
            )));
        };
        let policy = self.agent(agent);
        let rules = policy
            .as_ref()
            .filter(|p| p.with_shadow.is_none())
            .and_then(|p| p.enforced.as_ref())
            .and_then(|m| sql_rules(m, upstream));
        match rules {
            Some(r) if r.passthrough => {
                let forms = [name.to_string(), format!("pg_catalog.{name}")];
                match r
                    .deny_functions
                    .iter()
                    .find(|d| forms.iter().any(|f| d.glob.matches(f)))
                {
                    Some(d) => Err(Refusal::permission(
                        d.rule.clone(),
                        format!("function {name} is denied"),
                    )),
                    None => Ok(name),
                }
            }
            _ => Err(refused(format!(
                "fast-path function calls ({name}) are allowed for the passthrough profile only"
            ))),
        }
    }

    /// The verdict if it needs no analysis (cached, or the passthrough fast path). Cheap: callers
    /// may run it on an async worker and send misses to `check_sql` on a blocking-friendly thread.
    /// `analyse_all`: no passthrough fast path (a transaction-pooled session must know whether
    /// each statement leaves session state).
    pub fn cached(
        &self,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        sql_text: &str,
        analyse_all: bool,
    ) -> Option<Arc<Verdict>> {
        self.lookup(agent, upstream, sql_text, analyse_all).ok()
    }

    /// [`Engine::cached`] through a session's [`ScopeHandle`].
    pub fn cached_in(
        &self,
        handle: &mut ScopeHandle,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        sql_text: &str,
        analyse_all: bool,
    ) -> Option<Arc<Verdict>> {
        self.lookup_in(handle, agent, upstream, sql_text, analyse_all)
            .ok()
    }

    /// The verdict on one Query/Parse text, from the cache when the same text was judged before.
    pub fn check_sql(
        &self,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        sql_text: &str,
        session: &SessionFacts,
    ) -> Arc<Verdict> {
        self.check_sql_in(
            &mut ScopeHandle::default(),
            agent,
            upstream,
            sql_text,
            session,
        )
    }

    /// [`Engine::check_sql`] through a session's [`ScopeHandle`].
    pub fn check_sql_in(
        &self,
        handle: &mut ScopeHandle,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        sql_text: &str,
        session: &SessionFacts,
    ) -> Arc<Verdict> {
        let miss = match self.lookup_in(handle, agent, upstream, sql_text, session.pooled) {
            Ok(v) => return v,
            Err(miss) => miss,
        };
        self.cache_counts[2].fetch_add(1, Ordering::Relaxed);
        let Miss {
            policy,
            cache,
            shape,
        } = miss;
        let Some(policy) = policy else {
            // Ending a transaction grants nothing: an agent removed mid-transaction may still
            // roll it back (and give back its pooled server connection).
            if sql::only_rolls_back(sql_text) {
                return Arc::new(Verdict {
                    outcome: Outcome::Allow,
                    denial: None,
                    statements: 1,
                    ..Verdict::blocked(default_deny(String::new()))
                });
            }
            return Arc::new(Verdict::blocked(
                default_deny(format!("agent \"{agent}\" has no policy"))
                    .with_instead(super::instead::upstreams(None)),
            ));
        };
        let (verdict, cacheable) = self.judge(&policy, upstream, sql_text, session);
        let verdict = Arc::new(verdict);
        if cacheable {
            self.remember(&cache, sql_text, shape, &verdict);
        }
        verdict
    }

    fn lookup(
        &self,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        sql_text: &str,
        analyse_all: bool,
    ) -> Result<Arc<Verdict>, Miss> {
        self.lookup_in(
            &mut ScopeHandle::default(),
            agent,
            upstream,
            sql_text,
            analyse_all,
        )
    }

    /// [`Engine::lookup`] through a session's handle on its scope: re-resolved only when the
    /// policy version or the cache changed, so a cached verdict costs two atomic loads and one
    /// hash lookup.
    fn lookup_in(
        &self,
        handle: &mut ScopeHandle,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        sql_text: &str,
        analyse_all: bool,
    ) -> Result<Arc<Verdict>, Miss> {
        let version = self.version();
        let epoch = self.cache_epoch.load(Ordering::Acquire);
        if handle.resolved != Some((version, epoch)) {
            let scope = Scope {
                version,
                agent: agent.clone(),
                upstream: upstream.clone(),
            };
            let cache = match self.cache.get(&scope) {
                Some(c) => c.clone(),
                None => self.cache.entry(scope).or_default().clone(),
            };
            let policy = self.agent(agent);
            // Passthrough without denies or shadow files: no analysis at all (trusted agents'
            // fast path).
            let passthrough = policy.as_ref().is_some_and(|p| {
                p.with_shadow.is_none()
                    && p.enforced
                        .as_ref()
                        .and_then(|m| m.get(upstream.as_ref()))
                        .and_then(|r| r.sql())
                        .is_some_and(|r| r.passthrough && !r.guards())
            });
            *handle = ScopeHandle {
                resolved: Some((version, epoch)),
                cache: Some(cache),
                policy,
                passthrough,
            };
        }
        let cache = handle.cache.clone().expect("resolved above");
        let Some(policy) = handle.policy.clone() else {
            return Err(Miss {
                policy: None,
                cache,
                shape: None,
            });
        };
        // Passthrough without denies or shadow files: no analysis at all (trusted agents' fast
        // path), unless the text could touch the upstream login or signal a backend (one pass:
        // `login_guard::may_touch`, `backend_signals::may_signal`).
        if handle.passthrough && !analyse_all && !sql::screen::passthrough_needs_analysis(sql_text)
        {
            return Ok(self.allow_all.clone());
        }
        if let Some(v) = cache.texts.get(sql_text) {
            self.cache_counts[0].fetch_add(1, Ordering::Relaxed);
            return Ok(v.clone());
        }
        let fast = sql::fast_fingerprint(sql_text);
        let shape = fast.or_else(|| sql::scanner_fingerprint(sql_text).ok());
        if let Some(v) = shape.and_then(|f| cache.shapes.get(&f).map(|v| v.clone())) {
            self.cache_counts[1].fetch_add(1, Ordering::Relaxed);
            // Remembering the text saves the scanner next time; a key the Rust scanner gave is
            // cheaper to compute again than to store (statements differing in literals would
            // fill the text cache and clear it every CACHE_CAPACITY statements).
            if fast.is_none() {
                self.remember(&cache, sql_text, None, &v);
            }
            return Ok(v);
        }
        Err(Miss {
            policy: Some(policy),
            cache,
            shape,
        })
    }

    fn remember(
        &self,
        cache: &ScopeCache,
        sql_text: &str,
        shape: Option<u64>,
        verdict: &Arc<Verdict>,
    ) {
        if self.cached.fetch_add(1, Ordering::Relaxed) >= CACHE_CAPACITY {
            self.clear_cache();
        }
        cache.texts.insert(sql_text.into(), verdict.clone());
        if let Some(f) = shape {
            cache.shapes.insert(f, verdict.clone());
        }
    }

    fn judge(
        &self,
        policy: &AgentPolicy,
        upstream: &str,
        sql_text: &str,
        session: &SessionFacts,
    ) -> (Verdict, bool) {
        let enforced = policy.enforced.as_ref().map(|m| sql_rules(m, upstream));
        // The built-in protections of the upstream login hold for every agent, shadow mode and
        // passthrough included.
        if let Err(r) = login_guard::check(sql_text, self.upstream_login(upstream).as_ref()) {
            let r = with_instead(r, policy, upstream, enforced.flatten());
            return (Verdict::blocked(r), false);
        }
        // A transaction-pooled session's statements are analysed even then: whether they leave
        // session state behind (or read another transaction's, lastval) decides the connection.
        if plain_passthrough(policy, upstream)
            && !session.pooled
            && !sql::backend_signals::may_signal(sql_text)
        {
            // Not cached: the cache is shared by the agent's sessions of either pooling, and a
            // transaction-pooled one must get the analysed verdict (what the statement leaves
            // behind), not this one.
            return ((*self.allow_all).clone(), false);
        }
        let analysis = match sql::analyze(sql_text) {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!("tollgate_unanalysable_statements_total").increment(1);
                let class = if matches!(e, sql::AnalyzeError::Syntax(_)) {
                    RefusalClass::Syntax
                } else {
                    RefusalClass::Unsupported
                };
                let denial = Refusal::new(class, "builtin: analyser", e.to_string());
                // Not cached: a shape shared with valid SQL must never inherit a parse failure.
                return (Verdict::blocked(denial), false);
            }
        };
        let cacheable = !analysis
            .statements
            .iter()
            .any(|s| s.literal_sensitive || matches!(s.kind, StatementKind::Execute { .. }));
        let effects = effects_of(&analysis);
        let leaves_state = analysis.statements.iter().any(sql::leaves_session_state);
        let sets_local = analysis.statements.iter().any(sql::sets_local_setting);
        let clears_state = analysis
            .statements
            .iter()
            .any(sql::only_clears_session_state);
        let statements = analysis.statements.len();
        let judge = |rules: Option<&super::rules::SqlRules>| match rules {
            Some(r) => decide(r, &analysis, session),
            // Ending a transaction grants nothing (the upstream taken from the agent mid-way).
            None if sql::only_rolls_back(sql_text) => Ok(()),
            None => Err(default_deny(format!(
                "no policy grants access to upstream \"{upstream}\""
            ))),
        };
        // tollgate's own statement names, first: whatever else is wrong, that is the rule to name.
        let reserved = analysis
            .statements
            .iter()
            .try_for_each(super::reserved::check_statement);
        let enforced_result = match (enforced, &policy.with_shadow) {
            _ if reserved.is_err() => reserved,
            (Some(r), _) => judge(r),
            // Only shadow files apply: nothing is enforced (the shadow verdict follows).
            (None, Some(_)) => Ok(()),
            // No file applies at all (a reload removed the agent's last one while its sessions
            // are open): default deny. Found by tests/reliability_storm.rs, where this allowed
            // everything.
            (None, None) => judge(None),
        };
        // Built in for every agent (shadow mode and passthrough included), whatever the rules
        // allow: which backends a statement may signal, pg_backend_pid() under transaction pooling.
        let enforced_result = enforced_result.and_then(|()| {
            analysis
                .statements
                .iter()
                .try_for_each(|s| super::backends::check_statement(s, session))
        });
        // Masking applies to what the enforcing rules allow.
        let mut rewrite = None;
        let enforced_result = enforced_result.and_then(|()| match enforced.flatten() {
            Some(r) => {
                let schema = self.schema(upstream);
                let key = self.mask_key.load();
                decide::plan_masking(r, sql_text, &analysis, schema.as_deref(), &key).map(|p| {
                    rewrite = p.map(Arc::new);
                })
            }
            None => Ok(()),
        });
        // The `hash` mask's key in the rewrite must not come back to the agent.
        let enforced_result = enforced_result.and_then(|()| match enforced.flatten() {
            Some(r) => {
                let key = self.mask_key.load();
                decide::check_mask_key(r, &analysis, rewrite.as_deref(), &key)?;
                decide::check_masked_explain(r, &analysis, rewrite.as_deref())
            }
            None => Ok(()),
        });
        let verdict = match enforced_result {
            Err(d) => Verdict {
                outcome: Outcome::Block,
                denial: Some(with_instead(d, policy, upstream, enforced.flatten())),
                effects,
                rewrite: None,
                leaves_state: false,
                sets_local: false,
                clears_state: false,
                statements,
            },
            Ok(()) => match policy
                .with_shadow
                .as_ref()
                .map(|m| judge(sql_rules(m, upstream)))
            {
                Some(Err(d)) => Verdict {
                    outcome: Outcome::WouldBlock,
                    denial: Some(d),
                    effects,
                    rewrite,
                    leaves_state,
                    sets_local,
                    clears_state,
                    statements,
                },
                _ => Verdict {
                    outcome: Outcome::Allow,
                    denial: None,
                    effects,
                    rewrite,
                    leaves_state,
                    sets_local,
                    clears_state,
                    statements,
                },
            },
        };
        (verdict, cacheable)
    }
}

/// Passthrough on `upstream` without denies, protections or shadow files: statements need no
/// analysis beyond the built-in login protections.
fn plain_passthrough(policy: &AgentPolicy, upstream: &str) -> bool {
    policy.with_shadow.is_none()
        && policy
            .enforced
            .as_ref()
            .and_then(|m| sql_rules(m, upstream))
            .is_some_and(|r| r.passthrough && !r.guards())
}

/// A policy refusal with what the agent may use instead on this upstream (or which upstreams
/// it may use, when it has no rules here). Other classes (syntax, unsupported) keep none.
fn with_instead(
    r: Refusal,
    policy: &AgentPolicy,
    upstream: &str,
    rules: Option<&super::rules::SqlRules>,
) -> Refusal {
    if r.class != RefusalClass::Permission || r.instead.is_some() {
        return r;
    }
    let instead = match rules {
        Some(rules) => super::instead::sql(upstream, rules),
        None => super::instead::upstreams(policy.enforced.as_ref()),
    };
    r.with_instead(instead)
}

fn default_deny(reason: String) -> Refusal {
    Refusal::permission(DEFAULT_DENY, reason)
}

/// The SQL rules of `upstream` in one of an agent's rule maps (none for another kind).
pub(super) fn sql_rules<'a>(
    m: &'a std::collections::HashMap<String, super::rules::UpstreamRules>,
    upstream: &str,
) -> Option<&'a super::rules::SqlRules> {
    m.get(upstream).and_then(super::rules::UpstreamRules::sql)
}

fn effects_of(analysis: &Analysis) -> Vec<Effect> {
    let mut effects = Vec::new();
    for s in &analysis.statements {
        for kind in std::iter::once(&s.kind).chain(s.inner_kind.as_deref()) {
            match kind {
                StatementKind::Prepare { name } => effects.push(Effect::Prepared(name.clone())),
                StatementKind::Deallocate { name } => {
                    effects.push(Effect::Deallocated(name.clone()))
                }
                StatementKind::Discard { all: true } => effects.push(Effect::Deallocated(None)),
                StatementKind::Execute { name } => effects.push(Effect::Executes(name.clone())),
                _ => {}
            }
        }
    }
    let signals: Vec<_> = analysis
        .statements
        .iter()
        .flat_map(super::backends::deferred)
        .collect();
    if !signals.is_empty() {
        effects.push(Effect::Signals(signals));
    }
    let setting_params: Vec<i32> = analysis
        .statements
        .iter()
        .filter_map(sql::StatementInfo::setting_params)
        .flatten()
        .collect();
    if !setting_params.is_empty() {
        effects.push(Effect::SettingParams(setting_params));
    }
    effects
}
