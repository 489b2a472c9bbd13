//! The default allow-list of harmless built-in functions an analyst needs, and the list of sequence functions (which write). Everything not listed is refused unless a policy names it.
//!
//! Deliberately absent (so refused by default): functions that read files or server state
//! (`pg_read_file`, `pg_read_binary_file`, `pg_ls_*dir`, `pg_stat_file`, `pg_stat_get_*`,
//! `pg_tablespace_location`, `inet_server_addr`), large objects (`lo_*`, `loread`, ...), SQL
//! given as text (`query_to_xml*`, `table_to_xml*`, `cursor_to_xml*`, `schema_to_xml*`,
//! `database_to_xml*`, `ts_stat`, `ts_rewrite`), settings changes (`set_config`), backend
//! signals (`pg_cancel_backend`, `pg_terminate_backend`, `pg_reload_conf`,
//! `pg_rotate_logfile`), other servers (`dblink*`), advisory locks (`pg_advisory_*`),
//! notifications (`pg_notify`), replication and backup control, and `nextval`/`setval`
//! (see [`is_sequence_function`]). `set_config` is judged like `SET` by the policy instead
//! (see `decide`).
//!
//! Allowed with a note: `current_setting` (reveals settings the role may read; a custom one is
//! refused by the policy, see `decide`), `pg_get_viewdef`, the other `pg_get_*def` and
//! `pg_get_function_sqlbody` (reveal definitions, as psql's `\d+` and `\df+` do),
//! `shobj_description` (comments on databases and roles, psql's `\l+`), `pg_sleep*`
//! (statement timeouts bound it), the object-name types used as casts (`regclass`, `regtype`,
//! ...: psql's `\d` casts OIDs with them; they reveal what `pg_class` already shows), and
//! `to_reg*` for the same reason. `pg_advisory_unlock_all` only releases the session's own
//! advisory locks (none, since taking one is refused): connection pools send it on release
//! (asyncpg's reset query). `information_schema._pg_expandarray` expands an array with its
//! subscripts, reading nothing: pgjdbc's `getPrimaryKeys` and `getIndexInfo` call it.

use super::FunctionRef;

