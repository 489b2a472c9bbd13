//! A real session core for unit tests, without sockets: agents with known tokens, policies
//! from text, an audit log in a temporary directory. Relay state machines are tested on it.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Accepted, Core, CoreParts, Session};
use crate::audit::{AuditLog, Protocol};
use crate::auth::{AgentStore, AgentsFile};
use crate::config::{AuditConfig, LimitsConfig, RedisOutcomes, UpstreamKind};
use crate::policy::{Engine, PolicyContext, PolicySet};

/// Upstreams every test core knows: PostgreSQL `shop`, Redis `cache`, MongoDB `mongo`.
pub const UPSTREAMS: [(&str, UpstreamKind); 3] = [
    ("shop", UpstreamKind::Postgres),
    ("cache", UpstreamKind::Redis),
    ("mongo", UpstreamKind::Mongodb),
];

pub struct TestCore {
    pub core: Arc<Core>,
    pub dir: tempfile::TempDir,
}

impl TestCore {
    /// `agents` are (name, token); `policies` are (file name, TOML text).
    pub fn new(agents: &[(&str, &str)], policies: &[(&str, &str)]) -> TestCore {
        Self::with_limits(agents, policies, LimitsConfig::default())
    }

    pub fn with_limits(
        agents: &[(&str, &str)],
        policies: &[(&str, &str)],
        limits: LimitsConfig,
    ) -> TestCore {
        Self::build(agents, policies, limits, None)
    }

    /// A core whose audit log is the file at `audit` (e.g. `/dev/full`, a disk that is full).
    pub fn with_audit_file(
        agents: &[(&str, &str)],
        policies: &[(&str, &str)],
        audit: &std::path::Path,
    ) -> TestCore {
        Self::build(agents, policies, LimitsConfig::default(), Some(audit))
    }

    fn build(
        agents: &[(&str, &str)],
        policies: &[(&str, &str)],
        limits: LimitsConfig,
        audit: Option<&std::path::Path>,
    ) -> TestCore {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = AgentsFile::default();
        for (name, token) in agents {
            file.add(name, token, Vec::new()).expect("agent");
        }
        let store = AgentStore::from_file(&dir.path().join("agents.toml"), file).expect("agents");
        let ctx = PolicyContext::for_upstreams(
            &store,
            UPSTREAMS
                .iter()
                .map(|(n, k)| (n.to_string(), *k, vec!["public".to_string()])),
        );
        let sources = policies
            .iter()
            .map(|(n, t)| (PathBuf::from(n), t.to_string()))
            .collect();
        let set = PolicySet::from_sources(sources, &ctx).expect("test policies load");
        let audit_path = audit.map_or_else(|| dir.path().join("audit.log"), PathBuf::from);
        let audit = AuditLog::open(&audit_path).expect("audit log");
        let core = Core::new(CoreParts {
            limits,
            audit_config: AuditConfig {
                file: audit_path,
                redact_literals: false,
                redis_outcomes: RedisOutcomes::Errors,
                rotate: Default::default(),
                syslog: None,
                webhook: None,
            },
            agents: store,
            policy: Engine::new(set),
            audit,
            tls: crate::tls::TlsHolder::new(None),
            mock_secret: [7; 32],
        });
        TestCore {
            core: Arc::new(core),
            dir,
        }
    }

    pub fn accept(&self, protocol: Protocol) -> Accepted {
        self.core
            .accept(protocol, "127.0.0.1:40000".parse().expect("address"))
    }

    /// A session of `agent` (its token `token`) on `upstream`, admitted as a front end would.
    pub fn session(
        &self,
        protocol: Protocol,
        agent: &str,
        token: &str,
        upstream: &str,
    ) -> (Accepted, Session) {
        let accepted = self.accept(protocol);
        let verified = accepted
            .verify_token(agent.as_bytes(), token.as_bytes())
            .expect("the test agent's token");
        let session = accepted
            .admit(&verified, upstream, false)
            .expect("the test agent is admitted");
        (accepted, session)
    }

    /// Redis 7.0's real command table (the raw `COMMAND` reply kept with the policy's tests).
    pub fn redis_command_table() -> Arc<crate::policy::redis::CommandTable> {
        let raw =
            bytes::Bytes::from_static(include_bytes!("../policy/redis/testdata/command-7.0.resp"));
        let (frame, _) = redis_protocol::resp2::decode::decode_bytes(&raw)
            .expect("RESP")
            .expect("a whole frame");
        Arc::new(crate::policy::redis::CommandTable::from_reply(&frame).expect("command table"))
    }

    /// The audit log's records, parsed.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.core.audit.flush().expect("flush");
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record"))
            .collect()
    }
}
