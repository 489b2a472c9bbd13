//! Where a key is in a TOML file, for errors about values that parse but are not valid (a
//! password that is not a vault reference, a pool of size 0): `tollgate check` names file, line
//! and column for those too.

use toml_edit::{Item, TableLike};

/// The byte offset of the deepest key of `path` (tables, then a key; a number picks a table of
/// an array of tables, `[[agent]]`) found in `text`: the key itself when present, else the
/// deepest table that is (a default that does not fit is reported at its table). `None` when
/// the text does not parse or not even the first is there.
pub fn locate_key(text: &str, path: &[&str]) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    in_table(doc.as_table(), path, None)
}

fn in_table(table: &dyn TableLike, path: &[&str], found: Option<usize>) -> Option<usize> {
    let Some((part, rest)) = path.split_first() else {
        return found;
    };
    let Some((key, item)) = table.get_key_value(part) else {
        return found;
    };
    let found = key.span().map(|s| s.start).or(found);
    match (item, rest.split_first()) {
        (Item::ArrayOfTables(tables), Some((index, rest))) => {
            let Some(t) = index.parse().ok().and_then(|i: usize| tables.get(i)) else {
                return found;
            };
            in_table(t, rest, t.span().map(|s| s.start).or(found))
        }
        (item, _) => match item.as_table_like() {
            Some(t) => in_table(t, rest, found),
            None => found,
        },
    }
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