/// Sorted (checked by a test): binary search.
#[rustfmt::skip]
const SAFE_BUILTINS: &[&str] = &[
    "abbrev", "abs", "acos", "acosd", "acosh", "age", "any_value", "area", "array_agg",
    "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower",
    "array_ndims", "array_position", "array_positions", "array_prepend", "array_remove",
    "array_replace", "array_reverse", "array_sample", "array_shuffle", "array_sort",
    "array_to_json", "array_to_string", "array_to_tsvector", "array_upper", "ascii", "asin",
    "asind", "asinh", "atan", "atan2", "atan2d", "atand", "atanh", "avg", "bernoulli", "bit_and",
    "bit_count", "bit_length", "bit_or", "bit_xor", "bool", "bool_and", "bool_or", "box", "bpchar",
    "broadcast", "btrim", "cardinality", "casefold", "cbrt", "ceil", "ceiling", "center",
    "char_length", "character_length", "chr", "circle", "clock_timestamp", "col_description",
    "concat", "concat_ws", "convert", "convert_from", "convert_to", "corr", "cos", "cosd", "cosh",
    "cot", "cotd", "count", "covar_pop", "covar_samp", "crc32", "crc32c", "cume_dist",
    "current_database", "current_schema", "current_schemas", "current_setting", "currval", "date",
    "date_add", "date_bin", "date_part", "date_subtract", "date_trunc", "daterange", "decode",
    "degrees", "dense_rank", "diameter", "div", "encode", "enum_first", "enum_last", "enum_range",
    "erf", "erfc", "every", "exp", "extract", "factorial", "family", "first_value", "float4",
    "float8", "floor", "format", "format_type", "gamma", "gcd", "gen_random_uuid",
    "generate_series", "generate_subscripts", "get_bit", "get_byte", "get_current_ts_config",
    "greatest", "has_any_column_privilege", "has_column_privilege", "has_database_privilege",
    "has_foreign_data_wrapper_privilege", "has_function_privilege", "has_language_privilege",
    "has_parameter_privilege", "has_schema_privilege", "has_sequence_privilege",
    "has_server_privilege", "has_table_privilege", "has_tablespace_privilege",
    "has_type_privilege", "height", "host", "hostmask", "inet_merge", "inet_same_family",
    "initcap", "int2", "int4", "int4range", "int8", "int8range", "interval", "is_normalized",
    "isempty", "isfinite", "json", "json_agg", "json_agg_strict", "json_array_elements",
    "json_array_elements_text", "json_array_length", "json_build_array", "json_build_object",
    "json_each", "json_each_text", "json_extract_path", "json_extract_path_text", "json_object",
    "json_object_agg", "json_object_agg_strict", "json_object_agg_unique",
    "json_object_agg_unique_strict", "json_object_keys", "json_populate_record",
    "json_populate_recordset", "json_strip_nulls", "json_to_record", "json_to_recordset",
    "json_typeof", "jsonb", "jsonb_agg", "jsonb_agg_strict", "jsonb_array_elements",
    "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array", "jsonb_build_object",
    "jsonb_each", "jsonb_each_text", "jsonb_extract_path", "jsonb_extract_path_text",
    "jsonb_insert", "jsonb_object", "jsonb_object_agg", "jsonb_object_agg_strict",
    "jsonb_object_agg_unique", "jsonb_object_agg_unique_strict", "jsonb_object_keys",
    "jsonb_path_exists", "jsonb_path_exists_tz", "jsonb_path_match", "jsonb_path_match_tz",
    "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_array_tz",
    "jsonb_path_query_first", "jsonb_path_query_first_tz", "jsonb_path_query_tz",
    "jsonb_populate_record", "jsonb_populate_record_valid", "jsonb_populate_recordset",
    "jsonb_pretty", "jsonb_set", "jsonb_set_lax", "jsonb_strip_nulls", "jsonb_to_record",
    "jsonb_to_recordset", "jsonb_typeof", "justify_days", "justify_hours", "justify_interval",
    "lag", "last_value", "lastval", "lcm", "lead", "least", "left", "length", "lgamma",
    "like_escape", "ln", "localtime", "localtimestamp", "log", "log10", "lower", "lower_inc",
    "lower_inf", "lpad", "ltrim", "make_date", "make_interval", "make_time", "make_timestamp",
    "make_timestamptz", "masklen", "max", "md5", "min", "min_scale", "mod", "mode", "multirange",
    "netmask", "network", "normalize", "now", "nth_value", "ntile", "num_nonnulls", "num_nulls",
    "numeric", "numrange", "obj_description", "octet_length", "overlaps", "overlay", "parse_ident",
    "percent_rank", "percentile_cont", "percentile_disc", "pg_advisory_unlock_all",
    "pg_backend_pid", "pg_char_to_encoding", "pg_client_encoding", "pg_collation_for",
    "pg_collation_is_visible", "pg_column_compression", "pg_column_size", "pg_conf_load_time",
    "pg_conversion_is_visible", "pg_current_snapshot", "pg_current_xact_id",
    "pg_current_xact_id_if_assigned", "pg_database_size", "pg_describe_object",
    "pg_encoding_to_char", "pg_function_is_visible", "pg_get_constraintdef", "pg_get_expr",
    "pg_get_function_arguments", "pg_get_function_identity_arguments", "pg_get_function_result",
    "pg_get_function_sqlbody", "pg_get_functiondef", "pg_get_indexdef", "pg_get_keywords",
    "pg_get_partition_constraintdef", "pg_get_partkeydef", "pg_get_ruledef",
    "pg_get_serial_sequence", "pg_get_statisticsobjdef", "pg_get_statisticsobjdef_columns",
    "pg_get_statisticsobjdef_expressions", "pg_get_triggerdef", "pg_get_userbyid",
    "pg_get_viewdef", "pg_has_role", "pg_identify_object", "pg_identify_object_as_address",
    "pg_index_column_has_property", "pg_index_has_property", "pg_indexam_has_property",
    "pg_indexes_size", "pg_is_in_recovery", "pg_opclass_is_visible", "pg_operator_is_visible",
    "pg_opfamily_is_visible", "pg_options_to_table", "pg_partition_ancestors", "pg_partition_root",
    "pg_partition_tree", "pg_postmaster_start_time", "pg_relation_is_publishable",
    "pg_relation_size", "pg_size_bytes", "pg_size_pretty", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "pg_snapshot_xip", "pg_snapshot_xmax", "pg_snapshot_xmin",
    "pg_statistics_obj_is_visible", "pg_table_is_visible", "pg_table_size",
    "pg_total_relation_size", "pg_ts_config_is_visible", "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible", "pg_ts_template_is_visible", "pg_type_is_visible", "pg_typeof",
    "pg_visible_in_snapshot", "pg_xact_status", "phraseto_tsquery", "pi", "plainto_tsquery",
    "point", "position", "pow", "power", "quote_ident", "quote_literal", "quote_nullable",
    "radians", "random", "random_normal", "range_agg", "range_intersect_agg", "range_merge",
    "rank", "regclass", "regcollation", "regconfig", "regdictionary", "regexp_count",
    "regexp_instr", "regexp_like", "regexp_match", "regexp_matches", "regexp_replace",
    "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "regnamespace", "regoper",
    "regoperator", "regproc", "regprocedure", "regr_avgx", "regr_avgy", "regr_count",
    "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "regrole",
    "regtype", "repeat", "replace", "reverse", "right", "round", "row_number",
    "row_security_active", "row_to_json", "rpad", "rtrim", "scale", "set_masklen", "setweight",
    "sha224", "sha256", "sha384", "sha512", "shobj_description", "sign", "similar_to_escape",
    "sin", "sind", "sinh", "split_part", "sqrt", "starts_with", "statement_timestamp", "stddev",
    "stddev_pop", "stddev_samp", "string_agg", "string_to_array", "string_to_table", "strip",
    "strpos", "substr", "substring", "sum", "system", "system_rows", "system_time", "system_user",
    "tan", "tand", "tanh", "text", "time", "timeofday", "timestamp", "timestamptz", "timetz",
    "timezone", "to_ascii", "to_bin", "to_char", "to_date", "to_hex", "to_json", "to_jsonb",
    "to_number", "to_oct", "to_regclass", "to_regcollation", "to_regnamespace", "to_regoper",
    "to_regoperator", "to_regproc", "to_regprocedure", "to_regrole", "to_regtype", "to_regtypemod",
    "to_timestamp", "to_tsquery", "to_tsvector", "transaction_timestamp", "translate",
    "trim_array", "trim_scale", "trunc", "ts_debug", "ts_headline", "ts_lexize", "ts_parse",
    "ts_rank", "ts_rank_cd", "ts_token_type", "tsquery_phrase", "tsrange", "tstzrange",
    "tsvector_to_array", "txid_current", "txid_current_if_assigned", "txid_current_snapshot",
    "txid_snapshot_xip", "txid_snapshot_xmax", "txid_snapshot_xmin", "txid_status",
    "txid_visible_in_snapshot", "unistr", "unnest", "upper", "upper_inc", "upper_inf",
    "uuid_extract_timestamp", "uuid_extract_version", "uuidv4", "uuidv7", "var_pop", "var_samp",
    "varchar", "variance", "version", "websearch_to_tsquery", "width", "width_bucket",
    "xml_is_well_formed", "xml_is_well_formed_content", "xml_is_well_formed_document", "xmlagg",
    "xmlcomment", "xmlexists", "xmltext", "xpath", "xpath_exists",
];

