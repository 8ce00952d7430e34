//! `client lock …`, `client var …` and `client beacon …` against a real cluster (a
//! master and two slaves, no cluster key): a lock acquired, refused to a second owner
//! while held, released and passed on with a higher token; a variable set and watched
//! (the watch prints the current value, then each change); a beacon armed and beating.
//! Helpers: [`support`].

mod support;

use std::time::Duration;

use granary_client::{Client, ClientConfig};
use granary_example::{VarWatchers, Variable};
use support::{bounded, client_bin, run_client, Procs};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_var_and_beacon_commands() {
    let mut procs = Procs::new("client-coord");
    bounded(Duration::from_secs(90), commands(&mut procs)).await;
}

async fn commands(procs: &mut Procs) {
    let cluster = procs.start_cluster("", 2, None).await;
    let gateway = procs.ports(cluster.master).tcp;
    let g = gateway.to_string();

    // Lock: acquire, a second owner waits in vain, release, the second gets a higher token.
    let first = client_bin(gateway, &["lock", "acquire", "jobs", "--owner", "a"]).await;
    assert_eq!(first, "1");
    let refused = run_client(
        &[
            "--gateway",
            &g,
            "lock",
            "acquire",
            "jobs",
            "--owner",
            "b",
            "--wait",
            "300ms",
        ]
        .map(String::from),
    )
    .await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("not acquired"),
        "{}",
        refused.stderr
    );
    let status = client_bin(gateway, &["lock", "status", "jobs"]).await;
    assert!(status.starts_with("held by a with token 1"), "{status}");
    assert!(
        !status.contains("waiter"),
        "b gave up and left the queue: {status}"
    );
    assert_eq!(
        client_bin(gateway, &["lock", "release", "jobs", "1"]).await,
        "true"
    );
    assert_eq!(
        client_bin(gateway, &["lock", "release", "jobs", "1"]).await,
        "false"
    );
    let status = client_bin(gateway, &["lock", "status", "jobs"]).await;
    assert_eq!(status, "free (last token 1)");
    let second = client_bin(gateway, &["lock", "acquire", "jobs", "--owner", "b"]).await;
    assert_eq!(second, "2");

    // Variable: set, then a watch sees the current value and the next two changes.
    assert_eq!(
        client_bin(gateway, &["var", "set", "config", "hello"]).await,
        "1"
    );
    assert_eq!(
        client_bin(gateway, &["var", "get", "config"]).await,
        "1 hello"
    );
    let watch_args = ["--gateway", &g, "var", "watch", "config", "--count", "2"].map(String::from);
    let watch = tokio::spawn(async move { run_client(&watch_args).await });
    let lib = Client::connect(ClientConfig::new([gateway])).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lib
        .grain::<Variable>("config")
        .ask(VarWatchers)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the watch never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client_bin(gateway, &["var", "set", "config", "two"]).await,
        "2"
    );
    let cas = run_client(
        &[
            "--gateway",
            &g,
            "var",
            "set",
            "config",
            "stale",
            "--if-version",
            "1",
        ]
        .map(String::from),
    )
    .await;
    assert!(
        !cas.status.success(),
        "compare-and-set with a stale version: {cas:?}"
    );
    assert_eq!(
        client_bin(
            gateway,
            &["var", "set", "config", "three", "--if-version", "2"]
        )
        .await,
        "3"
    );
    let watched = watch.await.unwrap();
    assert!(watched.status.success(), "{watched:?}");
    assert_eq!(watched.stdout, "1 hello\n2 two\n3 three\n");
    // The watch unsubscribed on its way out.
    let left = lib
        .grain::<Variable>("config")
        .ask(VarWatchers)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");

    // Beacon: armed with a 1 s reminder, it beats.
    assert_eq!(
        client_bin(gateway, &["beacon", "arm", "cli", "1s"]).await,
        "armed"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let beats = client_bin(gateway, &["beacon", "beats", "cli"]).await;
        if beats.lines().count() >= 2 {
            for line in beats.lines() {
                let fields: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
                assert_eq!(fields.len(), 3, "{line}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "no beats: {beats:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        client_bin(gateway, &["beacon", "disarm", "cli"]).await,
        "true"
    );
    lib.close().await;
    for &i in std::iter::once(&cluster.master).chain(&cluster.slaves) {
        procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
    }
}
