//! The README's `## Your own grain crate, silo and client`, done as a newcomer would: its
//! `<!-- file: PATH -->` blocks are written into a fresh `my-app/` directory, built with
//! cargo (offline, into this workspace's target directory so the compiled dependencies
//! are reused), and its `sh` block is run with free ports: the user's silo as a master
//! and as a slave, then the user's client, which must print what the README says.
//! The convention is stated in the HTML comment above that block; [`Section::parse`]
//! refuses any line it does not understand, so the README cannot drift from this test.
//!
//! It also checks the section's claim that a silo without the grain crate answers
//! `UnknownGrainType` with the fix: the user's client against a cluster of this
//! package's `silo` binary (which hosts only the example grains). Helpers: [`support`].

mod support;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use support::{
    bounded, flag, fresh_ports, run_bin, substitute, tail, Output, Procs, FLAG_VARS, START,
};
use tokio::time::Instant;

const README: &str = include_str!("../../README.md");
const SECTION: &str = "\n## Your own grain crate, silo and client\n";
/// How the README's manifests reach the Granary checkout (`granary/` next to `my-app/`).
const CHECKOUT: &str = "\"../../granary/";
/// What the README's `cp` line copies; this test copies this workspace's lock file.
const COPY_LOCK: &str = "cp ../granary/Cargo.lock .";
/// The user's workspace members, which `cargo build` must produce.
const SILO_PKG: &str = "my-silo";
const CLIENT_PKG: &str = "my-client";
/// The grain type of `my-grains`, as the README's `lib.rs` names it.
const TALLY: &str = "readme.tally/v1";
/// Time allowed for `cargo build` of the user's workspace (most of it is waiting for
/// other cargo runs on the same target directory, or a cold build of granary-silo).
const BUILD_LIMIT: Duration = Duration::from_secs(900);

/// One `cargo run -p PKG -- ARGS   # OUTPUT` line of the section's `sh` block.
#[derive(Debug)]
struct Run {
    line: String,
    package: String,
    args: Vec<String>,
    /// The `# OUTPUT` comment (required on client lines: exactly what it prints).
    output: Option<String>,
}

/// What the section tells the reader to create and run.
#[derive(Debug)]
struct Section {
    /// `(path relative to my-app/, contents)`, in README order.
    files: Vec<(String, String)>,
    /// Whether the `sh` block copies Granary's `Cargo.lock`.
    copies_lock: bool,
    /// The `cargo run` lines, in order.
    runs: Vec<Run>,
}

fn words(text: &str) -> Vec<String> {
    assert!(
        !text.contains(['"', '\'', '\\', '$', '`']),
        "this test splits commands on spaces only: {text}"
    );
    text.split_whitespace().map(str::to_owned).collect()
}

impl Section {
    fn parse(readme: &str) -> Self {
        let start = readme
            .find(SECTION)
            .expect("README has the own-crate section")
            + 1;
        let len = readme[start + 1..]
            .find("\n## ")
            .map_or(readme.len() - start, |at| at + 2);
        let mut lines = readme[start..start + len].lines();
        let mut files = Vec::new();
        let mut sh = None;
        while let Some(line) = lines.next() {
            let line = line.trim_end();
            if let Some(path) = line
                .strip_prefix("<!-- file: ")
                .and_then(|rest| rest.strip_suffix(" -->"))
            {
                let fence = lines.next().unwrap_or_default();
                assert!(
                    matches!(fence, "```toml" | "```rs"),
                    "the block of {path} must open with ```toml or ```rs (rustdoc must \
                     not run it as a doctest), not {fence:?}"
                );
                files.push((path.to_owned(), Self::block(&mut lines, path)));
            } else if line == "```sh" {
                assert!(sh.is_none(), "more than one ```sh block in the section");
                sh = Some(Self::block(&mut lines, "the sh block"));
            } else {
                assert!(
                    !line.starts_with("```") || line == "```text",
                    "a code block that is neither a file nor the sh block: {line}"
                );
                if line == "```text" {
                    Self::block(&mut lines, "the text block");
                }
            }
        }
        let sh = sh.expect("the section has a ```sh block");
        let mut copies_lock = false;
        let mut runs = Vec::new();
        for line in sh.lines() {
            let (command, comment) = match line.split_once('#') {
                Some((command, comment)) => (command.trim(), Some(comment.trim())),
                None => (line.trim(), None),
            };
            if command == COPY_LOCK {
                copies_lock = true;
            } else if command == "cargo build" {
                // Done by `build`, offline and into this workspace's target directory.
            } else if let Some(rest) = command.strip_prefix("cargo run -p ") {
                let (package, args) = match rest.split_once(" -- ") {
                    Some((package, args)) => (package.trim(), words(args)),
                    None => (rest.trim(), Vec::new()),
                };
                runs.push(Run {
                    line: line.to_owned(),
                    package: package.to_owned(),
                    args,
                    output: comment.map(str::to_owned),
                });
            } else if !command.is_empty() {
                panic!("unknown line in the section's sh block: {line}");
            }
        }
        Section {
            files,
            copies_lock,
            runs,
        }
    }

