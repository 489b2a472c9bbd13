//! The upstream's own command table (`COMMAND` reply): arity, flags, ACL categories and key
//! specs of every command and subcommand, modules included. Learned once per upstream at start.

use crate::policy::fixed_map::FixedMap;

use redis_protocol::resp2::types::BytesFrame as Frame;

/// The ACL categories Redis knows, in a fixed order (bit positions of [`Categories`]).
pub const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Categories(pub u32);

impl Categories {
    /// The bit of a category known at compile time (`ADMIN`, `DANGEROUS`: no search per command).
    pub const fn known(name: &str) -> u32 {
        let mut i = 0;
        while i < CATEGORIES.len() {
            let c = CATEGORIES[i].as_bytes();
            let n = name.as_bytes();
            if c.len() == n.len() {
                let mut j = 0;
                while j < c.len() && c[j] == n[j] {
                    j += 1;
                }
                if j == c.len() {
                    return 1 << i;
                }
            }
            i += 1;
        }
        panic!("not a Redis ACL category")
    }

    pub const ADMIN: u32 = Categories::known("admin");
    pub const DANGEROUS: u32 = Categories::known("dangerous");
    /// Redis puts every command with the `blocking` flag in `@blocking` (all of 7.0's table).
    pub const BLOCKING: u32 = Categories::known("blocking");

    pub fn bit(name: &str) -> Option<u32> {
        let name = name.strip_prefix('@').unwrap_or(name);
        CATEGORIES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .map(|i| 1 << i)
    }
    pub fn contains(self, name: &str) -> bool {
        Self::bit(name).is_some_and(|b| self.0 & b != 0)
    }
    pub fn intersects(self, mask: u32) -> bool {
        self.0 & mask != 0
    }
}

/// What a key spec says a command does with the keys it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyAccess {
    /// Reads the value (RO, RW).
    pub read: bool,
    /// Changes, overwrites or deletes the value (RW, OW, RM).
    pub write: bool,
    /// Returns or copies the value's data (`access` flag): what masking cares about.
    pub exposes: bool,
    /// The spec may miss keys (Redis marks it `incomplete`).
    pub incomplete: bool,
    /// Not a key but a shard channel name (SPUBLISH, SSUBSCRIBE).
    pub not_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    Index(i64),
    /// Lower-case keyword; `startfrom` < 0 searches backwards from the end.
    Keyword {
        keyword: Vec<u8>,
        startfrom: i64,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    Range {
        lastkey: i64,
        keystep: i64,
        limit: i64,
    },
    Keynum {
        keynumidx: i64,
        firstkey: i64,
        keystep: i64,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub access: KeyAccess,
    pub begin: BeginSearch,
    pub find: FindKeys,
}

#[derive(Debug, Clone, Default)]
pub struct CommandInfo {
    /// Lower case; `parent|sub` for subcommands.
    pub name: String,
    pub arity: i64,
    pub flags: Vec<String>,
    pub categories: Categories,
    pub key_specs: Vec<KeySpec>,
    pub subcommands: FixedMap<Vec<u8>, CommandInfo>,
    /// The built-in lists' verdicts on this command, filled on first use (from `name` and
    /// `categories`, which never change once the entry is built).
    pub(super) builtin: std::sync::OnceLock<super::builtin::Facts>,
}

impl CommandInfo {
    /// What the built-in lists say about this command (`builtin::Facts`).
    pub fn builtin(&self) -> &super::builtin::Facts {
        self.builtin
            .get_or_init(|| super::builtin::Facts::of(&self.name, self.categories))
    }
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    /// Arity as Redis checks it: exact when positive, a minimum when negative.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }
}

/// What [`CommandTable::lookup`] found: the entry, or `Err(true)` for an unknown subcommand and
/// `Err(false)` for an unknown command.
pub type Looked<'a> = Result<&'a CommandInfo, bool>;

#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    commands: FixedMap<Vec<u8>, CommandInfo>,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected COMMAND reply: {0}")]
pub struct TableError(pub String);

/// `name` lower-cased into `buf` when it fits (command names are short); `None` otherwise.
pub fn lower<'a>(name: &[u8], buf: &'a mut [u8; 64]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

impl CommandTable {
    pub fn len(&self) -> usize {
        self.commands.len()
    }
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The command (or subcommand, when it has them and the first argument names one).
    /// `Err(true)`: unknown subcommand; `Err(false)`: unknown command.
    pub fn lookup(&self, args: &[bytes::Bytes]) -> Looked<'_> {
        let mut buf = [0u8; 64];
        let name = args.first().and_then(|n| lower(n, &mut buf)).ok_or(false)?;
        let cmd = self.commands.get(name).ok_or(false)?;
        if cmd.subcommands.is_empty() || args.len() < 2 {
            return Ok(cmd);
        }
        let mut sbuf = [0u8; 64];
        let sub = lower(&args[1], &mut sbuf).ok_or(true)?;
        let mut full = Vec::with_capacity(name.len() + 1 + sub.len());
        full.extend_from_slice(name);
        full.push(b'|');
        full.extend_from_slice(sub);
        cmd.subcommands.get(&full).ok_or(true)
    }

    pub fn get(&self, name: &str) -> Option<&CommandInfo> {
        let lower = name.to_ascii_lowercase();
        match lower.split_once('|') {
            Some((p, _)) => self
                .commands
                .get(p.as_bytes())?
                .subcommands
                .get(lower.as_bytes()),
            None => self.commands.get(lower.as_bytes()),
        }
    }

    /// Every command and subcommand name (for validating policy files).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.commands.values().flat_map(|c| {
            std::iter::once(c.name.as_str()).chain(c.subcommands.values().map(|s| s.name.as_str()))
        })
    }

    /// Builds the table from the upstream's `COMMAND` reply (RESP2).
    pub fn from_reply(reply: &Frame) -> Result<CommandTable, TableError> {
        let Frame::Array(items) = reply else {
            return Err(TableError("not an array".into()));
        };
        let mut commands = FixedMap::with_capacity_and_hasher(items.len(), Default::default());
        for item in items {
            let info = parse_info(item)?;
            commands.insert(info.name.clone().into_bytes(), info);
        }
        Ok(CommandTable { commands })
    }
}

