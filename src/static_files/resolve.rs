//! From a request path to an open file confined to the mount root.
//!
//! Two steps, so that nothing from the client reaches the filesystem unchecked:
//! 1. [`decode_segments`] turns the percent-encoded remainder of the path into plain
//!    names. Every name is a single directory entry: no `/`, no `\`, no NUL, valid UTF-8,
//!    and never starting with `.` (which rules out `.`, `..` and hidden files such as
//!    `.git` or `.env` in one check).
//! 2. [`open_confined`] opens `root/<names>` so that nothing outside the root can be
//!    reached: on Linux ≥ 5.6 with `openat2(RESOLVE_BENEATH)` (the kernel refuses any
//!    escape while resolving), elsewhere by opening and then asking where the open fd
//!    really lives (`/proc/self/fd` readlink, or canonicalize). Either way the check is on
//!    what was opened, so a symlink swapped in between cannot slip through.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a request path cannot be served. [`ResolveError::status`] is the one place that
/// maps these to HTTP.
#[derive(Debug)]
pub enum ResolveError {
    /// `%` not followed by two hex digits.
    BadEscape { segment: String },
    /// Decoded bytes are not UTF-8.
    InvalidUtf8 { segment: String },
    /// `%00` in the path.
    Nul { segment: String },
    /// `%2f` / `%2F` inside a segment: would join two segments after decoding.
    EncodedSlash { segment: String },
    /// `\` raw or as `%5c`: a separator on other systems, never a name here.
    Backslash { segment: String },
    /// `.` or `..`, raw or encoded.
    DotSegment { segment: String },
    /// A name starting with `.` (`.git`, `.env`, `.htpasswd`).
    Hidden { segment: String },
    /// The opened file's real path is outside the root (a symlink leads out).
    OutsideRoot { real: PathBuf },
    /// Nothing there, or not a regular file or directory.
    NotFound { path: PathBuf },
    /// The file exists but the server may not read it.
    PermissionDenied { path: PathBuf },
    /// Any other IO failure (EMFILE, EIO, ...).
    Io { path: PathBuf, source: io::Error },
}

