//! What PostgreSQL 15 keeps in `pg_catalog`, and which catalog relations reveal stored values.
//!
//! `pg_catalog` is searched before the pinned search_path, so an unqualified `pg_class` is the
//! catalog's while an unqualified `pg_orders` is `public.pg_orders`: resolving names exactly needs
//! the list (read off a PostgreSQL 15 cluster, `relkind` r, v, m, f, p; `pg_stat_activity` and
//! `pg_stat_replication` were missing until a review found them). A `pg_` name it does not
//! know is judged as possibly the catalog's too (`policy::decide::resolve_name`).

/// Every table and view in PostgreSQL 15's `pg_catalog`, sorted.
pub const PG_CATALOG_RELATIONS: &[&str] = &[
    "pg_aggregate",
    "pg_am",
    "pg_amop",
    "pg_amproc",
    "pg_attrdef",
    "pg_attribute",
    "pg_auth_members",
    "pg_authid",
    "pg_available_extension_versions",
    "pg_available_extensions",
    "pg_backend_memory_contexts",
    "pg_cast",
    "pg_class",
    "pg_collation",
    "pg_config",
    "pg_constraint",
    "pg_conversion",
    "pg_cursors",
    "pg_database",
    "pg_db_role_setting",
    "pg_default_acl",
    "pg_depend",
    "pg_description",
    "pg_enum",
    "pg_event_trigger",
    "pg_extension",
    "pg_file_settings",
    "pg_foreign_data_wrapper",
    "pg_foreign_server",
    "pg_foreign_table",
    "pg_group",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_index",
    "pg_indexes",
    "pg_inherits",
    "pg_init_privs",
    "pg_language",
    "pg_largeobject",
    "pg_largeobject_metadata",
    "pg_locks",
    "pg_matviews",
    "pg_namespace",
    "pg_opclass",
    "pg_operator",
    "pg_opfamily",
    "pg_parameter_acl",
    "pg_partitioned_table",
    "pg_policies",
    "pg_policy",
    "pg_prepared_statements",
    "pg_prepared_xacts",
    "pg_proc",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_publication_tables",
    "pg_range",
    "pg_replication_origin",
    "pg_replication_origin_status",
    "pg_replication_slots",
    "pg_rewrite",
    "pg_roles",
    "pg_rules",
    "pg_seclabel",
    "pg_seclabels",
    "pg_sequence",
    "pg_sequences",
    "pg_settings",
    "pg_shadow",
    "pg_shdepend",
    "pg_shdescription",
    "pg_shmem_allocations",
    "pg_shseclabel",
    "pg_stat_activity",
    "pg_stat_all_indexes",
    "pg_stat_all_tables",
    "pg_stat_archiver",
    "pg_stat_bgwriter",
    "pg_stat_database",
    "pg_stat_database_conflicts",
    "pg_stat_gssapi",
    "pg_stat_progress_analyze",
    "pg_stat_progress_basebackup",
    "pg_stat_progress_cluster",
    "pg_stat_progress_copy",
    "pg_stat_progress_create_index",
    "pg_stat_progress_vacuum",
    "pg_stat_recovery_prefetch",
    "pg_stat_replication",
    "pg_stat_replication_slots",
    "pg_stat_slru",
    "pg_stat_ssl",
    "pg_stat_subscription",
    "pg_stat_subscription_stats",
    "pg_stat_sys_indexes",
    "pg_stat_sys_tables",
    "pg_stat_user_functions",
    "pg_stat_user_indexes",
    "pg_stat_user_tables",
    "pg_stat_wal",
    "pg_stat_wal_receiver",
    "pg_stat_xact_all_tables",
    "pg_stat_xact_sys_tables",
    "pg_stat_xact_user_functions",
    "pg_stat_xact_user_tables",
    "pg_statio_all_indexes",
    "pg_statio_all_sequences",
    "pg_statio_all_tables",
    "pg_statio_sys_indexes",
    "pg_statio_sys_sequences",
    "pg_statio_sys_tables",
    "pg_statio_user_indexes",
    "pg_statio_user_sequences",
    "pg_statio_user_tables",
    "pg_statistic",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_subscription",
    "pg_subscription_rel",
    "pg_tables",
    "pg_tablespace",
    "pg_timezone_abbrevs",
    "pg_timezone_names",
    "pg_transform",
    "pg_trigger",
    "pg_ts_config",
    "pg_ts_config_map",
    "pg_ts_dict",
    "pg_ts_parser",
    "pg_ts_template",
    "pg_type",
    "pg_user",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_views",
];

