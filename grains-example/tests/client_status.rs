//! `client status` against a cluster of real processes: every silo and grain type is
//! listed, and a slave killed with `kill -9` shows up dead.

mod support;

use std::time::Duration;

use granary_example::grain_types;
use support::*;
use tokio::time::Instant;

/// Time allowed for the master to declare a killed slave dead (1 s heartbeats × 3).
const DEATH: Duration = Duration::from_secs(15);

/// The table rows (lines) of `client status` that name `addr`, in the SILOS section.
fn silo_row<'a>(status: &'a str, addr: &str) -> Option<&'a str> {
    status
        .split("\n\n")
        .find(|section| section.starts_with("SILOS"))?
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_status_lists_the_cluster_and_a_dead_slave() {
    let mut procs = Procs::new("client_status");
    bounded(Duration::from_secs(90), async {
        let cluster = procs.start_cluster("", 2, None).await;
        let master = procs.ports(cluster.master).tcp;
        let slave0 = procs.ports(cluster.slaves[0]).tcp;
        let slave1 = procs.ports(cluster.slaves[1]).tcp;
        client_bin(master, &["counter", "add", "status", "1"]).await;
        client_bin(master, &["account", "follow", "ada", "grace"]).await;

        // Through a slave: it asks the master.
        let status = client_bin(slave0, &["status"]).await;
        assert!(
            !status.contains('\x1b'),
            "no ANSI through a pipe:\n{status}"
        );
        let row = silo_row(&status, &master.to_string()).unwrap_or_else(|| panic!("{status}"));
        assert!(row.starts_with("master") && row.contains("active"), "{row}");
        for slave in [slave0, slave1] {
            let row = silo_row(&status, &slave.to_string()).unwrap_or_else(|| panic!("{status}"));
            assert!(row.starts_with("slave") && row.contains("active"), "{row}");
        }
        for grain_type in grain_types() {
            assert!(
                status.contains(grain_type),
                "{grain_type} missing:\n{status}"
            );
        }
        for heading in ["GRAIN TYPES", "HOT GRAINS", "EVENTS"] {
            assert!(status.contains(heading), "{heading} missing:\n{status}");
        }
        assert!(status.contains("joined"), "the joins are events:\n{status}");

        procs.kill9(cluster.slaves[1]);
        let deadline = Instant::now() + DEATH;
        loop {
            let status = client_bin(master, &["status", "--interval", "200ms"]).await;
            let row = silo_row(&status, &slave1.to_string())
                .unwrap_or_else(|| panic!("the dead slave is still listed:\n{status}"));
            if row.contains("dead") {
                assert!(status.contains("died"), "a death is an event:\n{status}");
                break;
            }
            assert!(Instant::now() < deadline, "never shown dead:\n{status}");
        }
    })
    .await;
}