impl ResolveError {
    /// The HTTP status for this refusal.
    ///
    /// - 400: the path is malformed (bad escape, NUL, not UTF-8).
    /// - 404: well-formed but not servable: dot segments, hidden files, encoded slashes,
    ///   backslashes, symlinks out of the root. 404 rather than 403, so a probe learns
    ///   nothing about what exists.
    /// - 403: an existing file the server cannot read (as nginx).
    /// - 500: other IO errors.
    pub fn status(&self) -> u16 {
        match self {
            ResolveError::BadEscape { .. } | ResolveError::InvalidUtf8 { .. } | ResolveError::Nul { .. } => 400,
            ResolveError::EncodedSlash { .. }
            | ResolveError::Backslash { .. }
            | ResolveError::DotSegment { .. }
            | ResolveError::Hidden { .. }
            | ResolveError::OutsideRoot { .. }
            | ResolveError::NotFound { .. } => 404,
            ResolveError::PermissionDenied { .. } => 403,
            ResolveError::Io { .. } => 500,
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::BadEscape { segment } => write!(f, "malformed percent escape in {segment:?}"),
            ResolveError::InvalidUtf8 { segment } => write!(f, "path segment {segment:?} is not utf-8"),
            ResolveError::Nul { segment } => write!(f, "nul byte in path segment {segment:?}"),
            ResolveError::EncodedSlash { segment } => write!(f, "encoded slash in path segment {segment:?}"),
            ResolveError::Backslash { segment } => write!(f, "backslash in path segment {segment:?}"),
            ResolveError::DotSegment { segment } => write!(f, "dot segment {segment:?} refused"),
            ResolveError::Hidden { segment } => write!(f, "hidden name {segment:?} refused"),
            ResolveError::OutsideRoot { real } => write!(f, "{} resolves outside the mount root", real.display()),
            ResolveError::NotFound { path } => write!(f, "{} not found", path.display()),
            ResolveError::PermissionDenied { path } => write!(f, "permission denied on {}", path.display()),
            ResolveError::Io { path, source } => write!(f, "could not open {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The decoded remainder of a request path below a mount prefix.
#[derive(Debug, PartialEq, Eq)]
pub struct Segments {
    /// Plain names, empty segments (`//`) dropped.
    pub names: Vec<String>,
    /// The raw (still percent-encoded) non-empty segments, for building redirects.
    pub raw: Vec<String>,
    /// The path ended with `/` (or was empty): the client asked for a directory.
    pub trailing_slash: bool,
}

/// Decodes and validates the path below the mount prefix (see the module doc for rules).
pub fn decode_segments(rest: &str) -> Result<Segments, ResolveError> {
    let mut names = Vec::new();
    let mut raw = Vec::new();
    for seg in rest.split('/') {
        if seg.is_empty() {
            continue;
        }
        names.push(decode_segment(seg)?);
        raw.push(seg.to_owned());
    }
    Ok(Segments { names, raw, trailing_slash: rest.is_empty() || rest.ends_with('/') })
}

fn decode_segment(seg: &str) -> Result<String, ResolveError> {
    let owned = || seg.to_owned();
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| crate::http::hex_digit(*c));
            let lo = bytes.get(i + 2).and_then(|c| crate::http::hex_digit(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(ResolveError::BadEscape { segment: owned() });
            };
            i += 3;
            let b = (hi << 4) | lo;
            if b == b'/' {
                return Err(ResolveError::EncodedSlash { segment: owned() });
            }
            b
        } else {
            i += 1;
            bytes[i - 1]
        };
        match b {
            0 => return Err(ResolveError::Nul { segment: owned() }),
            b'\\' => return Err(ResolveError::Backslash { segment: owned() }),
            _ => out.push(b),
        }
    }
    let name = String::from_utf8(out).map_err(|_| ResolveError::InvalidUtf8 { segment: owned() })?;
    if name == "." || name == ".." {
        return Err(ResolveError::DotSegment { segment: owned() });
    }
    if name.starts_with('.') {
        return Err(ResolveError::Hidden { segment: owned() });
    }
    Ok(name)
}

/// Joins decoded names under `root`. Names are plain entries (checked by
/// [`decode_segments`]), so the result cannot climb out lexically.
pub fn join(root: &Path, names: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    for n in names {
        p.push(OsStr::from_bytes(n.as_bytes()));
    }
    p
}

/// An opened file or directory inside the root, with its one `fstat`.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
    pub path: PathBuf,
}

/// Opens `path` read-only and refuses it unless its real location is under `root`
/// (`root` must be canonical) and it is a regular file or a directory.
pub fn open_confined(root: &Path, path: PathBuf) -> Result<Opened, ResolveError> {
    #[cfg(target_os = "linux")]
    let file = match beneath::open(root, &path) {
        Some(Ok(file)) => file,
        // EXDEV: resolution met a symlink that is absolute or climbs out. An absolute one
        // may still point inside the root (`current -> /srv/www/releases/7`): decide on
        // where the file really is.
        Some(Err(e)) if e.raw_os_error() == Some(libc::EXDEV) => open_then_check(root, &path)?,
        Some(Err(e)) => return Err(io_error(path, e)),
        None => open_then_check(root, &path)?,
    };
    #[cfg(not(target_os = "linux"))]
    let file = open_then_check(root, &path)?;

    let meta = file.metadata().map_err(|e| io_error(path.clone(), e))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(ResolveError::NotFound { path });
    }
    Ok(Opened { file, meta, path })
}

/// O_NONBLOCK: a FIFO planted in the root must not block the dispatcher's loop in
/// open(2). It changes nothing for regular files, whose reads never block anyway.
const OPEN_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Portable confinement: open, then check where the opened file really is.
fn open_then_check(root: &Path, path: &Path) -> Result<File, ResolveError> {
    #[cfg(not(target_os = "linux"))]
    check_inside(root, &std::fs::canonicalize(path).map_err(|e| io_error(path.to_path_buf(), e))?)?;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS & !(libc::O_RDONLY | libc::O_CLOEXEC))
        .open(path)
        .map_err(|e| io_error(path.to_path_buf(), e))?;

    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            Ok(real) => check_inside(root, &real)?,
            // No /proc (unusual chroot): fall back to resolving the path again.
            Err(_) => check_inside(root, &std::fs::canonicalize(path).map_err(|e| io_error(path.to_path_buf(), e))?)?,
        }
    }
    Ok(file)
}