/// Catalog relations an agent may not read even when introspection is allowed: they expose column
/// values (statistics: most common values, histograms), credentials, other sessions' queries,
/// server files or configuration.
pub const SENSITIVE_CATALOG_RELATIONS: &[&str] = &[
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_largeobject",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_file_settings",
    "pg_config",
    "pg_settings",
    "pg_db_role_setting",
    "pg_replication_slots",
    "pg_subscription",
    "pg_backend_memory_contexts",
    "pg_shmem_allocations",
    "pg_prepared_xacts",
    "pg_prepared_statements",
    "pg_cursors",
    "pg_locks",
    // Sequences' last values: how many rows a hidden table got (`secrets_id_seq`).
    "pg_sequences",
];

/// Whether an agent may not read `pg_catalog.<name>` even when introspection is allowed: the
/// list above, and every statistics view (`pg_stat_*`, `pg_statio_*`): the row counts, writes
/// and reads of every table, the hidden ones included (`n_live_tup` of `secrets`, its updates
/// as they happen), database-wide counters, other sessions' operations and client identities.
/// No client library needs them to discover a schema.
pub fn is_sensitive(name: &str) -> bool {
    SENSITIVE_CATALOG_RELATIONS.contains(&name)
        || name.starts_with("pg_stat_")
        || name.starts_with("pg_statio_")
}

pub fn is_catalog_relation(name: &str) -> bool {
    PG_CATALOG_RELATIONS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_knows_the_usual_suspects() {
        assert!(PG_CATALOG_RELATIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_catalog_relation("pg_class") && is_catalog_relation("pg_stats"));
        assert!(!is_catalog_relation("pg_orders"));
        for s in SENSITIVE_CATALOG_RELATIONS {
            assert!(is_catalog_relation(s), "{s}");
        }
        for s in [
            "pg_stat_user_tables",
            "pg_statio_all_indexes",
            "pg_stat_ssl",
            "pg_stats",
        ] {
            assert!(is_sensitive(s), "{s}");
        }
        assert!(!is_sensitive("pg_class") && !is_sensitive("pg_statistic_ext"));
    }

    /// Under a policy granting `public.*`, an unqualified catalog view is still the catalog's:
    /// `pg_stat_activity` (other sessions' statement texts) was missing from the list and resolved
    /// to `public.pg_stat_activity`, which the glob allowed; a `pg_` name of a newer server's
    /// catalog must not be waved through either; a user's own `pg_` table still can be read.
    #[test]
    fn unqualified_catalog_views_are_the_catalogs_under_a_public_glob() {
        use crate::policy::{Engine, Outcome, PolicyContext, PolicySet, SessionFacts};
        use std::path::PathBuf;
        let mut agents = crate::auth::AgentsFile::default();
        agents.add("analyst", "tg_x", vec![]).unwrap();
        let store =
            crate::auth::AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
        let ctx = PolicyContext::for_upstreams(
            &store,
            [(
                "shop".into(),
                crate::config::UpstreamKind::Postgres,
                vec!["public".into()],
            )],
        );
        let text = "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"public.*\"\nallow = [\"select\"]\n";
        let engine = Engine::new(
            PolicySet::from_sources(vec![(PathBuf::from("wide.toml"), text.into())], &ctx).unwrap(),
        );
        let judge = |sql: &str| {
            let v = engine.check_sql(
                &"analyst".into(),
                &"shop".into(),
                sql,
                &SessionFacts::default(),
            );
            (v.outcome, v.denial.as_ref().map(|d| d.rule.clone()))
        };
        for sql in [
            "SELECT query FROM pg_stat_activity",
            "SELECT * FROM pg_stat_replication",
            "SELECT * FROM pg_stat_io",
            "SELECT * FROM pg_catalog.pg_stat_activity",
        ] {
            assert_eq!(
                judge(sql),
                (
                    Outcome::Block,
                    Some("builtin: sensitive-catalog".to_string())
                ),
                "{sql}"
            );
        }
        assert_eq!(judge("SELECT * FROM pg_orders").0, Outcome::Allow);
        assert_eq!(judge("SELECT * FROM public.pg_stat_io").0, Outcome::Allow);
    }
}
