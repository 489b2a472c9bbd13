//! The fast-path function call protocol (`FunctionCall` messages) names a function by OID and
//! carries no SQL to analyse. libpq uses it for large objects only (`lo_open`, `loread`, ...,
//! looked up by name in `pg_proc`); those built-in functions have fixed OIDs. A passthrough agent
//! may call exactly these; every other call is refused (`builtin: fastpath`).

/// The built-in large-object functions libpq calls through the fast path, by their fixed OID
/// (pg_proc.dat; `tests/pg_protocol_raw.rs` checks them against a real server).
pub const LARGE_OBJECT_FUNCTIONS: [(u32, &str); 13] = [
    (715, "lo_create"),
    (952, "lo_open"),
    (953, "lo_close"),
    (954, "loread"),
    (955, "lowrite"),
    (956, "lo_lseek"),
    (957, "lo_creat"),
    (958, "lo_tell"),
    (964, "lo_unlink"),
    (1004, "lo_truncate"),
    (3170, "lo_lseek64"),
    (3171, "lo_tell64"),
    (3172, "lo_truncate64"),
];

/// The large-object function `oid` names, if it is one.
pub fn large_object_function(oid: u32) -> Option<&'static str> {
    LARGE_OBJECT_FUNCTIONS
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_large_object_functions_are_known() {
        assert_eq!(large_object_function(952), Some("lo_open"));
        assert_eq!(large_object_function(3172), Some("lo_truncate64"));
        // pg_terminate_backend, set_config, lo_export (server files): not callable this way.
        for oid in [2096, 2078, 765] {
            assert_eq!(large_object_function(oid), None);
        }
    }
}
