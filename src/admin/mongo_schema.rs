//! `GET /api/v1/connectors/{id}/schema[?agent=NAME]` for a MongoDB connector: its collections
//! and the field names seen in a sample of their documents (read now over a side connection).
//! With `agent`, only the collections that agent may use, each with the operations allowed and
//! masked fields marked, as the policy engine would judge them. The per-agent view
//! ([`access_for`], [`collection_view`]) is shared with the MCP `list_collections` tool.

use axum::Json;
use serde_json::{json, Value};

use super::connectors::shown;
use super::error::ApiError;
use super::schema::SchemaRead;
use super::State;
use crate::doors::CollectionShape;
use crate::policy::mongo::{MongoRules, Op};
use crate::policy::rules::UpstreamRules;

/// What one agent may do on the connector.
pub enum Access {
    /// Every collection, unmasked (only shadow policies apply: nothing is enforced).
    Everything,
    Rules(Box<MongoRules>),
    Nothing,
}

fn access_of(state: &State, agent: &str, upstream: &str) -> Result<Access, ApiError> {
    if state.gw.core.agents.load().get(agent).is_none() {
        return Err(ApiError::NotFound(format!("no agent \"{}\"", shown(agent))));
    }
    Ok(access_for(&state.gw.core.policy, agent, upstream))
}

/// What `agent` may do on MongoDB upstream `upstream` under the current policy.
pub fn access_for(engine: &crate::policy::Engine, agent: &str, upstream: &str) -> Access {
    let Some(policy) = engine.agent_policy(agent) else {
        return Access::Nothing;
    };
    match (&policy.enforced, &policy.with_shadow) {
        (Some(m), _) => match m.get(upstream).and_then(UpstreamRules::mongo) {
            Some(r) => Access::Rules(Box::new(r.clone())),
            None => Access::Nothing,
        },
        (None, Some(m)) if m.contains_key(upstream) => Access::Everything,
        _ => Access::Nothing,
    }
}

/// A collection as the caller may see it (everything without `access`); `None` when the agent
/// may do nothing with it.
pub fn collection_view(c: &CollectionShape, access: Option<&Access>) -> Option<Value> {
    let ns = format!("{}.{}", c.database, c.name);
    let rules = match access {
        None | Some(Access::Everything) => None,
        Some(Access::Nothing) => return None,
        Some(Access::Rules(r)) => {
            if !r.collection_visible(&ns) {
                return None;
            }
            Some(r)
        }
    };
    let masks = rules.map(|r| r.protection_of(&ns)).unwrap_or_default();
    let mask_of = |field: &str| {
        masks
            .masks
            .iter()
            .find(|m| field == m.path || field.starts_with(&format!("{}.", m.path)))
    };
    let fields: Vec<Value> = c
        .fields
        .iter()
        .map(|f| {
            let m = mask_of(f);
            json!({ "name": f, "masked": m.is_some(), "mask": m.map(|m| m.strategy.to_string()) })
        })
        .collect();
    let mut v = json!({ "database": c.database, "name": c.name, "fields": fields });
    if let Some(r) = rules {
        let ops: Vec<&str> = Op::ALL
            .into_iter()
            .filter(|op| r.check(&ns, *op).is_ok())
            .map(Op::name)
            .collect();
        v["operations"] = json!(ops);
        v["row_filtered"] = json!(!masks.filters.is_empty());
        let mut rules: Vec<&str> = masks
            .masks
            .iter()
            .map(|m| m.rule.as_str())
            .chain(masks.filters.iter().map(|f| f.1.as_str()))
            .collect();
        rules.sort();
        rules.dedup();
        v["rules"] = json!(rules);
    }
    Some(v)
}

/// The connector's collections, sampled now, or by a read that ran while this request waited
/// its turn (`schema::shared_read`): twenty requests at once once took one sample each in
/// turn, holding up every schema read for thirteen seconds (a re-review).
async fn sample(state: &State, id: &str) -> Result<SchemaRead<Vec<CollectionShape>>, ApiError> {
    super::schema::shared_read(state, id, &state.samples, true, || {
        super::schema::read_through_door(state, id, "collections", |d, id, t| d.collections(id, t))
    })
    .await
}

pub async fn schema(state: &State, id: &str, agent: Option<&str>) -> Result<Json<Value>, ApiError> {
    let access = match agent {
        None => None,
        Some(a) => Some(access_of(state, a, id)?),
    };
    let sample = sample(state, id).await?;
    let collections = &sample.value;
    let views: Vec<Value> = collections
        .iter()
        .filter_map(|c| collection_view(c, access.as_ref()))
        .collect();
    let mut body = json!({ "connector": id, "loaded_at": sample.loaded_at, "collections": views });
    if let Some(a) = agent {
        body["agent"] = json!(a);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::glob::Glob;
    use crate::policy::mask::MaskStrategy;
    use crate::policy::mongo::rules::{CollectionMatcher, OpSet};

    #[test]
    fn an_agent_sees_only_its_collections_with_masked_fields_marked() {
        let rules = MongoRules {
            collections: vec![CollectionMatcher {
                glob: Glob::new("shop.customers"),
                allow: OpSet::parse_word("read").unwrap(),
                deny: OpSet::default(),
                rule: "analyst: collection shop.customers".into(),
                masks: vec![("email".into(), MaskStrategy::Email)],
                row_filter: None,
            }],
            ..MongoRules::default()
        };
        let access = Access::Rules(Box::new(rules));
        let shape = |name: &str| CollectionShape {
            database: "shop".into(),
            name: name.into(),
            fields: vec!["_id".into(), "email".into()],
        };
        let v = collection_view(&shape("customers"), Some(&access)).unwrap();
        assert_eq!(
            v["operations"],
            json!(["find", "aggregate", "count", "distinct"])
        );
        assert_eq!(v["fields"][0]["masked"], json!(false));
        assert_eq!(v["fields"][1]["masked"], json!(true));
        assert_eq!(v["fields"][1]["mask"], json!("email"));
        assert!(collection_view(&shape("secrets"), Some(&access)).is_none());
        assert!(collection_view(&shape("secrets"), Some(&Access::Nothing)).is_none());
        assert!(collection_view(&shape("secrets"), None)
            .unwrap()
            .get("operations")
            .is_none());
    }
}
