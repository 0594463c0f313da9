//! Deserializing with recovery, so that one run reports every unknown key and wrong type,
//! not only the first: on each serde error the offending key is cut from the parsed tree
//! and the rest deserialized again. Spans stay those of the original text.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::file::FileConfig;
use super::span::{Segment, SpanIndex};

/// A serde error: its message (serde's words), span and key path when known.
pub(super) struct SerdeError {
    pub(super) span: Option<Range<usize>>,
    pub(super) key: Option<String>,
    pub(super) message: String,
}

pub(super) struct Recovered {
    /// What deserialized once the bad keys were cut; `None` if an error could not be
    /// pinned to a key (then there is nothing left to validate).
    pub(super) file: Option<FileConfig>,
    pub(super) errors: Vec<SerdeError>,
    /// The keys cut: validation errors at, inside or above them are follow-ons.
    pub(super) removed: Vec<String>,
}

/// Each round cuts one key, so the tree's size bounds the rounds; this bounds the work on
/// a pathological file (each round deserializes the whole tree).
const MAX_ROUNDS: usize = 200;

pub(super) fn deserialize(tree: &Spanned<DeTable<'_>>, spans: &SpanIndex) -> Recovered {
    let mut tree = tree.clone();
    let mut out = Recovered { file: None, errors: Vec::new(), removed: Vec::new() };
    for _ in 0..MAX_ROUNDS {
        let err = match FileConfig::deserialize(toml::de::Deserializer::from(tree.clone())) {
            Ok(file) => {
                out.file = Some(file);
                return out;
            }
            Err(err) => err,
        };
        let entry = err.span().and_then(|span| spans.entry_at(&span));
        out.errors.push(SerdeError {
            span: err.span(),
            key: entry.map(|e| e.path().to_string()),
            message: err.message().to_string(),
        });
        // An element of an array cannot go without renumbering the ones after it (and
        // misplacing their errors): cut the whole array, the key that holds it.
        let Some(entry) = entry else { return out };
        let segments = entry.segments();
        let Some(end) = segments.iter().rposition(|s| matches!(s, Segment::Key(_))) else { return out };
        if !remove_in_table(tree.get_mut(), &segments[..=end]) {
            return out;
        }
        out.removed.push(strip_indexes(entry.path()).to_string());
    }
    out
}

/// `pool[1].routes[0]` → `pool[1].routes`.
fn strip_indexes(mut path: &str) -> &str {
    while path.ends_with(']') {
        match path.rfind('[') {
            Some(at) => path = &path[..at],
            None => break,
        }
    }
    path
}

fn remove_in_table(table: &mut DeTable<'_>, path: &[Segment]) -> bool {
    match path {
        [Segment::Key(key)] => table.remove(key.as_str()).is_some(),
        [Segment::Key(key), rest @ ..] => {
            table.get_mut(key.as_str()).is_some_and(|value| remove_in_value(value.get_mut(), rest))
        }
        _ => false,
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Segment]) -> bool {
    match (value, path.first()) {
        (DeValue::Table(table), Some(Segment::Key(_))) => remove_in_table(table, path),
        (DeValue::Array(items), Some(Segment::Index(i))) => {
            items.get_mut(*i).is_some_and(|item| remove_in_value(item.get_mut(), &path[1..]))
        }
        _ => false,
    }
}

/// Whether `a` and `b` are the same key or one holds the other (`pool[0]` holds
/// `pool[0].routes[1]`).
pub(super) fn related(a: &str, b: &str) -> bool {
    let holds = |outer: &str, inner: &str| {
        inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    holds(a, b) || holds(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn related_keys() {
        assert!(related("pool[0]", "pool[0].routes[1]"));
        assert!(related("pool[0].routes", "pool[0]"));
        assert!(related("server.bind", "server.bind"));
        assert!(!related("pool[0]", "pool[01]"));
        assert!(!related("server.bind", "server.binds"));
        assert!(!related("pool[0].name", "pool[0].routes"));
    }

    #[test]
    fn strips_indexes() {
        assert_eq!(strip_indexes("pool[1].routes[0]"), "pool[1].routes");
        assert_eq!(strip_indexes("a[0][1]"), "a");
        assert_eq!(strip_indexes("server.bind"), "server.bind");
    }
}
