//! MCP's `notifications/cancelled`, on a stateless server. The notification comes as a request
//! of its own, naming the cancelled call by its JSON-RPC id; with no MCP session to hold the
//! call, the gateway keeps the calls in flight itself, by agent and id, and a cancel reaches
//! only the calls of the agent that sent it. A cancelled call's future is dropped, as when its
//! client goes away: its statement is cancelled upstream and its outcome recorded as unknown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// A call's JSON-RPC id as rmcp reads it, written back by `serde_json` (`7`, `"abc"`): the same
/// id in a `tools/call` and in the `requestId` of its cancellation reads the same, whichever way
/// the client wrote the number (`7.0` is rmcp's `7`).
pub type CallId = String;

/// `id` (a JSON-RPC id as received) as a [`CallId`]: read as rmcp reads a request's id.
pub fn call_id(id: &rmcp::model::RequestId) -> CallId {
    serde_json::to_value(id)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// The tool calls running now.
#[derive(Default)]
pub struct CallsInFlight {
    next: AtomicU64,
    calls: Mutex<HashMap<u64, InFlight>>,
}

struct InFlight {
    agent: Arc<str>,
    id: CallId,
    cancel: CancellationToken,
}

/// A call's place in [`CallsInFlight`], given up when the call ends.
pub struct Registered {
    calls: Arc<CallsInFlight>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.key);
    }
}

impl CallsInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InFlight>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `agent`'s call `id`, cancelled through `cancel` until the returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        agent: &Arc<str>,
        id: CallId,
        cancel: CancellationToken,
    ) -> Registered {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            InFlight {
                agent: agent.clone(),
                id,
                cancel,
            },
        );
        Registered {
            calls: self.clone(),
            key,
        }
    }

    /// Cancels `agent`'s calls with `id` (a stateless server cannot tell two of the agent's
    /// clients that reuse an id apart: both stop, never another agent's); how many.
    pub fn cancel(&self, agent: &str, id: &str) -> usize {
        let calls = self.lock();
        let mut n = 0;
        for c in calls.values() {
            if &*c.agent == agent && c.id == id {
                c.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The `requestId` a `notifications/cancelled` message names, as a [`CallId`].
pub fn cancelled_id(message: &serde_json::Map<String, serde_json::Value>) -> Option<CallId> {
    // A notification has no id: sent as a request, the MCP service answers it -32601 and it
    // cancels nothing.
    if message.get("method")?.as_str()? != "notifications/cancelled" || message.contains_key("id") {
        return None;
    }
    let id = message.get("params")?.get("requestId")?;
    let id: rmcp::model::RequestId = serde_json::from_value(id.clone()).ok()?;
    Some(call_id(&id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cancel_reaches_only_the_agents_own_call_with_that_id() {
        let calls = Arc::new(CallsInFlight::default());
        let (a, b): (Arc<str>, Arc<str>) = ("analyst".into(), "writer".into());
        let (ta, tb, tc) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let _ra = calls.register(&a, "7".into(), ta.clone());
        let _rb = calls.register(&b, "7".into(), tb.clone());
        let rc = calls.register(&a, "\"7\"".into(), tc.clone());
        assert_eq!(calls.cancel("analyst", "7"), 1);
        assert!(ta.is_cancelled() && !tb.is_cancelled() && !tc.is_cancelled());
        drop(rc);
        assert_eq!(
            calls.cancel("analyst", "\"7\""),
            0,
            "a finished call is gone"
        );
        assert_eq!(calls.len(), 2);
    }

    #[test]
    fn the_cancelled_id_is_read_as_a_call_id_is_written() {
        let m = |v: serde_json::Value| v.as_object().unwrap().clone();
        let n = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 101, "reason": "user"}});
        assert_eq!(cancelled_id(&m(n)).as_deref(), Some("101"));
        let s = json!({"method": "notifications/cancelled", "params": {"requestId": "x-1"}});
        assert_eq!(cancelled_id(&m(s)).as_deref(), Some("\"x-1\""));
        // A number written otherwise names the same call, as rmcp reads the call's id.
        let call: rmcp::model::RequestId = serde_json::from_value(json!(7)).unwrap();
        for written in [json!(7), json!(7.0)] {
            let n = json!({"method": "notifications/cancelled", "params": {"requestId": written}});
            assert_eq!(cancelled_id(&m(n)), Some(call_id(&call)), "{written}");
        }
        for other in [
            json!({"method": "notifications/cancelled", "params": {"requestId": [1]}}),
            json!({"method": "notifications/cancelled"}),
            json!({"method": "tools/call", "params": {"requestId": 1}}),
            // Sent as a request (with an id): not a cancellation (MCP review).
            json!({"jsonrpc": "2.0", "id": 5, "method": "notifications/cancelled",
                "params": {"requestId": 7}}),
        ] {
            assert_eq!(cancelled_id(&m(other)), None);
        }
    }
}
