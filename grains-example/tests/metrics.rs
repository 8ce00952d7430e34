//! Every silo's HTTP port: `/metrics` parses as OpenMetrics text and counts exactly the
//! workload that was run; `/health` and `/ready` answer as an orchestrator expects,
//! including while a slave is fenced.

use std::collections::HashSet;
use std::time::Duration;

use granary_example::{Add, Counter};
use granary_runtime::Grain;
use granary_silo::testing::TestCluster;
use granary_silo::ClusterSilo;
use tokio::time::Instant;

mod support;
use support::metrics::{get, http, parse, scrape, Scrape};

const STABLE: Duration = Duration::from_secs(10);
const COUNTER: &str = Counter::TYPE_NAME;

/// Polls until `check` holds on the scrapes of `silos` (each silo scraped once per
/// round); panics with the last scrape's figures at the deadline.
async fn until_scraped(
    what: &str,
    silos: &[&ClusterSilo],
    mut check: impl FnMut(&[Scrape]) -> Result<(), String>,
) {
    let deadline = Instant::now() + STABLE;
    loop {
        let mut scrapes = Vec::new();
        for silo in silos {
            scrapes.push(scrape(silo).await);
        }
        match check(&scrapes) {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn expect(what: &str, got: f64, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what} is {got}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_silo_exports_exactly_the_workload_it_served() {
    let cluster = TestCluster::builder()
        .http()
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..30 {
        client
            .grain::<Counter>(format!("k{}", i % 10))
            .ask(Add(1))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
    }
    let master = cluster.master();
    let slaves: Vec<&ClusterSilo> = cluster.slaves().map(|(_, s)| s).collect();
    let counter = [("grain_type", COUNTER)];

    until_scraped("the slaves' grain and call metrics", &slaves, |scrapes| {
        let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
            scrapes.iter().map(|s| s.sum(name, labels)).sum()
        };
        let adds = sum(
            "granary_messages_handled_total",
            &[("grain_type", COUNTER), ("message", "Add")],
        );
        expect("Counter/Add handled", adds, adds == 30.0)?;
        let n = sum("granary_activations", &counter);
        expect("Counter activations", n, n == 10.0)?;
        let n = sum("granary_activations_created_total", &counter);
        expect("Counter activations created", n, n == 10.0)?;
        let n = sum("granary_handler_duration_seconds_count", &counter);
        expect("timed turns", n, n == 30.0)?;
        let n = sum(
            "granary_handler_duration_seconds_bucket",
            &[("grain_type", COUNTER), ("le", "+Inf")],
        );
        expect("turns in the +Inf bucket", n, n == 30.0)?;
        let n = sum("granary_handler_failures_total", &[]);
        expect("failed turns", n, n == 0.0)?;
        let n = sum(
            "granary_storage_operation_duration_seconds_count",
            &[("provider", "master"), ("op", "write")],
        );
        expect("state writes through the master", n, n == 30.0)?;
        let n = sum(
            "granary_storage_operation_duration_seconds_count",
            &[("provider", "master"), ("op", "read")],
        );
        expect("state reads through the master", n, n == 10.0)?;
        let n = sum("granary_mailbox_queue_depth", &counter);
        expect("queued messages", n, n == 0.0)?;
        let n = sum("granary_fencing_events_total", &[]);
        expect("fencing events", n, n == 0.0)
    })
    .await;

    let all: Vec<&ClusterSilo> = std::iter::once(master).chain(slaves.clone()).collect();
    until_scraped("every silo's call metrics", &all, |scrapes| {
        let ok: f64 = scrapes
            .iter()
            .map(|s| s.sum("granary_call_outcomes_total", &[("outcome", "ok")]))
            .sum();
        expect("calls served ok", ok, ok == 30.0)?;
        let in_flight: f64 = scrapes
            .iter()
            .map(|s| s.sum("granary_calls_in_flight", &[]))
            .sum();
        expect("calls in flight", in_flight, in_flight == 0.0)
    })
    .await;

    until_scraped("the master's metrics", &[master], |scrapes| {
        let m = &scrapes[0];
        let n = m.sum(
            "granary_storage_operation_duration_seconds_count",
            &[("provider", "memory"), ("op", "write")],
        );
        expect("writes served by the master", n, n >= 30.0)?;
        let n = m.sum("granary_storage_errors_total", &[]);
        expect("storage errors", n, n == 0.0)?;
        let n = m.sum("granary_directory_entries", &[]);
        expect("directory entries", n, n == 10.0)?;
        let n = m.sum("granary_directory_placements_total", &[]);
        expect("placements", n, n == 10.0)?;
        let n = m.sum("granary_activations", &[]);
        expect("activations on the master", n, n == 0.0)?;
        let n = m.sum("granary_membership_members", &[("state", "active")]);
        expect("active members", n, n == 3.0)?;
        let n = m.sum("granary_membership_joins_total", &[]);
        expect("joins", n, n == 2.0)?;
        let n = m.sum("granary_membership_deaths_total", &[]);
        expect("deaths", n, n == 0.0)
    })
    .await;

    for silo in &all {
        let m = scrape(silo).await;
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "granary_uptime_seconds",
        ] {
            assert!(m.has(name), "{name} missing on {}", silo.id());
        }
        assert!(m.sum("process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.sum("granary_uptime_seconds", &[]) > 0.0);
        // Labels are bounded: no grain key ever becomes a label value.
        let keys: HashSet<String> = (0..10).map(|i| format!("k{i}")).collect();
        for sample in &m.samples {
            assert!(
                sample.labels.values().all(|v| !keys.contains(v)),
                "a grain key in {sample:?}"
            );
        }
    }
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_slave_is_alive_but_not_ready_and_deaths_are_counted() {
    let mut cluster = TestCluster::builder()
        .http()
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    for silo in std::iter::once(cluster.master()).chain(cluster.slaves().map(|(_, s)| s)) {
        let ready = get(http(silo), "/ready").await;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
        assert_eq!(get(http(silo), "/health").await.status, 200);
    }

    // A slave dies: the master counts the death and sees a dead member.
    cluster.kill_silo(1).await;
    until_scraped("the master's view of the death", &[cluster.master()], |s| {
        let n = s[0].sum("granary_membership_deaths_total", &[]);
        expect("deaths", n, n == 1.0)?;
        let n = s[0].sum("granary_membership_members", &[("state", "dead")]);
        expect("dead members", n, n == 1.0)?;
        let n = s[0].sum("granary_membership_members", &[("state", "active")]);
        expect("active members", n, n == 2.0)
    })
    .await;

    // The master dies: the remaining slave fences itself. It is alive, not ready.
    cluster.kill_master().await;
    let slave = cluster.slave(0).unwrap();
    let deadline = Instant::now() + STABLE;
    let ready = loop {
        let ready = get(http(slave), "/ready").await;
        // Before the lease runs out, the store (the dead master) fails the probe first.
        let fenced = ready.status == 503 && ready.body.contains("fenced");
        if fenced || Instant::now() >= deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("fenced"), "{}", ready.body);
    let health = get(http(slave), "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    until_scraped("the slave's fencing", &[slave], |s| {
        let n = s[0].sum("granary_fencing_events_total", &[]);
        expect("fencing events", n, n == 1.0)
    })
    .await;
    cluster.shutdown().await;
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_b x y\n# TYPE a_b counter\na_b_total{k=\"v \\\"q\\\"\"} 1\n# EOF\n";
    let scrape = parse(good).unwrap();
    assert_eq!(scrape.samples[0].labels["k"], "v \"q\"");
    for bad in [
        "# TYPE a counter\na_total 1\n",                // no EOF
        "a 1\n# EOF\n",                                 // undeclared family
        "# TYPE a gauge\na{k=v} 1\n# EOF\n",            // unquoted value
        "# TYPE a gauge\na one\n# EOF\n",               // not a number
        "# TYPE a gauge\n# TYPE a gauge\na 1\n# EOF\n", // declared twice
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
