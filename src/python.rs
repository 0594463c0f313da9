//! Finding the bundled Python shim (`workers/rustworkers`) so Python pools run without
//! installing it.

use std::path::PathBuf;

/// The directory to put on PYTHONPATH so `import rustworkers` finds the shim, searched in
/// order: `RUSTWORKERS_SHIM_DIR`; a `workers/` folder beside the executable or up to four
/// levels above it (a checkout's `target/release/rustworkers`); the source tree this
/// binary was built from. `None` when none holds the shim (a `pip install .`-ed shim is
/// then found by Python itself).
pub fn shim_dir() -> Option<PathBuf> {
    let has_shim = |dir: &PathBuf| dir.join("rustworkers").join("__init__.py").is_file();
    if let Some(dir) = std::env::var_os("RUSTWORKERS_SHIM_DIR").map(PathBuf::from)
        && has_shim(&dir)
    {
        return Some(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(PathBuf::from);
        for _ in 0..5 {
            let Some(d) = dir else { break };
            let candidate = d.join("workers");
            if has_shim(&candidate) {
                return Some(candidate);
            }
            dir = d.parent().map(PathBuf::from);
        }
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workers");
    has_shim(&built).then_some(built)
}
