//! The agents file (`agents.toml`): agent names, groups and SCRAM verifiers.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::scram::ScramVerifier;
use crate::config::SourceError;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentRecord>,
    /// Whether the file lists its agents: `[[agent]]` tables, or `agent = []` (what `save`
    /// writes for none). A missing, empty or comment-only file does not: that is what a
    /// deletion or a truncated write leaves, and a reload does not read it as "revoke all".
    #[serde(skip)]
    pub listed: bool,
    /// The file's text as read, to place errors found after parsing (file:line:column).
    #[serde(skip)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub name: String,
    /// PostgreSQL-style `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, 4096
    /// iterations (for clients that refuse fewer).
    pub verifier: String,
    /// The same token's login verifier with few iterations (`scram::LOGIN_ITERATIONS`): what
    /// PostgreSQL logins and token checks use. Files written before it existed lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_verifier: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One agent, ready for authentication.
#[derive(Debug, Clone)]
struct Agent {
    record: AgentRecord,
    verifier: ScramVerifier,
    login: Option<ScramVerifier>,
}

/// Agents by name, with parsed verifiers, ready for authentication.
#[derive(Debug, Clone, Default)]
pub struct AgentStore {
    agents: BTreeMap<String, Agent>,
    /// The file listed its agents (see [`AgentsFile::listed`]).
    listed: bool,
}

pub fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl AgentsFile {
    pub fn load(path: &Path) -> Result<AgentsFile, SourceError> {
        let text = match crate::config::read_regular_file(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentsFile::default()),
            Err(e) => return Err(SourceError::io(path, &e)),
        };
        let mut file: AgentsFile =
            toml::from_str(&text).map_err(|e| SourceError::from_toml(path, &text, &e))?;
        file.listed = !file.agents.is_empty()
            || toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("agent"));
        file.text = Some(text);
        Ok(file)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::from("# tollgate agents: written by `tollgate agent add`. Holds SCRAM verifiers, never tokens.\n\n");
        text.push_str(&toml::to_string(self).expect("agents file serialises"));
        crate::vault::write_private_atomically(path, text.as_bytes())
    }

    /// Adds an agent with a new verifier for `token`; refuses duplicates.
    pub fn add(&mut self, name: &str, token: &str, groups: Vec<String>) -> Result<(), String> {
        if !valid_agent_name(name) {
            return Err(format!(
                "agent names are 1-63 letters, digits, '_', '-', '.' (got {name:?})"
            ));
        }
        if self.agents.iter().any(|a| a.name == name) {
            return Err(format!("agent \"{name}\" already exists"));
        }
        let verifier = ScramVerifier::derive(token.as_bytes()).encode();
        let login =
            ScramVerifier::derive_iterations(token.as_bytes(), super::scram::LOGIN_ITERATIONS)
                .encode();
        self.agents.push(AgentRecord {
            name: name.to_string(),
            verifier,
            login_verifier: Some(login),
            groups,
        });
        Ok(())
    }
}

impl AgentStore {
    pub fn load(path: &Path) -> Result<AgentStore, SourceError> {
        AgentStore::from_file(path, AgentsFile::load(path)?)
    }

    pub fn from_file(path: &Path, file: AgentsFile) -> Result<AgentStore, SourceError> {
        let listed = file.listed || !file.agents.is_empty();
        let text = file.text;
        // At the `[[agent]]` table number `i`, key `key`, when the text is known.
        let error = |i: usize, key: &str, message: String| {
            let at = text.as_deref().and_then(|t| {
                Some((
                    t,
                    crate::config::locate_key(t, &["agent", &i.to_string(), key])?,
                ))
            });
            match at {
                Some((t, offset)) => SourceError::at(path, t, offset, message),
                None => SourceError::semantic(path, message),
            }
        };
        let mut agents = BTreeMap::new();
        for (i, rec) in file.agents.into_iter().enumerate() {
            if !valid_agent_name(&rec.name) {
                return Err(error(
                    i,
                    "name",
                    format!("invalid agent name {:?}", rec.name),
                ));
            }
            let bad = |what: &str, e: &str| {
                error(i, what, format!("agent \"{}\": bad {what}: {e}", rec.name))
            };
            let verifier = ScramVerifier::decode(&rec.verifier).map_err(|e| bad("verifier", e))?;
            let login = match &rec.login_verifier {
                Some(v) => {
                    Some(ScramVerifier::decode_login(v).map_err(|e| bad("login_verifier", e))?)
                }
                None => None,
            };
            let agent = Agent {
                record: rec.clone(),
                verifier,
                login,
            };
            if agents.insert(rec.name.clone(), agent).is_some() {
                return Err(error(
                    i,
                    "name",
                    format!("agent \"{}\" is listed twice", rec.name),
                ));
            }
        }
        Ok(AgentStore { agents, listed })
    }

