//! Snapshots of `silo --help` and `client --help`: the flags are the first thing a new
//! user reads, so a change to them shows up in review as a change to these files.
//!
//! After changing a flag on purpose, refresh the snapshots with
//! `GRANARY_BLESS=1 cargo test -p granary-example --test cli_help`.

use std::path::PathBuf;
use std::process::Command;

/// `BIN --help`, with every `GRANARY_*` variable cleared (clap shows their values).
fn help(bin: &str) -> String {
    let mut command = Command::new(bin);
    command.arg("--help");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("GRANARY_") {
            command.env_remove(var);
        }
    }
    let out = command.output().expect("the binary runs");
    assert!(out.status.success(), "{bin} --help failed: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("GRANARY_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with GRANARY_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "`{name}` changed; if on purpose, run with GRANARY_BLESS=1 and commit {}",
        path.display()
    );
}

#[test]
fn silo_help_is_unchanged() {
    let text = help(env!("CARGO_BIN_EXE_silo"));
    for flag in [
        "--role",
        "--listen",
        "--master",
        "--cluster-key",
        "--log-format",
    ] {
        assert!(text.contains(flag), "{flag} missing from silo --help");
    }
    check("silo-help", &text);
}

#[test]
fn client_help_is_unchanged() {
    let text = help(env!("CARGO_BIN_EXE_client"));
    for flag in [
        "--gateway",
        "--timeout",
        "--connect-timeout",
        "--cluster-key",
    ] {
        assert!(text.contains(flag), "{flag} missing from client --help");
    }
    check("client-help", &text);
}
