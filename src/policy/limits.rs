//! Volume limits of an agent, merged from every policy file that applies to it: for each limit
//! the strictest value wins (a smaller number; `refuse` over `truncate`).

use std::time::Duration;

use super::file::LimitsFile;

/// What to do when a statement returns more rows than `max_rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowLimitMode {
    /// Stop after `max_rows` rows, end the statement normally, and say so in a notice.
    #[default]
    Truncate,
    /// Fail the statement with an error.
    Refuse,
}

impl RowLimitMode {
    pub fn parse(word: &str) -> Option<RowLimitMode> {
        match word {
            "truncate" => Some(RowLimitMode::Truncate),
            "refuse" => Some(RowLimitMode::Refuse),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RowLimitMode::Truncate => "truncate",
            RowLimitMode::Refuse => "refuse",
        }
    }
}

/// A rate: `per_minute` steady, `burst` extra at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Time between two statements at the steady rate.
    pub fn interval(self) -> Duration {
        Duration::from_nanos(60_000_000_000 / u64::from(self.per_minute.max(1)))
    }
}

/// The merged limits of one agent, each with the policy file that set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub rate: Option<(Rate, String)>,
    pub max_rows: Option<(u64, String)>,
    pub on_max_rows: RowLimitMode,
    pub statement_timeout: Option<(Duration, String)>,
    pub idle_in_transaction_timeout: Option<(Duration, String)>,
    pub max_connections: Option<(u32, String)>,
    /// Result bytes per statement (MCP tools; not enforced on the wire yet).
    pub max_result_bytes: Option<(u64, String)>,
}

fn stricter<T: PartialOrd + Copy>(slot: &mut Option<(T, String)>, value: Option<T>, rule: &str) {
    if let Some(v) = value {
        match slot {
            Some((old, _)) if *old <= v => {}
            _ => *slot = Some((v, rule.to_owned())),
        }
    }
}

impl Limits {
    /// Folds one file's `[limits]` in; `stem` names the file in refusals.
    pub fn merge(&mut self, file: &LimitsFile, stem: &str) {
        let rule = format!("{stem}: limits");
        if let Some(per_minute) = file.statements_per_minute {
            let burst = file.burst.unwrap_or((per_minute / 10).max(1));
            let old = self.rate.as_ref().map(|(r, _)| *r);
            let merged = old.map_or(Rate { per_minute, burst }, |o| Rate {
                per_minute: o.per_minute.min(per_minute),
                burst: o.burst.min(burst),
            });
            if old != Some(merged) {
                self.rate = Some((merged, rule.clone()));
            }
        }
        stricter(&mut self.max_rows, file.max_rows, &rule);
        if file
            .on_max_rows
            .as_ref()
            .and_then(|m| RowLimitMode::parse(m.get_ref()))
            == Some(RowLimitMode::Refuse)
        {
            self.on_max_rows = RowLimitMode::Refuse;
        }
        stricter(
            &mut self.statement_timeout,
            file.statement_timeout_ms.map(Duration::from_millis),
            &rule,
        );
        stricter(
            &mut self.idle_in_transaction_timeout,
            file.idle_in_transaction_timeout_ms
                .map(Duration::from_millis),
            &rule,
        );
        stricter(&mut self.max_connections, file.max_connections, &rule);
        stricter(&mut self.max_result_bytes, file.max_result_bytes, &rule);
    }

    /// One line per limit, for `tollgate explain`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((r, rule)) = &self.rate {
            out.push(format!(
                "rate: {} statements/min, burst {} ({rule})",
                r.per_minute, r.burst
            ));
        }
        if let Some((n, rule)) = &self.max_rows {
            out.push(format!(
                "max rows per statement: {n}, then {} ({rule})",
                self.on_max_rows.name()
            ));
        }
        if let Some((d, rule)) = &self.statement_timeout {
            out.push(format!("statement timeout: {} ms ({rule})", d.as_millis()));
        }
        if let Some((d, rule)) = &self.idle_in_transaction_timeout {
            out.push(format!(
                "idle in transaction timeout: {} ms ({rule})",
                d.as_millis()
            ));
        }
        if let Some((n, rule)) = &self.max_connections {
            out.push(format!("max connections: {n} ({rule})"));
        }
        if let Some((n, rule)) = &self.max_result_bytes {
            out.push(format!("max result bytes per statement: {n} ({rule})"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strictest_value_of_each_limit_wins() {
        let mut l = Limits::default();
        l.merge(
            &LimitsFile {
                statements_per_minute: Some(600),
                max_rows: Some(1000),
                ..LimitsFile::default()
            },
            "a",
        );
        l.merge(
            &LimitsFile {
                statements_per_minute: Some(1200),
                burst: Some(5),
                max_rows: Some(50),
                statement_timeout_ms: Some(100),
                max_result_bytes: Some(4096),
                ..LimitsFile::default()
            },
            "b",
        );
        let (rate, _) = l.rate.clone().unwrap();
        assert_eq!((rate.per_minute, rate.burst), (600, 5));
        assert_eq!(l.max_rows, Some((50, "b: limits".into())));
        assert_eq!(
            l.statement_timeout.as_ref().map(|(d, _)| d.as_millis()),
            Some(100)
        );
        assert_eq!(l.on_max_rows, RowLimitMode::Truncate);
        assert_eq!(l.max_result_bytes, Some((4096, "b: limits".into())));
        l.merge(
            &LimitsFile {
                max_result_bytes: Some(1 << 20),
                ..LimitsFile::default()
            },
            "c",
        );
        assert_eq!(
            l.max_result_bytes,
            Some((4096, "b: limits".into())),
            "a larger value never loosens the limit"
        );
    }
}
