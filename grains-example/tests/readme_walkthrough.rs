//! The README's cluster walkthrough (`## Run a cluster`), run as written: the `silo` and
//! `client` command lines are parsed from the README, the ports replaced by free ones,
//! and every client command must print what its `# …` comment says. The convention is
//! stated in the HTML comment above the section's first block; [`Walkthrough::parse`]
//! refuses any line it does not understand, so the README cannot drift from this test.
//! Helpers: [`support`].

mod support;

use std::time::Duration;

use support::START;
use support::{
    bounded, client_bin, flag, free_ports, fresh_ports, run_bin, run_client, substitute, PortMap,
    Ports, Procs, SiloSpec,
};
use tokio::time::Instant;

const README: &str = include_str!("../../README.md");
const SECTION: &str = "\n## Run a cluster\n";
const SECTION_END: &str = "\n### How the cluster works\n";
/// The binaries as the README calls them (from the workspace root, after `cargo build`).
const README_SILO: &str = "./target/debug/silo";
const README_CLIENT: &str = "./target/debug/client";
const DEMO: &str = env!("CARGO_BIN_EXE_demo");

/// What a client command must print.
#[derive(Debug)]
enum Expected {
    /// `# OUTPUT`: exactly this line.
    Line(String),
    /// `# OUTPUT …`: a line starting with this.
    Prefix(String),
}

/// One `$C ARGS   # OUTPUT` line.
#[derive(Debug)]
struct Call {
    line: String,
    args: Vec<String>,
    expected: Expected,
}

/// The walkthrough's commands, in README order.
#[derive(Debug)]
struct Walkthrough {
    /// The flags of each `./target/debug/silo` line of the first block.
    silos: Vec<Vec<String>>,
    /// The flags of `$C` (`C="./target/debug/client FLAGS"`).
    client: Vec<String>,
    /// The client lines of the second block.
    calls: Vec<Call>,
    /// The client lines of the third block, run after the silos were stopped and
    /// started again.
    after_restart: Vec<Call>,
}

fn words(text: &str) -> Vec<String> {
    assert!(
        !text.contains(['"', '\'', '\\', '$', '`']),
        "the walkthrough test splits commands on spaces only: {text}"
    );
    text.split_whitespace().map(str::to_owned).collect()
}

impl Walkthrough {
    fn parse(readme: &str) -> Self {
        let start = readme.find(SECTION).expect("README has `## Run a cluster`");
        let len = readme[start..]
            .find(SECTION_END)
            .expect("`## Run a cluster` ends at `### How the cluster works`");
        let section = &readme[start..start + len];
        // The `sh` blocks; `#` lines in them are shell comments.
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        let mut open = false;
        for line in section.lines() {
            match line.trim_end() {
                "```sh" => {
                    assert!(!open, "nested ``` in `## Run a cluster`");
                    blocks.push(Vec::new());
                    open = true;
                }
                "```" if open => open = false,
                l if open && !l.is_empty() && !l.starts_with('#') => {
                    blocks.last_mut().unwrap().push(l)
                }
                _ => {}
            }
        }
        assert!(!open, "unclosed ```sh block in `## Run a cluster`");
        let [silo_block, client_block, restart_block]: [Vec<&str>; 3] = blocks
            .try_into()
            .unwrap_or_else(|b: Vec<_>| panic!("expected 3 sh blocks, found {}", b.len()));

        let mut silos = Vec::new();
        for line in silo_block {
            if let Some(flags) = line.strip_prefix(&format!("{README_SILO} ")) {
                silos.push(words(flags));
            } else if line.starts_with("cargo build ") {
                // Cargo built the binaries for this test; check it is the same build.
                let args = words(line);
                assert!(
                    args.windows(2).any(|w| w == ["-p", "granary-example"])
                        && args.iter().any(|a| a == "--bins"),
                    "the walkthrough builds something else than the binaries tested: {line}"
                );
            } else {
                panic!("unknown line in the walkthrough's first block: {line}");
            }
        }
        let (first, calls) = client_block.split_first().expect("an empty second block");
        let client = first
            .strip_prefix(&format!("C=\"{README_CLIENT} "))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("the second block does not start with C=\"…\": {first}"));
        let walkthrough = Walkthrough {
            silos,
            client: words(client),
            calls: calls.iter().map(|l| Self::call(l)).collect(),
            after_restart: restart_block.iter().map(|l| Self::call(l)).collect(),
        };
        assert!(
            !walkthrough.silos.is_empty()
                && !walkthrough.calls.is_empty()
                && !walkthrough.after_restart.is_empty(),
            "a walkthrough block is empty: {walkthrough:?}"
        );
        walkthrough
    }

    /// `$C ARGS   # OUTPUT`.
    fn call(line: &str) -> Call {
        let (command, comment) = line
            .split_once('#')
            .unwrap_or_else(|| panic!("a client line without its `# output`: {line}"));
        let args = command
            .strip_prefix("$C ")
            .unwrap_or_else(|| panic!("a client line not starting with `$C `: {line}"));
        let output = comment.trim();
        assert!(!output.is_empty(), "an empty `# output`: {line}");
        let expected = match output.strip_suffix(" …") {
            Some(prefix) => Expected::Prefix(prefix.to_owned()),
            None => Expected::Line(output.to_owned()),
        };
        Call {
            line: line.to_owned(),
            args: words(args),
            expected,
        }
    }
}

