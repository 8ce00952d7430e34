//! The README's cluster walkthrough (`## Run a cluster`), run as written: the `silo` and
//! `client` command lines are parsed from the README, the ports replaced by free ones,
//! and every client command must print what its `# …` comment says. The convention is
//! stated in the HTML comment above the section's first block; [`Walkthrough::parse`]
//! refuses any line it does not understand, so the README cannot drift from this test.
//! Helpers: [`support`].

mod support;

use std::time::Duration;

use support::walkthrough::{ports_of, run_calls, start_silos, Walkthrough};
use support::{bounded, client_bin, flag, free_ports, run_bin, substitute, Procs};
use tokio::time::Instant;

const README: &str = include_str!("../../README.md");
const SECTION: &str = "## Run a cluster";
const SECTION_END: &str = "### How the cluster works";
const DEMO: &str = env!("CARGO_BIN_EXE_demo");

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
    let walkthrough = Walkthrough::parse(README, SECTION, SECTION_END);
    assert_eq!(walkthrough.silos.len(), 3, "{walkthrough:?}");
    // A dry run of the substitution: every address used is a silo's.
    let map = ports_of(&walkthrough);
    substitute(&walkthrough.client, &map);
    for args in &walkthrough.silos {
        substitute(args, &map);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_works() {
    let mut procs = Procs::new("walkthrough");
    bounded(Duration::from_secs(60), walkthrough(&mut procs)).await;
}

async fn walkthrough(procs: &mut Procs) {
    let walkthrough = Walkthrough::parse(README, SECTION, SECTION_END);
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
    run_calls(&walkthrough.after, &substitute(&walkthrough.client, &map)).await;
    // Ctrl-C stops it too.
    stop_all(procs, &again, again[0], "SIGINT").await;
}
