//! Validation of `[[static]]` mounts.

use std::path::Path;

use super::file::FileStatic;
use super::validate::*;
use super::*;

/// The mount, or `None` without a usable prefix; errors go to `errs`.
pub(super) fn validate_static(raw: FileStatic, key: &str, base_dir: &Path, errs: &mut Problems) -> Option<StaticMount> {
    let prefix = match raw.prefix {
        Some(prefix) => {
            let mut prefix = prefix.trim().to_string();
            if !prefix.starts_with('/') {
                prefix.insert(0, '/');
            }
            if !prefix.ends_with('/') {
                prefix.push('/');
            }
            errs.ok(check_url_path(&prefix, &format!("{key}.prefix"))).map(|()| prefix)
        }
        None => {
            errs.push(invalid(format!("{key}.prefix"), MISSING));
            None
        }
    };
    let path_key = format!("{key}.path");
    let root = match raw.path {
        Some(path) => {
            let dir = base_dir.join(&path);
            match dir.canonicalize() {
                Ok(root) if root.is_dir() => root,
                Ok(root) => {
                    errs.push(invalid(path_key, format!("expected a directory, {} is not one", root.display())));
                    root
                }
                Err(err) => {
                    errs.push(invalid(path_key, format!("static directory {} does not exist: {err}", dir.display())));
                    dir
                }
            }
        }
        None => {
            errs.push(invalid(path_key, MISSING));
            base_dir.to_path_buf()
        }
    };
    let index = raw.index.unwrap_or_else(|| DEFAULT_STATIC_INDEX.to_string());
    if index.is_empty() || index.contains('/') || index == "." || index == ".." {
        errs.push(invalid(format!("{key}.index"), format!("expected a plain file name, got {index:?}")));
    }
    let headers = validate_headers(raw.headers, &format!("{key}.headers"), errs);
    Some(StaticMount { prefix: prefix?, root, headers, authoritative: raw.authoritative, index })
}
