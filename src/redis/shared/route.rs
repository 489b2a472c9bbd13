//! Which commands may run on a shared upstream connection: those whose effect and reply depend
//! only on the keys they name and the server, never on the connection they arrive on. Decided
//! from the upstream's own command table, so a new Redis command is routed by its flags; when
//! in doubt a command is not sharable, and its session gets a connection of its own (which
//! always works, and only costs a connection).

use bytes::Bytes;

use crate::policy::redis::{CommandTable, Looked};

/// Keyless commands that touch no connection state.
const KEYLESS: &[&[u8]] = &[b"ping", b"echo"];

/// Flags of commands that block, subscribe, run scripts or transactions (`noscript` marks
/// MULTI, WATCH, EVAL, FCALL and their kin), or administer the server: never shared.
const EXCLUDED_FLAGS: &[&str] = &["blocking", "pubsub", "noscript", "admin", "no_multi"];

/// Keyed commands that hold the connection for long or carry another server's login.
const EXCLUDED: &[&[u8]] = &[b"migrate", b"restore-asking"];

/// An argument longer than this is sent on a connection of the session's own: a server
/// configured with a low `proto-max-bulk-len` or `client-query-buffer-limit` drops the
/// connection that carries it, which on a shared one would end every session on it.
pub const MAX_SHARED_ARG: usize = 512 * 1024;

/// Whether `args` may run on a shared connection.
pub fn sharable(table: &CommandTable, args: &[Bytes]) -> bool {
    sharable_looked_up(table.lookup(args), args)
}

/// [`sharable`] for a command already looked up in the command table.
pub fn sharable_looked_up(looked: Looked<'_>, args: &[Bytes]) -> bool {
    let Ok(info) = looked else {
        return false;
    };
    if args.iter().any(|a| a.len() > MAX_SHARED_ARG) {
        return false;
    }
    // The table's names are lower case.
    let name = info.name.as_bytes();
    if KEYLESS.contains(&name) {
        return true;
    }
    if EXCLUDED.contains(&name) {
        return false;
    }
    !info.key_specs.is_empty()
        && !info
            .flags
            .iter()
            .any(|f| EXCLUDED_FLAGS.contains(&f.as_str()))
}
