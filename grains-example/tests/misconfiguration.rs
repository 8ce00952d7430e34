//! Every first-hour mistake answers within a few seconds, in one line that names the
//! address, key or flag to fix: the real `silo` and `client` binaries, started the way
//! a new user would start them.
//!
//! "Within 3 s" is what a person waits for, not a speed target: each test measures the
//! time to the answer and allows 3 s plus a second of process start-up on a busy
//! machine.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use support::*;
use tokio::time::Instant;

/// What a person waits for an answer, plus process start-up on a loaded CI machine.
const ANSWER: Duration = Duration::from_secs(4);

fn answered_within(started: Instant, what: &str) {
    let took = started.elapsed();
    assert!(took <= ANSWER, "{what} took {took:?}");
}

/// A UDP address nothing listens on (bound, then released).
fn dead_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A TCP address nothing listens on (bound, then released).
fn dead_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn silo_args(ports: Ports) -> Vec<String> {
    vec![
        "--listen".into(),
        ports.tcp.to_string(),
        "--udp".into(),
        ports.udp.to_string(),
    ]
}

/// Starts a slave (no `--role`) whose `--master` is an address nothing listens on, and
/// waits (within [`ANSWER`]) for its first line containing `needle`: the slave's index,
/// the dead master address, that line and when the slave was started.
async fn orphan_slave(procs: &mut Procs, needle: &str) -> (usize, SocketAddr, String, Instant) {
    let master = dead_udp();
    let mut args = silo_args(free_ports());
    args.extend(["--master".into(), master.to_string()]);
    let started = Instant::now();
    let slave = procs.spawn(SiloSpec::new("slave", &args));
    let line = procs.wait_for_line(slave, needle, started + ANSWER).await;
    (slave, master, line, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_without_role_infers_slave_and_says_so_first() {
    let mut procs = Procs::new("infer-role");
    bounded(Duration::from_secs(30), async {
        let (slave, _, line, _) = orphan_slave(&mut procs, "starting a").await;
        assert!(
            line.contains("starting a slave silo (slave because --master is given)"),
            "{line}"
        );
        let first = procs
            .log(slave)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(first, line, "the role is the first thing the log says");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_master_with_master_is_refused_in_one_line() {
    let procs = Procs::new("master-with-master");
    let master = dead_udp().to_string();
    let mut args = silo_args(free_ports());
    args.extend([
        "--role".into(),
        "master".into(),
        "--master".into(),
        master.clone(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = procs.run_silo(&args, &[]).await;
    answered_within(started, "refusing --role master --master");
    assert!(!out.status.success());
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(errors.len(), 1, "one line: {}", out.stderr);
    assert!(
        errors[0].contains("--role master with --master")
            && errors[0].contains(&master)
            && errors[0].contains("drop --role master"),
        "{}",
        errors[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_that_cannot_reach_its_master_says_so_once_per_back_off_step() {
    let mut procs = Procs::new("unreachable-master");
    bounded(Duration::from_secs(40), async {
        let (slave, master, line, started) =
            orphan_slave(&mut procs, "cannot reach the master").await;
        assert!(
            line.contains(&master.to_string()) && line.contains("--master names its --udp"),
            "{line}"
        );
        // Ten seconds of an unreachable master: a few lines, not one per heartbeat.
        let until = started + Duration::from_secs(10);
        tokio::time::sleep_until(until).await;
        let reports = procs
            .log(slave)
            .lines()
            .filter(|l| l.contains("cannot reach the master"))
            .count();
        assert!((1..=3).contains(&reports), "{}", procs.log(slave));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_with_the_wrong_key_is_told_it_has_the_wrong_key() {
    let mut procs = Procs::new("wrong-key");
    bounded(Duration::from_secs(60), async {
        let master_ports = free_ports();
        let mut args = silo_args(master_ports);
        args.extend(["--storage".into(), "memory".into()]);
        args.extend(["--cluster-key".into(), KEY.into()]);
        let master = procs.spawn(SiloSpec::new("master", &args).ports(master_ports).key(KEY));
        procs
            .wait_listening(master, Instant::now() + START)
            .await
            .expect("the master starts");

        let mut args = silo_args(free_ports());
        args.extend(["--master".into(), master_ports.udp.to_string()]);
        args.extend(["--cluster-key".into(), "not-the-key".into()]);
        let started = Instant::now();
        let slave = procs.spawn(SiloSpec::new("slave", &args));
        let line = procs
            .wait_for_line(slave, "wrong cluster key", started + ANSWER)
            .await;
        assert!(
            line.contains(&master_ports.udp.to_string()) && line.contains("--cluster-key"),
            "{line}"
        );
        tokio::time::sleep_until(started + Duration::from_secs(10)).await;
        let log = procs.log(slave);
        let lines = log.lines().count();
        assert!(lines <= 5, "{lines} log lines in 10 s:\n{log}");
        assert!(
            !log.contains("cannot reach the master"),
            "a wrong key is named as a wrong key:\n{log}"
        );

        // The client binary with the wrong key says so too.
        let out = run_client(&[
            "--gateway".into(),
            master_ports.tcp.to_string(),
            "--cluster-key".into(),
            "not-the-key".into(),
            "ping".into(),
        ])
        .await;
        assert!(!out.status.success());
        assert!(
            out.stderr
                .contains(&format!("cannot reach silo at {}", master_ports.tcp))
                && out.stderr.contains("wrong cluster key"),
            "{}",
            out.stderr
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pointed_at_a_dead_port_fails_within_the_connect_timeout() {
    let dead = dead_tcp();
    for (flags, limit) in [
        (vec![], ANSWER),
        (
            vec!["--connect-timeout".to_string(), "1s".to_string()],
            Duration::from_secs(2),
        ),
    ] {
        let mut args = vec!["--gateway".to_string(), dead.to_string()];
        args.extend(flags);
        args.push("ping".into());
        let started = Instant::now();
        let out = run_client(&args).await;
        let took = started.elapsed();
        assert!(took <= limit, "{args:?} took {took:?}");
        assert!(!out.status.success());
        assert_eq!(
            out.stderr.trim(),
            format!("error: cannot reach silo at {dead} (connection refused)"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_named() {
    let procs = Procs::new("address-in-use");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let free = free_ports();
    for (listen, udp_flag, named) in [
        (
            tcp_addr,
            free.udp,
            format!("cannot listen on TCP {tcp_addr}: address already in use"),
        ),
        (
            free.tcp,
            udp_addr,
            format!("cannot listen on UDP {udp_addr}: address already in use"),
        ),
    ] {
        let (listen, udp_flag) = (listen.to_string(), udp_flag.to_string());
        let args = [
            "--listen",
            &listen,
            "--udp",
            &udp_flag,
            "--storage",
            "memory",
        ];
        let started = Instant::now();
        let out = procs.run_silo(&args, &[]).await;
        answered_within(started, "a bind error");
        assert!(!out.status.success());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(&named), "{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_are_resolved_and_logs_are_plain_or_json() {
    let mut procs = Procs::new("host-names");
    bounded(Duration::from_secs(30), async {
        let ports = free_ports();
        let listen = format!("localhost:{}", ports.tcp.port());
        let udp = format!("localhost:{}", ports.udp.port());
        // NO_COLOR empty: colours would depend on the terminal alone, and stdout is a file.
        let args = ["--listen", &listen, "--udp", &udp, "--storage", "memory"];
        let text = procs.spawn(SiloSpec::new("text", &args).env("NO_COLOR", ""));
        let line = procs
            .wait_for_line(text, "silo started", Instant::now() + START)
            .await;
        assert!(line.contains(&format!(":{}", ports.tcp.port())), "{line}");
        let log = procs.log(text);
        assert!(!log.contains('\u{1b}'), "no ANSI escapes in a file:\n{log}");
        assert!(!log.contains("Some("), "no Debug dumps:\n{log}");
        procs.sigterm(text);
        procs
            .wait_exit(text, Instant::now() + Duration::from_secs(10))
            .await;

        let ports = free_ports();
        let (listen, udp) = (ports.tcp.to_string(), ports.udp.to_string());
        let args = [
            "--listen",
            &listen,
            "--udp",
            &udp,
            "--storage",
            "memory",
            "--log-format",
            "json",
        ];
        let json = procs.spawn(SiloSpec::new("json", &args));
        procs
            .wait_for_line(json, "silo started", Instant::now() + START)
            .await;
        for line in procs.log(json).lines() {
            assert!(
                line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":"),
                "not a JSON log line: {line}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_slave_leave_is_not_a_failure() {
    let mut procs = Procs::new("clean-leave");
    bounded(Duration::from_secs(60), async {
        let cluster = procs.start_cluster("leave", 1, None).await;
        let slave = cluster.slaves[0];
        procs.sigterm(slave);
        procs
            .wait_exit(slave, Instant::now() + Duration::from_secs(15))
            .await;
        procs
            .wait_for_line(
                cluster.master,
                "left",
                Instant::now() + Duration::from_secs(5),
            )
            .await;
        for (who, i) in [("master", cluster.master), ("slave", slave)] {
            let log = procs.log(i);
            assert!(
                !log.contains(" WARN ") && !log.contains(" ERROR ") && !log.contains("fencing"),
                "a graceful leave logs no warning at the {who}:\n{log}"
            );
        }
    })
    .await;
}
