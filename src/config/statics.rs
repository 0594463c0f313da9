//! Validation of `[[static]]` mounts.

use std::path::Path;

use super::file::FileStatic;
use super::validate::*;
use super::*;

pub(super) fn validate_static(raw: FileStatic, key: &str, base_dir: &Path) -> Check<StaticMount> {
    let mut prefix = raw.prefix.trim().to_string();
    if !prefix.starts_with('/') {
        prefix.insert(0, '/');
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    check_url_path(&prefix, &format!("{key}.prefix"))?;
    let path_key = format!("{key}.path");
    let dir = base_dir.join(&raw.path);
    let root = dir
        .canonicalize()
        .map_err(|err| invalid(&path_key, format!("static directory {} does not exist: {err}", dir.display())))?;
    if !root.is_dir() {
        return Err(invalid(path_key, format!("expected a directory, {} is not one", root.display())));
    }
    let index = raw.index.unwrap_or_else(|| DEFAULT_STATIC_INDEX.to_string());
    if index.is_empty() || index.contains('/') || index == "." || index == ".." {
        return Err(invalid(format!("{key}.index"), format!("expected a plain file name, got {index:?}")));
    }
    Ok(StaticMount {
        prefix,
        root,
        headers: validate_headers(raw.headers, &format!("{key}.headers"))?,
        authoritative: raw.authoritative,
        index,
    })
}
