//! Content types by file extension.
//!
//! A fixed table, not a mime.types file: the set of types a static mount serves in
//! practice is small, and a lookup here costs one lowercase compare chain, no IO.

use std::path::Path;

/// Sent when the extension is unknown: browsers then download instead of guessing,
/// which together with `nosniff` keeps an uploaded `.foo` from running as script.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The `content-type` for a file, from its extension (case-insensitive).
pub fn content_type(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return DEFAULT_CONTENT_TYPE;
    };
    // Extensions are short; a stack copy avoids allocating for the lowercase form.
    let mut buf = [0u8; 8];
    if ext.len() > buf.len() {
        return DEFAULT_CONTENT_TYPE;
    }
    let lower = &mut buf[..ext.len()];
    lower.copy_from_slice(ext.as_bytes());
    lower.make_ascii_lowercase();
    match &*lower {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" | b"map" => "application/json; charset=utf-8",
        b"txt" => "text/plain; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"xml" => "application/xml",
        b"svg" => "image/svg+xml; charset=utf-8",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"ico" => "image/x-icon",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        _ => DEFAULT_CONTENT_TYPE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_extensions() {
        let table = [
            ("index.html", "text/html; charset=utf-8"),
            ("a.HTM", "text/html; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("mod.mjs", "text/javascript; charset=utf-8"),
            ("d.json", "application/json; charset=utf-8"),
            ("app.js.map", "application/json; charset=utf-8"),
            ("r.txt", "text/plain; charset=utf-8"),
            ("t.csv", "text/csv; charset=utf-8"),
            ("README.md", "text/markdown; charset=utf-8"),
            ("f.xml", "application/xml"),
            ("i.svg", "image/svg+xml; charset=utf-8"),
            ("i.png", "image/png"),
            ("i.jpg", "image/jpeg"),
            ("i.JPEG", "image/jpeg"),
            ("i.gif", "image/gif"),
            ("i.webp", "image/webp"),
            ("favicon.ico", "image/x-icon"),
            ("m.wasm", "application/wasm"),
            ("doc.pdf", "application/pdf"),
            ("f.woff", "font/woff"),
            ("f.woff2", "font/woff2"),
            ("v.mp4", "video/mp4"),
            ("v.webm", "video/webm"),
        ];
        for (name, want) in table {
            assert_eq!(content_type(Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn unknown_or_missing_extension_is_octet_stream() {
        for name in ["Makefile", "a.exe", "a.verylongextension", "dir/.hidden", "x."] {
            assert_eq!(content_type(Path::new(name)), DEFAULT_CONTENT_TYPE, "{name}");
        }
    }
}
