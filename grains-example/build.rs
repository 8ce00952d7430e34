//! Sets `cfg(granary_mongodb)` when the MongoDB tests should run: `MONGODB_URI` is set,
//! or `CI=true` (where they must run, and so fail without a server). Without it they
//! are `#[ignore]`d, so cargo reports them as ignored instead of passing silently.
//!
//! Sets `cfg(granary_chromium)` likewise for the dashboard's browser test: a `chromium`
//! (or `chromium-browser`) is on `PATH`, or `CI=true` (`.ci/run` installs one).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(granary_mongodb)");
    println!("cargo::rustc-check-cfg=cfg(granary_chromium)");
    println!("cargo::rerun-if-env-changed=MONGODB_URI");
    println!("cargo::rerun-if-env-changed=CI");
    let uri_set = std::env::var("MONGODB_URI").is_ok_and(|v| !v.trim().is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if uri_set || ci {
        println!("cargo::rustc-cfg=granary_mongodb");
    }
    let chromium = chromium();
    if let Some(path) = &chromium {
        // Uninstalling it runs this again. Installing one later does not (nor does a
        // change of PATH, which would rebuild the crate too often): touch this file.
        println!("cargo::rerun-if-changed={}", path.display());
    }
    if chromium.is_some() || ci {
        println!("cargo::rustc-cfg=granary_chromium");
    }
}

/// The first `chromium` or `chromium-browser` on `PATH` (the test looks the same way).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}
