//! Durable reminders under the real binaries, with a [`Beacon`] beating every second:
//! ticks come on time (lateness measured and printed), keep coming after `kill -9` of
//! the slave that hosts the beacon (it is activated on another slave), after the grain
//! deactivated, and after `kill -9` of the whole cluster and its restart (the ticks
//! missed while it was down come as one tick that counts them). Helpers: [`support`].

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use granary_client::Client;
use granary_example::beacon::Beat;
use granary_example::{Arm, Beacon, Beats, Rest};
use support::{bounded, connect, Procs, START};
use tokio::time::Instant;

const PERIOD_MS: u64 = 1_000;
const KEY: &str = "b1";

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The beacon's beats, retrying (until `deadline`) while it is not served.
async fn beats(client: &Client, deadline: Instant) -> Vec<Beat> {
    loop {
        match client
            .grain::<Beacon>(KEY)
            .ask(Beats)
            .timeout(Duration::from_millis(1_000))
            .await
        {
            Ok(beats) => return beats,
            Err(e) => assert!(Instant::now() < deadline, "the beacon is not served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `n` beats due after `since_unix_ms` arrived; returns all beats.
async fn beats_after(client: &Client, since_unix_ms: u64, n: usize, within: Duration) -> Vec<Beat> {
    let deadline = Instant::now() + within;
    loop {
        let all = beats(client, deadline).await;
        if all.iter().filter(|b| b.due_unix_ms > since_unix_ms).count() >= n {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} beats due after {since_unix_ms} within {within:?}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The slaves (indices) whose logs show an activation of the beacon.
fn beacon_hosts(procs: &Procs, slaves: &[usize]) -> Vec<usize> {
    slaves
        .iter()
        .copied()
        .filter(|&s| procs.activations::<Beacon>(s) > 0)
        .collect()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_survives_kill_dash_nine_of_its_slave_deactivation_and_a_full_restart() {
    let mut procs = Procs::new("reminders");
    bounded(Duration::from_secs(150), reminders(&mut procs)).await;
}

async fn reminders(procs: &mut Procs) {
    let cluster = procs.start_cluster("", 3, Some(support::KEY)).await;
    let gateway = procs.ports(cluster.master).tcp;
    let client = connect(&[gateway]).await;
    let armed = now_unix_ms();
    client
        .grain::<Beacon>(KEY)
        .ask(Arm {
            period_ms: PERIOD_MS,
        })
        .timeout(Duration::from_secs(10))
        .await
        .unwrap();

    // Steady state: ten beats, one per period, on time.
    let steady = beats_after(&client, armed, 10, Duration::from_secs(20)).await;
    assert!(steady.iter().all(|b| b.missed == 0), "{steady:?}");
    assert!(
        steady
            .windows(2)
            .all(|w| w[1].due_unix_ms == w[0].due_unix_ms + PERIOD_MS),
        "a tick was skipped or repeated: {steady:?}"
    );
    let late: Vec<u64> = steady.iter().map(Beat::late_ms).collect();
    eprintln!(
        "reminder accuracy (steady, period {PERIOD_MS} ms, {} ticks): median {} ms, max {} ms late",
        late.len(),
        median(late.clone()),
        late.iter().max().unwrap()
    );
    assert!(
        late.iter().all(|l| *l < 500),
        "a steady tick came more than 500 ms late: {late:?}"
    );

    // kill -9 of the slave that hosts the beacon: the ticks go on, on another slave.
    let hosts = beacon_hosts(procs, &cluster.slaves);
    assert_eq!(hosts.len(), 1, "the beacon was activated once: {hosts:?}");
    let victim = hosts[0];
    let killed_unix = now_unix_ms();
    procs.kill9(victim);
    let killed = Instant::now();
    let survivors: Vec<usize> = cluster
        .slaves
        .iter()
        .copied()
        .filter(|&s| s != victim)
        .collect();
    let after_kill = beats_after(&client, killed_unix, 3, Duration::from_secs(30)).await;
    let first = after_kill
        .iter()
        .find(|b| b.due_unix_ms > killed_unix)
        .unwrap();
    eprintln!(
        "kill -9 of the beacon's slave: first tick after it arrived {} ms after the kill \
         ({} missed ticks coalesced into it); ticks back on schedule {:?} after the kill",
        first.at_unix_ms.saturating_sub(killed_unix),
        first.missed,
        killed.elapsed()
    );
    assert_eq!(
        beacon_hosts(procs, &survivors).len(),
        1,
        "the beacon was activated on exactly one surviving slave"
    );
    // Nothing lost: every due tick since arming was delivered or counted as missed.
    let all = beats(&client, Instant::now() + Duration::from_secs(5)).await;
    let counted: u64 = all.iter().map(|b| 1 + b.missed).sum();
    let span = (all.last().unwrap().due_unix_ms - all[0].due_unix_ms) / PERIOD_MS + 1;
    assert_eq!(counted, span, "ticks lost or doubled: {all:?}");

    // Deactivation: the next tick activates the beacon again.
    let before = survivors
        .iter()
        .map(|&s| procs.activations::<Beacon>(s))
        .sum::<usize>();
    client.grain::<Beacon>(KEY).ask(Rest).await.unwrap();
    let rested = now_unix_ms();
    beats_after(&client, rested, 2, Duration::from_secs(10)).await;
    let after = survivors
        .iter()
        .map(|&s| procs.activations::<Beacon>(s))
        .sum::<usize>();
    assert!(
        after > before,
        "the beacon did not deactivate and come back"
    );

    // The whole cluster killed and restarted on the same ports and store.
    client.close().await;
    let down_unix = now_unix_ms();
    let everyone: Vec<usize> = std::iter::once(cluster.master)
        .chain(survivors.iter().copied())
        .collect();
    for &i in &everyone {
        procs.kill9(i);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = Instant::now();
    let master = procs.restart(cluster.master);
    procs
        .wait_listening(master, restarted + START)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .close()
        .await;
    let mut slaves = Vec::new();
    for &s in &survivors {
        slaves.push(procs.restart(s));
    }
    for &s in &slaves {
        procs
            .wait_joined(s, restarted + START)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let client = connect(&[gateway]).await;
    let after_restart = beats_after(&client, down_unix, 3, Duration::from_secs(30)).await;
    let first = after_restart
        .iter()
        .find(|b| b.due_unix_ms > down_unix)
        .unwrap();
    eprintln!(
        "full cluster restart: first tick {} ms after the restart began, standing for {} missed ticks",
        first.at_unix_ms.saturating_sub(down_unix + 3_000),
        first.missed
    );
    assert!(
        first.missed >= 2,
        "the ticks missed while the cluster was down are counted: {first:?}"
    );
    let counted: u64 = after_restart.iter().map(|b| 1 + b.missed).sum();
    let span =
        (after_restart.last().unwrap().due_unix_ms - after_restart[0].due_unix_ms) / PERIOD_MS + 1;
    assert_eq!(counted, span, "ticks lost or doubled: {after_restart:?}");
    for &i in std::iter::once(&master).chain(&slaves) {
        procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
    }
    client.close().await;
}