    /// The lines up to the closing ``` (each with its newline).
    fn block<'a>(lines: &mut impl Iterator<Item = &'a str>, what: &str) -> String {
        let mut text = String::new();
        for line in lines {
            if line.trim_end() == "```" {
                return text;
            }
            text.push_str(line);
            text.push('\n');
        }
        panic!("{what}: unclosed code block");
    }
}

/// This workspace's root: where the README's `../../granary/` points.
fn granary_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("grains-example is in the workspace")
}

/// The target directory this test was built into (so the user's build reuses its
/// compiled dependencies) and the profile directory under it (`debug`, `release`, …).
fn target_dir() -> (PathBuf, String) {
    let silo = Path::new(support::SILO);
    let profile_dir = silo
        .parent()
        .expect("the silo binary is in a profile directory");
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // target/PROFILE/silo or target/TRIPLE/PROFILE/silo: the root holds CACHEDIR.TAG.
    let root = profile_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or_else(|| profile_dir.parent().unwrap());
    (root.to_owned(), profile)
}

/// Writes the section's files into `app`, the manifests pointing at this workspace.
fn write_app(section: &Section, app: &Path) {
    let root = format!("\"{}/", granary_root().display());
    let mut rewritten = 0;
    for (path, text) in &section.files {
        assert!(
            !path.starts_with('/') && !path.contains(".."),
            "a file outside my-app/: {path}"
        );
        let text = if path.ends_with("Cargo.toml") {
            rewritten += text.matches(CHECKOUT).count();
            text.replace(CHECKOUT, &root)
        } else {
            text.clone()
        };
        assert!(
            !text.contains("../granary"),
            "{path} reaches the checkout other than by {CHECKOUT}…"
        );
        let file = app.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
    }
    assert!(rewritten > 0, "no manifest depends on {CHECKOUT}…");
    assert!(
        app.join("Cargo.toml").is_file(),
        "the section shows no workspace Cargo.toml"
    );
    if section.copies_lock {
        std::fs::copy(granary_root().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    }
}

/// A child process in its own process group, killed (with its children) on drop.
struct Group(Child);

impl Group {
    fn spawn(command: &mut Command) -> Self {
        Group(command.process_group(0).spawn().expect("spawn"))
    }

    fn kill(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
            // SAFETY: kill(2) has no memory-safety preconditions; the group is our own
            // child's, which is not reaped yet, so its id cannot have been recycled.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `cargo build --offline --workspace` in `app`; returns how long it took and the
/// packages it compiled.
async fn build(app: &Path) -> (Duration, Vec<String>) {
    let (target, profile) = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let log = app.join("cargo-build.log");
    let out = File::create(&log).unwrap();
    let mut command = Command::new(cargo);
    // Cargo gives this test the variables it gives a build script (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, …); build scripts that rerun when one changes (ring's, cc's)
    // would rebuild their crates if the inner cargo saw them.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_")
            || matches!(
                &*var,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            )
        {
            command.env_remove(&*var);
        }
    }
    command
        .args(["build", "--offline", "--workspace"])
        .current_dir(app)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // The profile name is part of every artifact's hash: the dependencies this test
    // was built with are `cargo test`'s (profile `test`, in `debug/`), not `dev`'s.
    match profile.as_str() {
        "debug" => command.args(["--profile", "test"]),
        "release" => command.arg("--release"),
        other => command.args(["--profile", other]),
    };
    let started = Instant::now();
    let mut cargo = Group::spawn(&mut command);
    let status = loop {
        if let Some(status) = cargo.0.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BUILD_LIMIT {
            cargo.kill();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("cargo build of my-app hung:\n{}", tail(&log, 40));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "cargo build of my-app failed ({status}):\n{log}"
    );
    let compiled = log
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Compiling "))
        .map(str::to_owned)
        .collect();
    (took, compiled)
}

/// The user's silo processes, killed on drop; their logs printed if the test failed.
struct Silos {
    app: PathBuf,
    procs: Vec<(String, Group, PathBuf)>,
}

impl Silos {
    fn spawn(&mut self, bin: &Path, name: &str, args: &[String]) -> usize {
        let log = self.app.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let mut command = Command::new(bin);
        command
            .args(args)
            .current_dir(&self.app)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for var in FLAG_VARS {
            command.env_remove(var);
        }
        self.procs
            .push((name.to_owned(), Group::spawn(&mut command), log));
        self.procs.len() - 1
    }

    /// Waits (polling) until silo `i` logged a line containing `needle`; panics with its
    /// log if it exits first or `deadline` passes.
    async fn wait_for_line(&mut self, i: usize, needle: &str, deadline: Instant) {
        loop {
            let (name, group, log) = &mut self.procs[i];
            let exited: Option<ExitStatus> = group.0.try_wait().unwrap();
            let text = std::fs::read_to_string(&*log).unwrap_or_default();
            if text.contains(needle) {
                return;
            }
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "{name} {} without logging `{needle}`:\n{}",
                    exited.map_or("timed out".to_owned(), |s| format!("exited ({s})")),
                    tail(&text, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Silos {
    fn drop(&mut self) {
        for (_, group, _) in &mut self.procs {
            group.kill();
        }
        if std::thread::panicking() {
            for (name, _, log) in &self.procs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("---- {name}\n{}", tail(&text, 60));
            }
        }
    }
}

/// Runs the user's client binary in `app` with `args`.
async fn run_client(bin: &Path, app: &Path, args: &[String]) -> Output {
    let shown = format!("{CLIENT_PKG} {}", args.join(" "));
    run_bin(bin.to_str().unwrap(), args, &[], Some(app), &shown).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_own_crate_builds_and_runs() {
    let section = Section::parse(README);
    let dir = tempfile::Builder::new()
        .prefix("granary-readme-own-crate-")
        // Under this workspace, so cargo sees the same configuration as for this test.
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let app = dir.path().join("my-app");
    write_app(&section, &app);

    let (took, compiled) = build(&app).await;
    eprintln!(
        "cargo build of my-app took {:.1} s, compiled {}: {}",
        took.as_secs_f64(),
        compiled.len(),
        compiled.join(", ")
    );
    let (target, profile) = target_dir();
    let bin = |package: &str| target.join(&profile).join(package);

    let silos: Vec<&Run> = section
        .runs
        .iter()
        .filter(|r| r.package == SILO_PKG)
        .collect();
    let clients: Vec<&Run> = section
        .runs
        .iter()
        .filter(|r| r.package == CLIENT_PKG)
        .collect();
    assert_eq!(
        silos.len() + clients.len(),
        section.runs.len(),
        "a `cargo run` of another package: {:?}",
        section.runs
    );
    assert!(
        silos.len() >= 2 && !clients.is_empty(),
        "the section runs no master, slave or client"
    );

    let mut procs = Silos {
        app: app.clone(),
        procs: Vec::new(),
    };
    bounded(Duration::from_secs(60), async {
        let map = fresh_ports(silos.iter().map(|r| (r.args.as_slice(), r.line.clone())));
        let deadline = Instant::now() + START;
        let mut slaves = Vec::new();
        for (n, run) in silos.iter().enumerate() {
            let mut args = substitute(&run.args, &map);
            let master = flag(&args, "--master").is_none();
            if master {
                assert_eq!(n, 0, "the master must be the first silo: {}", run.line);
                args.extend(["--storage".to_owned(), "memory".to_owned()]);
            } else {
                assert!(n > 0, "the first silo must be the master: {}", run.line);
            }
            let name = if master {
                "master".to_owned()
            } else {
                format!("slave{n}")
            };
            let i = procs.spawn(&bin(SILO_PKG), &name, &args);
            if master {
                // The silo logs the grain types it hosts: the grain crate is linked.
                procs.wait_for_line(i, TALLY, deadline).await;
                procs.wait_for_line(i, "silo started", deadline).await;
            } else {
                slaves.push(i);
            }
        }
        for i in slaves {
            procs.wait_for_line(i, ": serving grains", deadline).await;
        }
        for run in &clients {
            let expected = run
                .output
                .as_deref()
                .unwrap_or_else(|| panic!("a client line without its `# OUTPUT`: {}", run.line));
            let output = run_client(&bin(CLIENT_PKG), &app, &substitute(&run.args, &map)).await;
            assert!(
                output.status.success(),
                "`{}` failed ({}):\n{}",
                run.line,
                output.status,
                output.stderr
            );
            assert_eq!(output.stdout.trim_end(), expected, "`{}`", run.line);
        }
    })
    .await;
    drop(procs);

    // A silo that does not link my-grains: this package's `silo`, hosting the example
    // grains. The user's client gets `UnknownGrainType`, and the error names the fix.
    let mut example = Procs::new("readme_own_crate");
    bounded(Duration::from_secs(60), async {
        let cluster = example.start_cluster("example-", 1, None).await;
        let gateway = example.ports(cluster.slaves[0]).tcp.to_string();
        let output = run_client(&bin(CLIENT_PKG), &app, &[gateway]).await;
        assert!(!output.status.success(), "{output:?}");
        for needle in [
            &format!("grain type `{TALLY}` is not registered on the silo")[..],
            "make the silo binary link that crate",
        ] {
            assert!(
                output.stderr.contains(needle),
                "{needle:?} not in {output:?}"
            );
        }
    })
    .await;
}
