//! The rewrite: where a statement names a protected table, a masking subquery takes the name's
//! place in the text. Edits are recorded against PostgreSQL's scanner tokens, so a plan made for
//! one statement applies to every statement of the same shape (other literals, comments or
//! whitespace): the decision cache stores the plan, not the rewritten text.

use super::subquery::{masking_subquery, Protection};
use super::{quote_ident, SchemaSnapshot};
use crate::policy::sql::{structural_tokens, Analysis, Operation, ScannedToken, Token};

/// Why a statement touching a protected table cannot be rewritten: it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RewriteError {
    pub reason: String,
    pub rule: String,
}

impl RewriteError {
    fn new(reason: impl Into<String>, rule: &str) -> RewriteError {
        RewriteError {
            reason: reason.into(),
            rule: rule.to_owned(),
        }
    }
}

/// Replace the tokens `first..=last` (indexes into the non-comment tokens) with `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    first: usize,
    last: usize,
    text: String,
}

/// How to rewrite every statement of one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewritePlan {
    edits: Vec<Edit>,
    /// Token count of the shape, checked when the plan is applied.
    tokens: usize,
    /// Some column is masked (audit decision `masked`); otherwise only row filters (`rewritten`).
    pub masks: bool,
    /// Protected tables the statement reads, and the rules that protect them.
    pub tables: Vec<String>,
    pub rules: Vec<String>,
}

impl RewritePlan {
    /// Whether the text changes (a write that reads nothing masked is audited but unchanged).
    pub fn has_edits(&self) -> bool {
        !self.edits.is_empty()
    }

    /// Whether the text the plan inserts holds `needle` (the `hash` mask's key: then the
    /// rewritten statement carries it). An empty needle is never carried.
    pub fn carries(&self, needle: &str) -> bool {
        !needle.is_empty() && self.edits.iter().any(|e| e.text.contains(needle))
    }

    /// The statement with every edit applied, and where its text came from. Fails if `sql`
    /// does not have the plan's shape.
    pub fn apply(&self, sql: &str) -> Result<(String, PositionMap), RewriteError> {
        let tokens = structural_tokens(sql)
            .map_err(|e| RewriteError::new(e.to_string(), "builtin: masking"))?;
        self.apply_with(sql, &tokens).map(|(s, _, map)| (s, map))
    }

    /// Applies the edits; also returns the byte ranges of inserted text in the result.
    fn apply_with(
        &self,
        sql: &str,
        tokens: &[ScannedToken],
    ) -> Result<(String, Vec<std::ops::Range<usize>>, PositionMap), RewriteError> {
        if tokens.len() != self.tokens {
            return Err(RewriteError::new(
                "internal error: statement shape changed under the masking rewrite",
                "builtin: masking",
            ));
        }
        let mut out = String::with_capacity(sql.len() + self.edits.len() * 256);
        let mut inserted = Vec::with_capacity(self.edits.len());
        let mut map = PositionMap::default();
        // Characters so far in the client's text and in the rewritten one.
        let (mut old_chars, mut new_chars) = (0, 0);
        let mut at = 0;
        for e in &self.edits {
            let (start, end) = (tokens[e.first].start, tokens[e.last].end);
            let kept = sql[at..start].chars().count();
            out.push_str(&sql[at..start]);
            (old_chars, new_chars) = (old_chars + kept, new_chars + kept);
            inserted.push(out.len()..out.len() + e.text.len());
            out.push_str(&e.text);
            let span = Span {
                old_start: old_chars,
                old_len: sql[start..end].chars().count(),
                new_start: new_chars,
                new_len: e.text.chars().count(),
            };
            (old_chars, new_chars) = (old_chars + span.old_len, new_chars + span.new_len);
            map.spans.push(span);
            at = end;
        }
        out.push_str(&sql[at..]);
        Ok((out, inserted, map))
    }
}