fn text(f: &Frame) -> Option<String> {
    match f {
        Frame::SimpleString(b) | Frame::BulkString(b) => {
            Some(String::from_utf8_lossy(b).to_ascii_lowercase())
        }
        _ => None,
    }
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        _ => text(f)?.parse().ok(),
    }
}

fn array(f: &Frame) -> &[Frame] {
    match f {
        Frame::Array(a) => a,
        _ => &[],
    }
}

/// A RESP2 flat map (`[k1, v1, k2, v2, ...]`) looked up by key.
fn field<'a>(map: &'a [Frame], key: &str) -> Option<&'a Frame> {
    map.chunks(2)
        .find(|kv| text(&kv[0]).as_deref() == Some(key))
        .and_then(|kv| kv.get(1))
}

fn parse_info(item: &Frame) -> Result<CommandInfo, TableError> {
    let a = array(item);
    let bad = |what: &str| TableError(format!("command entry without {what}"));
    let name = a.first().and_then(text).ok_or_else(|| bad("a name"))?;
    let arity = a.get(1).and_then(int).ok_or_else(|| bad("an arity"))?;
    let flags = a
        .get(2)
        .map(|f| array(f).iter().filter_map(text).collect())
        .unwrap_or_default();
    let mut categories = Categories::default();
    let no: &[Frame] = &[];
    for c in a.get(6).map(array).unwrap_or(no).iter().filter_map(text) {
        if let Some(b) = Categories::bit(&c) {
            categories.0 |= b;
        }
    }
    let key_specs = a
        .get(8)
        .map(|f| array(f).iter().map(parse_spec).collect())
        .unwrap_or_default();
    let mut subcommands = FixedMap::default();
    for sub in a.get(9).map(array).unwrap_or(no) {
        let info = parse_info(sub)?;
        subcommands.insert(info.name.clone().into_bytes(), info);
    }
    Ok(CommandInfo {
        name,
        arity,
        flags,
        categories,
        key_specs,
        subcommands,
        builtin: Default::default(),
    })
}

fn parse_spec(f: &Frame) -> KeySpec {
    let map = array(f);
    let mut access = KeyAccess::default();
    let no: &[Frame] = &[];
    for flag in field(map, "flags")
        .map(array)
        .unwrap_or(no)
        .iter()
        .filter_map(text)
    {
        match flag.as_str() {
            "ro" => access.read = true,
            "rw" => {
                access.read = true;
                access.write = true
            }
            "ow" | "rm" => access.write = true,
            "access" => access.exposes = true,
            "incomplete" => access.incomplete = true,
            "not_key" => access.not_key = true,
            _ => {}
        }
    }
    let begin = field(map, "begin_search").map(array).unwrap_or(no);
    let bspec = field(begin, "spec").map(array).unwrap_or(no);
    let begin = match field(begin, "type").and_then(text).as_deref() {
        Some("index") => match field(bspec, "index").and_then(int) {
            Some(i) => BeginSearch::Index(i),
            None => BeginSearch::Unknown,
        },
        Some("keyword") => match (
            field(bspec, "keyword").and_then(text),
            field(bspec, "startfrom").and_then(int),
        ) {
            (Some(k), Some(s)) => BeginSearch::Keyword {
                keyword: k.into_bytes(),
                startfrom: s,
            },
            _ => BeginSearch::Unknown,
        },
        _ => BeginSearch::Unknown,
    };
    let find = field(map, "find_keys").map(array).unwrap_or(no);
    let fspec = field(find, "spec").map(array).unwrap_or(no);
    let get = |k: &str| field(fspec, k).and_then(int);
    let find = match field(find, "type").and_then(text).as_deref() {
        Some("range") => match (get("lastkey"), get("keystep"), get("limit")) {
            (Some(lastkey), Some(keystep), Some(limit)) => FindKeys::Range {
                lastkey,
                keystep,
                limit,
            },
            _ => FindKeys::Unknown,
        },
        Some("keynum") => match (get("keynumidx"), get("firstkey"), get("keystep")) {
            (Some(keynumidx), Some(firstkey), Some(keystep)) => FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            },
            _ => FindKeys::Unknown,
        },
        _ => FindKeys::Unknown,
    };
    KeySpec {
        access,
        begin,
        find,
    }
}