    /// Whether these agents, read at a reload, may take the place of `running`. Removing an
    /// agent from the file revokes it; a file that lists none (missing, empty, comments only)
    /// may not replace running agents: a file deleted by mistake or caught half-written would
    /// lock every agent out. Revoking them all takes an explicit `agent = []`.
    pub fn may_replace(&self, running: &AgentStore) -> Result<(), String> {
        if !self.agents.is_empty() || self.listed || running.agents.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the file is missing or lists no agent; keeping the {} running agent(s) (write `agent = []` to revoke them all)",
            running.agents.len()
        ))
    }

    /// The agent's record and its 4096-iteration verifier.
    pub fn get(&self, name: &str) -> Option<(&AgentRecord, &ScramVerifier)> {
        self.agents.get(name).map(|a| (&a.record, &a.verifier))
    }

    /// The verifier logins check: the login verifier, or the 4096-iteration one for agents
    /// added before login verifiers existed.
    pub fn login_verifier(&self, name: &str) -> Option<&ScramVerifier> {
        self.agents
            .get(name)
            .map(|a| a.login.as_ref().unwrap_or(&a.verifier))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(|s| s.as_str())
    }

    pub fn groups_of(&self, name: &str) -> &[String] {
        self.agents
            .get(name)
            .map(|a| a.record.groups.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN: `tollgate check` errors name file, line and column; these named only the file.
    #[test]
    fn errors_found_after_parsing_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.toml");
        let mut f = AgentsFile::default();
        f.add("analyst", "tg_x", vec![]).unwrap();
        f.save(&path).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let cases = [
            (
                format!("{good}\n[[agent]]\nname = \"writer\"\nverifier = \"SCRAM-SHA-256$x\"\n"),
                "verifier = \"SCRAM-SHA-256$x\"",
                "agent \"writer\": bad verifier",
            ),
            (
                good.replace("name = \"analyst\"", "name = \"an alyst\""),
                "name = \"an alyst\"",
                "invalid agent name",
            ),
        ];
        for (text, line, message) in cases {
            std::fs::write(&path, &text).unwrap();
            let e = AgentStore::load(&path).unwrap_err().to_string();
            let n = text.lines().position(|l| l == line).unwrap() + 1;
            assert!(e.contains(&format!("agents.toml:{n}:1: {message}")), "{e}");
        }
    }

    #[test]
    fn add_save_load_never_stores_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.toml");
        let mut f = AgentsFile::default();
        let token = crate::auth::generate_token();
        f.add("analyst", &token, vec!["readers".into()]).unwrap();
        assert!(f.add("analyst", "x", vec![]).is_err());
        assert!(f.add("bad name", "x", vec![]).is_err());
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token));
        let store = AgentStore::load(&path).unwrap();
        let (_, v) = store.get("analyst").unwrap();
        assert!(v.check_password(token.as_bytes()));
        assert!(!v.check_password(b"wrong"));
        assert_eq!(store.groups_of("analyst"), ["readers"]);
    }

    #[test]
    fn unknown_keys_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.toml");
        std::fs::write(&path, "[[agent]]\nname = \"a\"\nverifer = \"x\"\n").unwrap();
        let err = AgentStore::load(&path).unwrap_err().to_string();
        assert!(err.contains(":3:1:"), "{err}");
    }
}
