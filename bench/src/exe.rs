//! The benchmark's own binaries, found next to the running one: a benchmark that needs
//! another (the `silo` it starts as child processes, or `all` running every benchmark)
//! builds it first with the same profile and target directory, so one command works
//! from a clean checkout and never runs a stale binary.
//!
//! With `GRANARY_BENCH_PREBUILT=1` nothing is built: the siblings are used as they are
//! (for A/B runs of copies of the binaries built from two commits).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The path of the benchmark binary `name`, built (a no-op when up to date) with the
/// profile and target directory of the running executable.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the running benchmark")?;
    let dir = me.parent().context("the benchmark has no directory")?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if std::env::var_os("GRANARY_BENCH_PREBUILT").is_some() {
        if !path.is_file() {
            bail!(
                "GRANARY_BENCH_PREBUILT is set, but {} does not exist",
                path.display()
            );
        }
        return Ok(path);
    }
    // <target>/<profile>/<exe>: build into the same <target> with the same profile.
    let target = dir
        .parent()
        .context("the benchmark is not in a target directory")?;
    let release = !cfg!(debug_assertions);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .args(["--bin", name])
        .env("CARGO_TARGET_DIR", target);
    if release {
        build.arg("--release");
    }
    eprintln!(
        "building bench binary `{name}` ({} profile, in {})",
        if release { "release" } else { "dev" },
        target.display()
    );
    let status = build.status().context("running cargo")?;
    if !status.success() {
        bail!("building `{name}` failed ({status})");
    }
    if !path.is_file() {
        bail!("built, but {} does not exist", path.display());
    }
    Ok(path)
}

/// A benchmark's exit: success, or the error (with its causes) on stderr and a failure
/// code.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