/// Starts the walkthrough's silos on `map` (fresh ports if `None`), as the README does:
/// in order, the master first, each slave joined. Tries once more on fresh ports if a
/// silo exits early. Returns the silos' indices (in README order) and the ports used.
async fn start_silos(
    procs: &mut Procs,
    walkthrough: &Walkthrough,
    map: Option<PortMap>,
) -> (Vec<usize>, PortMap) {
    let mut map = map.unwrap_or_else(|| ports_of(walkthrough));
    for attempt in 1..=2 {
        let first = procs.count();
        match try_start_silos(procs, walkthrough, &map).await {
            Ok(silos) => return (silos, map),
            Err(e) if attempt == 1 => {
                eprintln!("walkthrough start failed, retrying on other ports: {e}");
                for i in first..procs.count() {
                    procs.kill9(i);
                }
                map = ports_of(walkthrough);
            }
            Err(e) => panic!("walkthrough start failed twice: {e}"),
        }
    }
    unreachable!()
}

async fn try_start_silos(
    procs: &mut Procs,
    walkthrough: &Walkthrough,
    map: &PortMap,
) -> Result<Vec<usize>, String> {
    let deadline = Instant::now() + START;
    let mut silos = Vec::new();
    for (k, args) in walkthrough.silos.iter().enumerate() {
        let args = substitute(args, map);
        let ports = Ports {
            tcp: flag(&args, "--listen").unwrap().parse().unwrap(),
            udp: flag(&args, "--udp").unwrap().parse().unwrap(),
        };
        let role = flag(&args, "--role").unwrap_or("master").to_owned();
        let i = procs.spawn(SiloSpec::new(&format!("{role}{k}"), &args).ports(ports));
        if role == "master" {
            // Before the slaves, as a user would wait for it.
            procs.wait_listening(i, deadline).await?.close().await;
        }
        silos.push(i);
    }
    for (k, &i) in silos.iter().enumerate() {
        if flag(&walkthrough.silos[k], "--role") == Some("slave") {
            procs.wait_joined(i, deadline).await?;
        }
    }
    Ok(silos)
}