/// Where the text of a rewritten statement came from, so that the position a server error gives
/// in it (`P`: 1-based, in characters) can be given back in the text the client sent. Without
/// it, an error after a masked table pointed past the end of the client's statement, or into
/// the middle of something else (psql showed its caret under a comment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionMap {
    spans: Vec<Span>,
}

/// One edit, in characters: the replaced text of the client's statement, and what took its
/// place in the rewritten one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    old_start: usize,
    old_len: usize,
    new_start: usize,
    new_len: usize,
}

impl PositionMap {
    /// The client's position for a 1-based `position` in the rewritten text. A position inside
    /// inserted text (the masking subquery) is the start of the name it replaced.
    pub fn original(&self, position: usize) -> usize {
        let Some(at) = position.checked_sub(1) else {
            return position;
        };
        let mut shift = 0isize;
        for s in &self.spans {
            if at < s.new_start {
                break;
            }
            if at < s.new_start + s.new_len {
                return s.old_start + 1;
            }
            shift = (s.old_start + s.old_len) as isize - (s.new_start + s.new_len) as isize;
        }
        (at as isize + shift).max(0) as usize + 1
    }
}

/// What the planner needs from the policy: the qualified names an occurrence may resolve to,
/// and what protects a qualified table.
pub trait ProtectionSource {
    fn candidates(&self, schema: Option<&str>, name: &str) -> Vec<String>;
    fn protection(&self, qualified: &str) -> Option<Protection>;
}