/// Functions with side effects on sequences: not safe for a read-only agent.
const SEQUENCE_WRITERS: &[&str] = &["nextval", "setval"];

/// Whether the name resolves to PostgreSQL's own catalog: unqualified (PostgreSQL searches
/// pg_catalog first unless the search_path says otherwise, which the policy pins) or
/// qualified with pg_catalog. Any other schema is never a built-in.
fn is_builtin_schema(f: &FunctionRef) -> bool {
    matches!(f.schema.as_deref(), None | Some("pg_catalog"))
}

/// Whether `f` is on the default allow-list of harmless built-ins.
/// The names of PostgreSQL 15's `pg_catalog` functions (`SELECT DISTINCT proname FROM pg_proc
/// WHERE pronamespace = 'pg_catalog'::regnamespace`, sorted bytewise), one per line.
const PG_CATALOG_FUNCTIONS: &str = include_str!("pg_catalog_functions.txt");

/// Whether `pg_catalog` has a function of this name (PostgreSQL 15's): an unqualified call of
/// it resolves there whatever the search path, as `pg_catalog` is searched first.
pub fn is_catalog_function(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| PG_CATALOG_FUNCTIONS.lines().collect())
        .binary_search(&name)
        .is_ok()
}

/// Built-in functions that run SQL given to them as text (or reach another server, where any SQL
/// runs): what that SQL reads, no analysis of the calling statement can see. `dblink*` in any
/// schema (the extension's functions live where it was created).
pub fn runs_sql_given_as_text(f: &FunctionRef) -> bool {
    let builtin = matches!(f.schema.as_deref(), None | Some("pg_catalog"));
    (builtin
        && matches!(
            f.name.as_str(),
            "query_to_xml"
                | "query_to_xmlschema"
                | "query_to_xml_and_xmlschema"
                | "table_to_xml"
                | "table_to_xmlschema"
                | "table_to_xml_and_xmlschema"
                | "cursor_to_xml"
                | "cursor_to_xmlschema"
                | "schema_to_xml"
                | "schema_to_xmlschema"
                | "schema_to_xml_and_xmlschema"
                | "database_to_xml"
                | "database_to_xmlschema"
                | "database_to_xml_and_xmlschema"
                | "ts_stat"
                | "ts_rewrite"
        ))
        || f.name.starts_with("dblink")
}

