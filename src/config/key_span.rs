//! Where a key is in a TOML file, for errors about values that parse but are not valid (a
//! password that is not a vault reference, a pool of size 0): `tollgate check` names file, line
//! and column for those too.

/// The byte offset of the deepest key of `path` (tables, then a key) found in `text`: the key
/// itself when present, else the deepest table that is (a default that does not fit is
/// reported at its table). `None` when the text does not parse or not even the first is there.
pub fn locate_key(text: &str, path: &[&str]) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut found = None;
    for part in path {
        let Some((key, next)) = item.as_table_like().and_then(|t| t.get_key_value(part)) else {
            break;
        };
        found = key.span().map(|s| s.start).or(found);
        item = next;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::locate_key;

    #[test]
    fn finds_keys_in_headers_dotted_keys_and_inline_tables() {
        let text = "[listen]\npostgres = \"x\"\n\n[upstream.shop]\nkind = \"postgres\"\npool_size = 0\n[limits]\nmax_rows = 3\n";
        let at = |p: &[&str]| locate_key(text, p).map(|o| &text[o..o + 4]);
        assert_eq!(at(&["upstream", "shop", "pool_size"]), Some("pool"));
        assert_eq!(
            at(&["upstream", "shop", "min_idle"]),
            Some("shop"),
            "absent: its table"
        );
        assert_eq!(at(&["limits", "max_rows"]), Some("max_"));
        assert_eq!(at(&["runtime", "worker_threads"]), None);
        let dotted = "upstream.shop.pool_size = 0\n";
        assert_eq!(
            locate_key(dotted, &["upstream", "shop", "pool_size"]),
            Some(14)
        );
    }
}