/// Plans the rewrite of `sql` (already analysed). `Ok(None)`: nothing protected is read.
pub fn plan_rewrite(
    sql: &str,
    analysis: &Analysis,
    policy: &dyn ProtectionSource,
    schema: Option<&SchemaSnapshot>,
    hash_key: &str,
) -> Result<Option<RewritePlan>, RewriteError> {
    let mut edits = Vec::new();
    let mut tables = Vec::new();
    let mut rules = Vec::new();
    let mut masks = false;
    // Scanned once, when the first protected table is met; the plan records the token count.
    let mut tokens: Option<Vec<ScannedToken>> = None;
    for stmt in &analysis.statements {
        for occ in &stmt.occurrences {
            let names = policy.candidates(occ.schema.as_deref(), &occ.name);
            let Some((qualified, protection)) = names.iter().find_map(|q| {
                policy
                    .protection(q)
                    .filter(|p| !p.is_empty())
                    .map(|p| (q, p))
            }) else {
                continue;
            };
            let rule = protection.rules().join(", ");
            if tokens.is_none() {
                tokens = Some(
                    structural_tokens(sql).map_err(|e| RewriteError::new(e.to_string(), &rule))?,
                );
            }
            if names.len() > 1 {
                return Err(RewriteError::new(
                    format!("\"{}\" could name more than one table, one of them protected ({qualified}); qualify it with its schema", occ.name),
                    &rule,
                ));
            }
            masks |= !protection.masks.is_empty();
            if !tables.contains(qualified) {
                tables.push(qualified.clone());
            }
            for r in protection.rules() {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
            let position_refusal = |what: &str| {
                RewriteError::new(
                    format!(
                        "{qualified} is masked or filtered by the policy and cannot be used {what}"
                    ),
                    &rule,
                )
            };
            match occ.op {
                Operation::Select if occ.from_item && !occ.tablesample => {}
                Operation::Select if occ.tablesample => {
                    return Err(position_refusal("with TABLESAMPLE"))
                }
                Operation::CopyTo => {}
                Operation::Insert | Operation::Update | Operation::Delete => {
                    if !protection.filters.is_empty() {
                        let target = if occ.op == Operation::Insert {
                            "INSERT"
                        } else {
                            "UPDATE or DELETE"
                        };
                        return Err(position_refusal(&format!(
                            "as the target of {target} (it has a row filter)"
                        )));
                    }
                    let read = stmt.column_star
                        || stmt.column_names.iter().any(|c| {
                            protection.mask_of(c).is_some()
                                || *c == occ.name
                                || occ.alias.as_deref() == Some(c.as_str())
                        });
                    if read {
                        return Err(position_refusal(
                            "in a statement that writes it and reads a masked column (in WHERE, SET, RETURNING, `*` or a whole-row reference)",
                        ));
                    }
                    continue;
                }
                Operation::CopyFrom | Operation::Truncate | Operation::Lock => continue,
                _ => {
                    return Err(position_refusal(
                        "here (only reading it in FROM, JOIN or COPY ... TO is rewritten)",
                    ))
                }
            }
            let Some(shape) = schema.and_then(|s| s.table(qualified)) else {
                return Err(RewriteError::new(
                    format!("{qualified} is masked or filtered by the policy, and tollgate has not loaded its columns from the upstream yet"),
                    &rule,
                ));
            };
            let subquery = masking_subquery(shape, &protection, !occ.inh, hash_key).map_err(
                |(reason, own)| RewriteError::new(reason, own.as_deref().unwrap_or(&rule)),
            )?;
            let Some(location) = occ.location else {
                return Err(position_refusal("here (its position is unknown)"));
            };
            let toks = tokens.as_deref().unwrap_or_default();
            let edit = if occ.op == Operation::CopyTo {
                copy_edit(sql, toks, location, &occ.name, &subquery)
            } else {
                from_edit(toks, location, &occ.name, occ.alias.is_some(), &subquery)
            }
            .ok_or_else(|| position_refusal("in this form"))?;
            edits.push(edit);
        }
    }
    if edits.is_empty() && tables.is_empty() {
        return Ok(None);
    }
    edits.sort_by_key(|e| e.first);
    if edits.windows(2).any(|w| w[0].last >= w[1].first) {
        return Err(RewriteError::new(
            "overlapping masking edits",
            "builtin: masking",
        ));
    }
    // A plan without edits (writes that read nothing masked) is still audited as such.
    Ok(Some(RewritePlan {
        edits,
        tokens: tokens.as_ref().map_or(0, Vec::len),
        masks,
        tables,
        rules,
    }))
}

/// Index of the token starting at byte `location`.
fn token_at(tokens: &[ScannedToken], location: usize) -> Option<usize> {
    tokens.binary_search_by_key(&location, |t| t.start).ok()
}

/// Last token of a dotted name starting at `first` (`a`, `a.b`, `a.b.c`).
fn name_end(tokens: &[ScannedToken], first: usize) -> usize {
    let mut last = first;
    while tokens
        .get(last + 1)
        .is_some_and(|t| t.kind == Token::Ascii46)
        && last + 2 < tokens.len()
    {
        last += 2;
    }
    last
}

/// A FROM item: the name (with `ONLY`, `ONLY (...)`, a trailing `*`, or a `TABLE` statement
/// around it) becomes the subquery, aliased by the table's name unless the item has an alias.
fn from_edit(
    tokens: &[ScannedToken],
    location: usize,
    relname: &str,
    has_alias: bool,
    subquery: &str,
) -> Option<Edit> {
    let mut first = token_at(tokens, location)?;
    let mut last = name_end(tokens, first);
    let kind = |i: usize| tokens.get(i).map(|t| t.kind);
    // `ONLY (name)` and `ONLY name`: the subquery carries ONLY itself.
    if first >= 2 && kind(first - 1) == Some(Token::Ascii40) && kind(first - 2) == Some(Token::Only)
    {
        if kind(last + 1) != Some(Token::Ascii41) {
            return None;
        }
        first -= 2;
        last += 1;
    } else if first >= 1 && kind(first - 1) == Some(Token::Only) {
        first -= 1;
    }
    // `name *`: the old spelling of "with descendants".
    if kind(last + 1) == Some(Token::Ascii42) {
        last += 1;
    }
    let alias = quote_ident(relname);
    if first >= 1 && kind(first - 1) == Some(Token::Table) {
        // `TABLE name` is `SELECT * FROM name`.
        return Some(Edit {
            first: first - 1,
            last,
            text: format!("SELECT * FROM {subquery} AS {alias}"),
        });
    }
    let text = if has_alias {
        subquery.to_owned()
    } else {
        format!("{subquery} AS {alias}")
    };
    Some(Edit { first, last, text })
}

/// `COPY name [(columns)] TO ...` becomes `COPY (SELECT columns FROM <subquery> AS name) TO ...`.
fn copy_edit(
    sql: &str,
    tokens: &[ScannedToken],
    location: usize,
    relname: &str,
    subquery: &str,
) -> Option<Edit> {
    let first = token_at(tokens, location)?;
    if first == 0 || tokens[first - 1].kind != Token::Copy {
        return None;
    }
    let mut last = name_end(tokens, first);
    let mut columns = "*".to_owned();
    if tokens.get(last + 1).map(|t| t.kind) == Some(Token::Ascii40) {
        let open = last + 1;
        let close = (open + 1..tokens.len()).find(|&i| tokens[i].kind == Token::Ascii41)?;
        columns = sql[tokens[open + 1].start..tokens[close - 1].end].to_owned();
        last = close;
    }
    Some(Edit {
        first,
        last,
        text: format!(
            "(SELECT {columns} FROM {subquery} AS {})",
            quote_ident(relname)
        ),
    })
}

/// Checks a rewritten statement: every remaining occurrence of a protected table must sit inside
/// text the rewrite inserted (the masking subqueries themselves).
pub fn verify_rewrite(
    plan: &RewritePlan,
    sql: &str,
    policy: &dyn ProtectionSource,
) -> Result<String, RewriteError> {
    let tokens =
        structural_tokens(sql).map_err(|e| RewriteError::new(e.to_string(), "builtin: masking"))?;
    let (rewritten, inserted, _) = plan.apply_with(sql, &tokens)?;
    let analysis = crate::policy::sql::analyze(&rewritten).map_err(|e| {
        RewriteError::new(
            format!("the masked statement does not parse ({e})"),
            "builtin: masking",
        )
    })?;
    for stmt in &analysis.statements {
        for occ in &stmt.occurrences {
            let protected = policy
                .candidates(occ.schema.as_deref(), &occ.name)
                .iter()
                .any(|q| policy.protection(q).is_some_and(|p| !p.is_empty()));
            if !protected {
                continue;
            }
            let inside = occ
                .location
                .is_some_and(|l| inserted.iter().any(|r| r.contains(&l)));
            let harmless = matches!(
                occ.op,
                Operation::Insert
                    | Operation::Update
                    | Operation::Delete
                    | Operation::CopyFrom
                    | Operation::Truncate
                    | Operation::Lock
            );
            if !inside && !harmless {
                return Err(RewriteError::new(
                    format!("tollgate could not mask every use of {}", occ.name),
                    "builtin: masking",
                ));
            }
        }
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_back_around_and_inside_the_inserted_text() {
        // Client: "SELECT a FROM t WHERE b" (t at 14, 1 char); rewritten with t -> 10 chars,
        // then a second name at 22 (2 chars) -> 5 chars.
        let map = PositionMap {
            spans: vec![
                Span {
                    old_start: 14,
                    old_len: 1,
                    new_start: 14,
                    new_len: 10,
                },
                Span {
                    old_start: 22,
                    old_len: 2,
                    new_start: 31,
                    new_len: 5,
                },
            ],
        };
        assert_eq!(map.original(1), 1); // before any edit
        assert_eq!(map.original(14), 14);
        assert_eq!(map.original(15), 15); // the inserted text: the replaced name
        assert_eq!(map.original(24), 15);
        assert_eq!(map.original(25), 16); // after the first edit: shifted back by 9
        assert_eq!(map.original(31), 22);
        assert_eq!(map.original(32), 23); // inside the second
        assert_eq!(map.original(36), 23);
        assert_eq!(map.original(37), 25); // after both
        assert_eq!(map.original(0), 0);
        assert_eq!(PositionMap::default().original(7), 7);
    }
}