pub fn is_safe_builtin_function(f: &FunctionRef) -> bool {
    if f.schema.as_deref() == Some("information_schema") {
        return f.name == "_pg_expandarray";
    }
    is_builtin_schema(f) && SAFE_BUILTINS.binary_search(&f.name.as_str()).is_ok()
}

/// Whether `f` is a built-in that advances or sets a sequence (`nextval`, `setval`).
pub fn is_sequence_function(f: &FunctionRef) -> bool {
    is_builtin_schema(f) && SEQUENCE_WRITERS.contains(&f.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::{is_safe_builtin_function, is_sequence_function, SAFE_BUILTINS};
    use crate::policy::sql::FunctionRef;

    fn f(schema: Option<&str>, name: &str) -> FunctionRef {
        FunctionRef {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn list_is_sorted_and_unique() {
        for pair in SAFE_BUILTINS.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{} must come before {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn analyst_functions_are_safe() {
        for name in [
            "count",
            "sum",
            "avg",
            "min",
            "max",
            "string_agg",
            "array_agg",
            "json_agg",
            "jsonb_agg",
            "row_number",
            "rank",
            "lag",
            "lead",
            "date_trunc",
            "extract",
            "now",
            "coalesce_is_a_node_not_a_function_so_absent",
            "lower",
            "round",
            "to_char",
            "jsonb_build_object",
            "generate_series",
            "pg_get_userbyid",
            "pg_table_is_visible",
            "format_type",
            "pg_get_expr",
            "pg_get_indexdef",
            "pg_get_constraintdef",
            "obj_description",
            "col_description",
            "pg_get_viewdef",
            "pg_relation_size",
            "array_to_string",
            "quote_ident",
            "currval",
            "pg_current_xact_id",
            "txid_current",
            "version",
            "current_setting",
            "pg_sleep",
            "regclass",
        ] {
            let expected = name != "coalesce_is_a_node_not_a_function_so_absent";
            assert_eq!(is_safe_builtin_function(&f(None, name)), expected, "{name}");
        }
        assert!(is_safe_builtin_function(&f(Some("pg_catalog"), "count")));
    }

    #[test]
    fn dangerous_functions_are_not_safe() {
        for name in [
            "pg_read_file",
            "pg_read_binary_file",
            "pg_ls_dir",
            "pg_ls_logdir",
            "pg_stat_file",
            "lo_import",
            "lo_export",
            "lo_get",
            "loread",
            "pg_stat_get_activity",
            "query_to_xml",
            "query_to_xml_and_xmlschema",
            "table_to_xml",
            "cursor_to_xml",
            "database_to_xml",
            "schema_to_xml",
            "ts_stat",
            "ts_rewrite",
            "set_config",
            "pg_cancel_backend",
            "pg_terminate_backend",
            "pg_reload_conf",
            "dblink",
            "dblink_exec",
            "dblink_connect",
            "nextval",
            "setval",
            "pg_advisory_lock",
            "pg_try_advisory_lock",
            "pg_notify",
            "pg_switch_wal",
            "pg_tablespace_location",
            "inet_server_addr",
            "pg_create_logical_replication_slot",
        ] {
            assert!(!is_safe_builtin_function(&f(None, name)), "{name}");
        }
    }

    #[test]
    fn other_schemas_are_never_builtin() {
        assert!(!is_safe_builtin_function(&f(Some("public"), "count")));
        assert!(!is_safe_builtin_function(&f(Some("PG_CATALOG"), "count")));
        assert!(!is_safe_builtin_function(&f(None, "COUNT")));
        assert!(!is_sequence_function(&f(Some("public"), "nextval")));
    }

    #[test]
    fn sequence_functions() {
        assert!(is_sequence_function(&f(None, "nextval")));
        assert!(is_sequence_function(&f(Some("pg_catalog"), "setval")));
        assert!(!is_sequence_function(&f(None, "currval")));
    }
}
