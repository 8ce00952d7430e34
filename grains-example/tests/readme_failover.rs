//! The README's failover walkthrough (`## No single point of failure: master
//! candidates`), run as written: three master candidates and two slaves from the first
//! block, the client lines of the second, `kill -9` of the candidate acting as master,
//! then the client lines of the third, each printing what its `# …` comment says.
//! Helpers: [`support`].

mod support;

use std::time::Duration;

use granary_client::{Client, ClientConfig};
use support::walkthrough::{ports_of, run_calls, start_silos, Walkthrough};
use support::{bounded, flag, substitute, Procs};
use tokio::time::Instant;

const README: &str = include_str!("../../README.md");
const SECTION: &str = "## No single point of failure: master candidates";
const SECTION_END: &str = "### How failover works";

#[test]
fn the_failover_walkthrough_parses() {
    let walkthrough = Walkthrough::parse(README, SECTION, SECTION_END);
    let roles: Vec<_> = walkthrough
        .silos
        .iter()
        .map(|args| flag(args, "--role").unwrap_or("master"))
        .collect();
    assert_eq!(roles, ["master", "master", "master", "slave", "slave"]);
    let map = ports_of(&walkthrough);
    substitute(&walkthrough.client, &map);
    for args in &walkthrough.silos {
        substitute(args, &map);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_failover_walkthrough_works() {
    let mut procs = Procs::new("readme-failover");
    bounded(Duration::from_secs(90), failover(&mut procs)).await;
}

async fn failover(procs: &mut Procs) {
    let walkthrough = Walkthrough::parse(README, SECTION, SECTION_END);
    let (silos, map) = start_silos(procs, &walkthrough, None).await;
    let client = substitute(&walkthrough.client, &map);
    run_calls(&walkthrough.calls, &client).await;

    // Kill the acting master, as the README tells the reader to.
    let candidates = &silos[..3];
    let gateways: Vec<_> = silos[3..].iter().map(|&s| procs.ports(s).tcp).collect();
    // As in the README: no cluster key.
    let status = Client::connect(ClientConfig::new(gateways))
        .await
        .expect("connect to the slaves");
    let acting = procs
        .acting_master(
            candidates,
            &status,
            Instant::now() + Duration::from_secs(20),
        )
        .await;
    procs.kill9(candidates[acting]);
    let killed = Instant::now();
    run_calls(&walkthrough.after, &client).await;
    eprintln!(
        "README failover: the calls after the kill of {} answered within {:?}",
        procs.name(candidates[acting]),
        killed.elapsed()
    );
    for (k, &i) in silos.iter().enumerate() {
        if k != acting {
            procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