/// Linux ≥ 5.6: `openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` makes the
/// kernel refuse any resolution that leaves the root (`..`, absolute or escaping
/// symlinks) in the same call that opens the file: one syscall instead of open + readlink,
/// and no window between check and open.
#[cfg(target_os = "linux")]
mod beneath {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set once the kernel said ENOSYS (or a seccomp filter refuses the call).
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    thread_local! {
        /// Mount roots opened as O_PATH directories, one per root and event loop (each
        /// loop is a thread with its own table, closed when the loop ends; tests get one
        /// table per thread).
        static ROOTS: RefCell<HashMap<PathBuf, OwnedFd>> = RefCell::new(HashMap::new());
    }

    /// `None`: openat2 is not available here; use the portable path.
    pub fn open(root: &Path, path: &Path) -> Option<io::Result<File>> {
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return None;
        }
        let rel = path.strip_prefix(root).ok()?;
        let rel = if rel.as_os_str().is_empty() { CString::new(".") } else { CString::new(rel.as_os_str().as_bytes()) };
        let rel = rel.ok()?;
        let root_fd = ROOTS.with(|roots| {
            let mut roots = roots.borrow_mut();
            if let Some(fd) = roots.get(root) {
                return Ok(std::os::fd::AsRawFd::as_raw_fd(fd));
            }
            let c =
                CString::new(root.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: plain open(2) of a NUL-terminated path; the fd is owned below.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd was just returned by open(2) and is owned by nobody else.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let raw = std::os::fd::AsRawFd::as_raw_fd(&owned);
            roots.insert(root.to_path_buf(), owned);
            Ok(raw)
        });
        let root_fd = match root_fd {
            Ok(fd) => fd,
            Err(e) => return Some(Err(e)),
        };
        // SAFETY: open_how is plain data; zeroed is a valid value for every field.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = super::OPEN_FLAGS as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 with a live dirfd, a NUL-terminated path and a properly sized
        // open_how; the returned fd is owned by the File below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root_fd,
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                return None;
            }
            return Some(Err(e));
        }
        // SAFETY: fd is a fresh descriptor from openat2.
        Some(Ok(unsafe { File::from_raw_fd(fd as libc::c_int) }))
    }
}

fn check_inside(root: &Path, real: &Path) -> Result<(), ResolveError> {
    // Path::starts_with compares whole components: /srv/www2 is not under /srv/www.
    if real.starts_with(root) { Ok(()) } else { Err(ResolveError::OutsideRoot { real: real.to_path_buf() }) }
}

fn io_error(path: PathBuf, e: io::Error) -> ResolveError {
    match e.kind() {
        io::ErrorKind::NotFound => ResolveError::NotFound { path },
        io::ErrorKind::PermissionDenied => ResolveError::PermissionDenied { path },
        _ => match e.raw_os_error() {
            // A file used as a directory, a symlink loop, an over-long name: nothing to serve.
            Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ENAMETOOLONG) => ResolveError::NotFound { path },
            _ => ResolveError::Io { path, source: e },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(rest: &str) -> Option<u16> {
        decode_segments(rest).err().map(|e| e.status())
    }

    #[test]
    fn decodes_plain_and_encoded_names() {
        let s = decode_segments("a%20b//c/d%C3%A9.txt").unwrap();
        assert_eq!(s.names, ["a b", "c", "dé.txt"]);
        assert_eq!(s.raw, ["a%20b", "c", "d%C3%A9.txt"]);
        assert!(!s.trailing_slash);
        assert!(decode_segments("").unwrap().trailing_slash);
        assert!(decode_segments("dir/").unwrap().trailing_slash);
    }

    #[test]
    fn refusals_and_their_status() {
        let table: &[(&str, u16)] = &[
            ("..", 404),
            ("a/../b", 404),
            ("%2e%2e/x", 404),
            ("%2E%2E/x", 404),
            (".%2e/x", 404),
            ("%2e./x", 404),
            ("./x", 404),
            ("%2e", 404),
            (".git/config", 404),
            (".env", 404),
            ("%2egit", 404),
            ("a%2fb", 404),
            ("a%2Fb", 404),
            ("..%2f..%2fetc%2fpasswd", 404),
            ("a%5cb", 404),
            ("a%5Cb", 404),
            ("a\\b", 404),
            ("..\\x", 404),
            ("a%00b", 400),
            ("a%", 400),
            ("a%4", 400),
            ("a%zz", 400),
            ("a%G0", 400),
            ("%ff%fe", 400),
            ("%c3", 400),
        ];
        for (rest, want) in table {
            assert_eq!(status_of(rest), Some(*want), "{rest}");
        }
        // A dot inside a name is fine.
        assert_eq!(status_of("a.b/c..d/e."), None);
    }
}
