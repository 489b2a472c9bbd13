//! What changed in `tollgate.toml` since the gateway started. A reload re-reads policies, agents,
//! the vault, admin tokens and the certificate, never the config file itself (listeners, pools,
//! limits are built once): an operator who edited it and reloaded is told which keys wait for a
//! restart instead of reading "reloaded" and believing them in force.

use std::path::{Path, PathBuf};

use super::{read_regular_file, Config, SourceError};

/// The config file's text as the running gateway read it.
#[derive(Clone)]
pub struct ConfigSource {
    path: PathBuf,
    text: String,
}

/// Only the path: the text is the operator's file, not something a log line needs.
impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The config file on disk against the running one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Drift {
    /// Dotted keys whose value differs, were added or were removed (`upstream.shop.pool_size`).
    pub changed: Vec<String>,
    /// Why the file on disk could not be read or would not start a gateway (a restart would fail).
    pub unreadable: Option<String>,
}

impl Drift {
    /// One sentence for the log and the reload answer.
    pub fn describe(&self) -> Option<String> {
        if let Some(why) = &self.unreadable {
            return Some(format!(
                "tollgate.toml on disk would not start the gateway ({why}): the running config stays, and a restart would fail"
            ));
        }
        (!self.changed.is_empty()).then(|| {
            format!(
                "tollgate.toml changed since start ({}): a reload does not apply the config file, restart to apply it",
                self.changed.join(", ")
            )
        })
    }
}

impl ConfigSource {
    pub fn new(path: &Path, text: String) -> ConfigSource {
        ConfigSource {
            path: path.to_path_buf(),
            text,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Reads the file again and lists what differs from the text the gateway started with.
    pub fn drift(&self) -> Drift {
        let now = match read_regular_file(&self.path) {
            Ok(text) => text,
            Err(e) => {
                return Drift {
                    changed: Vec::new(),
                    unreadable: Some(SourceError::io(&self.path, &e).to_string()),
                }
            }
        };
        if now == self.text {
            return Drift::default();
        }
        if let Err(e) = Config::parse(&self.path, &now) {
            return Drift {
                changed: Vec::new(),
                unreadable: Some(e.to_string()),
            };
        }
        // Both parse as a Config, so both are TOML tables.
        let (Ok(old), Ok(new)) = (self.text.parse::<toml::Table>(), now.parse::<toml::Table>())
        else {
            return Drift::default();
        };
        let mut changed = Vec::new();
        diff_tables("", &old, &new, &mut changed);
        Drift {
            changed,
            unreadable: None,
        }
    }
}

/// Appends the dotted keys under `prefix` whose values differ between `old` and `new`, going
/// into tables (arrays and values compare whole).
fn diff_tables(prefix: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                diff_tables(&path, a, b, out)
            }
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(old: &str, new: &str) -> Vec<String> {
        let mut out = Vec::new();
        diff_tables(
            "",
            &old.parse::<toml::Table>().unwrap(),
            &new.parse::<toml::Table>().unwrap(),
            &mut out,
        );
        out
    }

    #[test]
    fn names_changed_added_and_removed_keys_down_to_the_leaf() {
        let old = "[listen]\npostgres = \"127.0.0.1:1\"\n[upstream.shop]\npool_size = 10\nkind = \"postgres\"\n";
        let new = "[listen]\npostgres = \"127.0.0.1:2\"\nredis = \"127.0.0.1:3\"\n[upstream.shop]\npool_size = 20\nkind = \"postgres\"\n[upstream.cache]\nkind = \"redis\"\n";
        assert_eq!(
            keys(old, new),
            [
                "listen.postgres",
                "listen.redis",
                "upstream.cache",
                "upstream.shop.pool_size"
            ]
        );
    }

    #[test]
    fn comments_and_layout_are_no_change() {
        let old = "[limits]\nmax_rows = 5\n";
        let new = "# edited\n[limits]\nmax_rows   =   5 # same\n";
        assert!(keys(old, new).is_empty());
    }
}