/// Runs each `$C` line and checks its output.
async fn run_calls(calls: &[Call], client: &[String]) {
    for call in calls {
        let mut args = client.to_vec();
        args.extend(call.args.iter().cloned());
        let output = run_client(&args).await;
        assert!(
            output.status.success(),
            "`{}` failed ({}): {}",
            call.line,
            output.status,
            output.stderr
        );
        let printed = output.stdout.trim_end();
        let ok = match &call.expected {
            Expected::Line(line) => printed == line,
            Expected::Prefix(prefix) => !printed.contains('\n') && printed.starts_with(prefix),
        };
        assert!(ok, "`{}` printed {printed:?}", call.line);
    }
}

/// Sends `how` (SIGTERM or SIGINT) to the master; then every silo must exit with
/// status 0.
async fn stop_all(procs: &mut Procs, silos: &[usize], master: usize, how: &str) {
    let started = Instant::now();
    match how {
        "SIGTERM" => procs.sigterm(master),
        "SIGINT" => procs.sigint(master),
        _ => unreachable!("{how}"),
    }
    let deadline = started + Duration::from_secs(15);
    for &i in silos {
        let status = procs.wait_exit(i, deadline).await;
        assert!(status.success(), "{} exited with {status}", procs.name(i));
    }
    eprintln!(
        "walkthrough: {how} to the master stopped the cluster in {:?}",
        started.elapsed()
    );
}

#[test]
fn the_walkthrough_parses() {
    let walkthrough = Walkthrough::parse(README);
    assert_eq!(walkthrough.silos.len(), 3, "{walkthrough:?}");
    // A dry run of the substitution: every address used is a silo's.
    let map = ports_of(&walkthrough);
    substitute(&walkthrough.client, &map);
    for args in &walkthrough.silos {
        substitute(args, &map);
    }
}

/// Fresh ports for the walkthrough's silos.
fn ports_of(walkthrough: &Walkthrough) -> PortMap {
    fresh_ports(
        walkthrough
            .silos
            .iter()
            .map(|args| (args.as_slice(), args.join(" "))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_works() {
    let mut procs = Procs::new("walkthrough");
    bounded(Duration::from_secs(60), walkthrough(&mut procs)).await;
}

async fn walkthrough(procs: &mut Procs) {
    let walkthrough = Walkthrough::parse(README);
    // A reader runs the demo first (top of the README), in the same directory: the
    // walkthrough's master opens the store the demo left.
    let demo_gateway = free_ports().tcp.to_string();
    let demo = run_bin(
        DEMO,
        &["--gateway".to_owned(), demo_gateway],
        &[],
        Some(procs.dir()),
        "demo",
    )
    .await;
    assert!(demo.status.success(), "the demo failed: {}", demo.stderr);
    eprintln!("demo:\n{}", demo.stdout);

    // As in the README: no cluster key (membership packets unsigned).
    let (silos, map) = start_silos(procs, &walkthrough, None).await;
    let master = silos[0];
    assert!(
        flag(&walkthrough.silos[0], "--role") == Some("master"),
        "the walkthrough starts with the master"
    );
    let gateway = procs.ports(master).tcp;

    let pong = client_bin(gateway, &["ping"]).await;
    assert!(pong.starts_with(&format!("pong from {gateway}")), "{pong}");
    run_calls(&walkthrough.calls, &substitute(&walkthrough.client, &map)).await;
    // A slave works as a gateway too.
    let slave_gateway = procs.ports(silos[1]).tcp;
    assert_eq!(
        client_bin(slave_gateway, &["counter", "get", "alice"]).await,
        "7"
    );

    // SIGTERM to the master stops the whole cluster, every process with status 0.
    stop_all(procs, &silos, master, "SIGTERM").await;

    // The same commands again (same ports, unless taken meanwhile) find the state.
    let (again, map) = start_silos(procs, &walkthrough, Some(map)).await;
    run_calls(
        &walkthrough.after_restart,
        &substitute(&walkthrough.client, &map),
    )
    .await;
    // Ctrl-C stops it too.
    stop_all(procs, &again, again[0], "SIGINT").await;
}
