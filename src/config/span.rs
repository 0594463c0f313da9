//! Key paths ⇄ spans: maps a serde error's byte offset to a dotted key path
//! (`pool[1].routes[0]`) and a validation error's key path back to a position.

use std::ops::Range;

/// Every key and array element of the document with its dotted path (`pool[1].routes[0]`),
/// key span and value span.
pub(super) struct SpanIndex {
    entries: Vec<SpanEntry>,
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

pub(super) struct SpanEntry {
    path: String,
    segments: Vec<Segment>,
    key: Range<usize>,
    value: Range<usize>,
}

impl SpanEntry {
    /// The dotted path, as validation errors name keys.
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// The same path, step by step.
    pub(super) fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

impl SpanIndex {
    pub(super) fn build(root: &toml::de::DeTable<'_>) -> SpanIndex {
        let mut index = SpanIndex { entries: Vec::new() };
        index.add_table("", &[], root);
        index
    }

    fn add_table(&mut self, prefix: &str, segments: &[Segment], table: &toml::de::DeTable<'_>) {
        for (key, value) in table.iter() {
            let name = key.get_ref();
            let segment = if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                name.to_string()
            } else {
                format!("{name:?}")
            };
            let path = if prefix.is_empty() { segment } else { format!("{prefix}.{segment}") };
            let segments = [segments, &[Segment::Key(name.to_string())]].concat();
            self.entries.push(SpanEntry {
                path: path.clone(),
                segments: segments.clone(),
                key: key.span(),
                value: value.span(),
            });
            self.add_value(&path, &segments, value);
        }
    }

    fn add_value(&mut self, path: &str, segments: &[Segment], value: &toml::Spanned<toml::de::DeValue<'_>>) {
        match value.get_ref() {
            toml::de::DeValue::Table(table) => self.add_table(path, segments, table),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    let item_segments = [segments, &[Segment::Index(i)]].concat();
                    self.entries.push(SpanEntry {
                        path: item_path.clone(),
                        segments: item_segments.clone(),
                        key: item.span(),
                        value: item.span(),
                    });
                    self.add_value(&item_path, &item_segments, item);
                }
            }
            _ => {}
        }
    }

    /// The innermost key or value whose span contains `span.start`.
    pub(super) fn entry_at(&self, span: &Range<usize>) -> Option<&SpanEntry> {
        let at = span.start;
        let contains = |r: &Range<usize>| r.start <= at && (at < r.end || (r.is_empty() && at == r.start));
        self.entries
            .iter()
            .filter_map(|e| {
                let hit = [&e.key, &e.value].into_iter().filter(|r| contains(r)).map(|r| r.len()).min()?;
                Some((hit, e))
            })
            // Smallest span wins; on a tie the deeper path is the more precise.
            .min_by(|(a, ea), (b, eb)| a.cmp(b).then(eb.path.len().cmp(&ea.path.len())))
            .map(|(_, e)| e)
    }

    /// The value span of `path`, or of its nearest existing ancestor (for a missing key).
    pub(super) fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut path = path;
        loop {
            if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
                return Some(entry.value.clone());
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}
