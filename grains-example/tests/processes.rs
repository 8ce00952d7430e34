//! Multi-process tests: the real `silo` and `client` binaries on 127.0.0.1.
//!
//! Every test owns a [`Procs`] guard: a temporary directory (embedded store, one log file
//! per process) and every child it spawned. Dropping the guard SIGKILLs the children that
//! are still running and removes the directory; when the test failed, the tail of every
//! log is printed first. Ports are picked by binding `127.0.0.1:0` and released just
//! before the silo binds them, so a cluster start is retried once with fresh ports if a
//! silo exits early (a port was taken in between).
//!
//! Which slave hosts which grain is observed from the outside through the silos' logs:
//! children run with `granary_runtime::activation=trace`, which logs one
//! `activated grain=TYPE/KEY` line per activation.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_client::{Client, ClientConfig, ConnectError};
use granary_example::{Add, Counter, Get, Greeter, Hello};
use granary_net::transport::{handshake, ClusterKey};
use granary_proto::frame::{Frame, FrameCodec, Request, Response, FRAME_VERSION};
use granary_proto::packet::{
    Packet, PacketBody, PacketCodec, SiloId, DEFAULT_MAX_PACKET, FLAG_SIGNED, MAGIC,
};
use granary_proto::CallError;
use granary_runtime::Grain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

const SILO: &str = env!("CARGO_BIN_EXE_silo");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");
/// The cluster key of the tests that use one.
const KEY: &str = "granary-process-tests";
/// Time allowed for a whole cluster (master and slaves) to start and join.
const START: Duration = Duration::from_secs(20);
/// Environment variables the binaries read as flags; cleared so the tests are hermetic.
const FLAG_VARS: &[&str] = &[
    "GRANARY_ROLE",
    "GRANARY_LISTEN",
    "GRANARY_UDP",
    "GRANARY_ADVERTISE",
    "GRANARY_ADVERTISE_UDP",
    "GRANARY_MASTER",
    "GRANARY_STORAGE",
    "GRANARY_IDLE_TIMEOUT",
    "GRANARY_HEARTBEAT_INTERVAL",
    "GRANARY_MISSED_HEARTBEATS",
    "GRANARY_CLUSTER_KEY",
    "GRANARY_GATEWAY",
    "GRANARY_TIMEOUT",
];

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A silo's TCP (grain traffic) and UDP (membership) addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ports {
    tcp: SocketAddr,
    udp: SocketAddr,
}

/// Two ports the kernel just handed out on 127.0.0.1, released for a silo to bind.
fn free_ports() -> Ports {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    Ports {
        tcp: tcp.local_addr().unwrap(),
        udp: udp.local_addr().unwrap(),
    }
}

/// How to start one silo process.
#[derive(Clone, Debug)]
struct SiloSpec {
    name: String,
    ports: Ports,
    /// `None`: a master; `Some(udp)`: a slave of the master at `udp`.
    master: Option<SocketAddr>,
    key: Option<String>,
    /// `--storage`, on a master.
    storage: Option<String>,
}

impl SiloSpec {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--role".to_owned(),
            if self.master.is_some() {
                "slave"
            } else {
                "master"
            }
            .to_owned(),
            "--listen".to_owned(),
            self.ports.tcp.to_string(),
            "--udp".to_owned(),
            self.ports.udp.to_string(),
        ];
        if let Some(master) = self.master {
            args.extend(["--master".to_owned(), master.to_string()]);
        }
        if let Some(storage) = &self.storage {
            args.extend(["--storage".to_owned(), storage.clone()]);
        }
        if let Some(key) = &self.key {
            args.extend(["--cluster-key".to_owned(), key.clone()]);
        }
        args
    }
}

/// One spawned silo process.
struct Proc {
    spec: SiloSpec,
    child: Child,
    /// Its stdout (the tracing log) and stderr.
    log: PathBuf,
    /// Set once the process has been reaped.
    status: Option<ExitStatus>,
}

/// The guard: a temporary directory and every silo process a test started.
struct Procs {
    test: &'static str,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
}

impl Procs {
    fn new(test: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("granary-{test}-"))
            .tempdir()
            .expect("create a temporary directory");
        Procs {
            test,
            dir,
            procs: Vec::new(),
        }
    }

    /// `--storage` for a master: the embedded store in this test's directory.
    fn store(&self) -> String {
        format!("embedded:{}", self.dir.path().join("grains.redb").display())
    }

    fn spec(&self, name: &str, ports: Ports, master: Option<Ports>, key: Option<&str>) -> SiloSpec {
        SiloSpec {
            name: name.to_owned(),
            ports,
            master: master.map(|m| m.udp),
            key: key.map(str::to_owned),
            storage: master.is_none().then(|| self.store()),
        }
    }

    /// Starts a silo; its output goes to `NAME.RUN.log` in the test directory.
    fn spawn(&mut self, spec: SiloSpec) -> usize {
        let run = self
            .procs
            .iter()
            .filter(|p| p.spec.name == spec.name)
            .count()
            + 1;
        let log = self.dir.path().join(format!("{}.{run}.log", spec.name));
        let out = File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file handle");
        let mut command = Command::new(SILO);
        command
            .args(spec.args())
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,granary_runtime::activation=trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for var in FLAG_VARS {
            command.env_remove(var);
        }
        let child = command.spawn().expect("spawn the silo binary");
        self.procs.push(Proc {
            spec,
            child,
            log,
            status: None,
        });
        self.procs.len() - 1
    }

    /// Starts the silo `i` again with the same flags (same ports, same key), as a new
    /// process with its own log. `i` must have exited.
    fn restart(&mut self, i: usize) -> usize {
        assert!(
            !self.alive(i),
            "{} is still running",
            self.procs[i].spec.name
        );
        let spec = self.procs[i].spec.clone();
        self.spawn(spec)
    }

    fn name(&self, i: usize) -> &str {
        &self.procs[i].spec.name
    }

    fn ports(&self, i: usize) -> Ports {
        self.procs[i].spec.ports
    }

    /// Reaps the process if it has exited; its exit status if so.
    fn try_status(&mut self, i: usize) -> Option<ExitStatus> {
        let proc = &mut self.procs[i];
        if proc.status.is_none() {
            proc.status = proc.child.try_wait().expect("try_wait on a silo");
        }
        proc.status
    }

    fn alive(&mut self, i: usize) -> bool {
        self.try_status(i).is_none()
    }

    /// `kill -9`, and reap it (its sockets are closed when this returns). Never panics:
    /// the guard's `Drop` uses it.
    fn kill9(&mut self, i: usize) {
        let proc = &mut self.procs[i];
        if proc.status.is_none() {
            let _ = proc.child.kill();
            proc.status = proc.child.wait().ok();
        }
    }

    /// `kill -TERM`: a graceful shutdown.
    fn sigterm(&mut self, i: usize) {
        assert!(self.alive(i), "{} already exited", self.name(i));
        let pid = libc::pid_t::try_from(self.procs[i].child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
        // not yet reaped, so it cannot have been recycled.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill -TERM {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits (polling) until process `i` exits; panics at `deadline`.
    async fn wait_exit(&mut self, i: usize, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.try_status(i) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in time",
                self.name(i)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.procs[i].log).unwrap_or_default()
    }

    /// Keys of the grains of type `G` that process `i` activated (per its log).
    fn activated<G: Grain>(&self, i: usize) -> HashSet<String> {
        let marker = format!("activation: activated grain={}/", G::TYPE_NAME);
        self.log(i)
            .lines()
            .filter_map(|line| {
                let at = line.find(&marker)?;
                line[at + marker.len()..]
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Fails early with the log when `i` exited, instead of timing out later.
    fn check_alive(&mut self, i: usize) -> Result<(), String> {
        match self.try_status(i) {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited early ({status}):\n{}",
                self.name(i),
                tail(&self.log(i), 30)
            )),
        }
    }

    /// Waits until the silo `i` answers pings on its TCP port.
    async fn wait_listening(&mut self, i: usize, deadline: Instant) -> Result<Client, String> {
        let gateway = self.ports(i).tcp;
        let key = self.procs[i].spec.key.clone();
        loop {
            self.check_alive(i)?;
            let mut config =
                ClientConfig::new([gateway]).with_connect_timeout(Duration::from_millis(250));
            if let Some(key) = &key {
                config = config.with_cluster_key(key.as_bytes());
            }
            if let Ok(client) = Client::connect(config).await {
                return Ok(client);
            }
            if Instant::now() >= deadline {
                panic!("{} does not answer on {gateway}", self.name(i));
            }
        }
    }

    /// Waits until the slave `i` has joined: a grain call that uses it as the gateway
    /// works, which needs the master's directory, which a slave reaches only once
    /// welcomed (and the master lists it as a live slave before it sends the WELCOME).
    async fn wait_joined(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        let client = self.wait_listening(i, deadline).await?;
        let probe = client.grain::<Greeter>(format!("probe-{}", self.name(i)));
        loop {
            self.check_alive(i)?;
            match probe
                .ask(Hello("probe".into()))
                .timeout(Duration::from_millis(500))
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    panic!("{} never joined the cluster: {e}", self.name(i))
                }
                Err(_) => {}
            }
        }
        client.close().await;
        Ok(())
    }

    /// Starts a master and `slaves` slaves with `key` on fresh ports and waits until all
    /// the slaves have joined. Tries once more with other ports if a silo exits early.
    async fn start_cluster(&mut self, prefix: &str, slaves: usize, key: Option<&str>) -> Cluster {
        for attempt in 1..=2 {
            let first = self.procs.len();
            match self.try_start_cluster(prefix, slaves, key).await {
                Ok(cluster) => return cluster,
                Err(e) if attempt == 1 => {
                    eprintln!("cluster start failed, retrying on other ports: {e}");
                    for i in first..self.procs.len() {
                        self.kill9(i);
                    }
                }
                Err(e) => panic!("cluster start failed twice: {e}"),
            }
        }
        unreachable!()
    }

    async fn try_start_cluster(
        &mut self,
        prefix: &str,
        slaves: usize,
        key: Option<&str>,
    ) -> Result<Cluster, String> {
        let deadline = Instant::now() + START;
        let master_ports = free_ports();
        let master = self.spawn(self.spec(&format!("{prefix}master"), master_ports, None, key));
        // The master first, so the slaves' first HANDSHAKE is answered.
        self.wait_listening(master, deadline).await?.close().await;
        let mut cluster = Cluster {
            master,
            slaves: Vec::new(),
        };
        for s in 0..slaves {
            let spec = self.spec(
                &format!("{prefix}slave{s}"),
                free_ports(),
                Some(master_ports),
                key,
            );
            cluster.slaves.push(self.spawn(spec));
        }
        for &slave in &cluster.slaves {
            self.wait_joined(slave, deadline).await?;
        }
        Ok(cluster)
    }

    /// Starts one more slave of `cluster`'s master and waits until it joined.
    async fn add_slave(&mut self, cluster: &mut Cluster, name: &str, key: Option<&str>) -> usize {
        let master = self.ports(cluster.master);
        let slave = self.spawn(self.spec(name, free_ports(), Some(master), key));
        self.wait_joined(slave, Instant::now() + START)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        cluster.slaves.push(slave);
        slave
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
        if std::thread::panicking() {
            eprintln!(
                "==== {}: silo logs (from {}, removed now)",
                self.test,
                self.dir.path().display()
            );
            for proc in &self.procs {
                let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
                eprintln!(
                    "---- {} {:?} ({:?})\n{}",
                    proc.spec.name,
                    proc.spec.ports,
                    proc.status,
                    tail(&log, 120)
                );
            }
        }
        // The TempDir field is dropped (removed) after this.
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Indices (into [`Procs`]) of a master and its slaves.
#[derive(Debug)]
struct Cluster {
    master: usize,
    slaves: Vec<usize>,
}

/// Runs a test body with a deadline; `procs` outlives it, so a timeout still panics with
/// the guard alive and the logs get printed.
async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("test did not finish within {limit:?}");
    }
}

/// Runs the client binary; returns its stdout, trimmed. Panics if it fails or hangs.
async fn client_bin(gateway: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new(CLIENT);
    command
        .args(["--gateway", &gateway.to_string(), "--timeout", "5s"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in FLAG_VARS {
        command.env_remove(var);
    }
    let shown = format!("client --gateway {gateway} {}", args.join(" "));
    let mut child = command.spawn().expect("spawn the client binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{shown}` hung");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The output is a line or two: it fits the pipe, so reading after exit is fine.
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "`{shown}` failed ({status}): {err}");
    out.trim().to_owned()
}

/// A library client with the tests' cluster key.
async fn connect(gateways: &[SocketAddr]) -> Client {
    Client::connect(
        ClientConfig::new(gateways.iter().copied())
            .with_connect_timeout(Duration::from_secs(5))
            .with_cluster_key(KEY.as_bytes()),
    )
    .await
    .expect("connect a client")
}

/// Reads counter `key`, retrying (until `deadline`) while it is not served.
async fn get_counter(client: &Client, key: &str, deadline: Instant) -> i64 {
    let counter = client.grain::<Counter>(key);
    loop {
        match counter.ask(Get).timeout(Duration::from_millis(500)).await {
            Ok(value) => return value,
            Err(e) => assert!(
                Instant::now() < deadline,
                "counter {key} not served in time: {e}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. The README walkthrough, with the client binary
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_works() {
    let mut procs = Procs::new("walkthrough");
    bounded(Duration::from_secs(60), walkthrough(&mut procs)).await;
}

async fn walkthrough(procs: &mut Procs) {
    // As in the README: no cluster key (membership packets unsigned).
    let cluster = procs.start_cluster("", 2, None).await;
    let gateway = procs.ports(cluster.master).tcp;

    let pong = client_bin(gateway, &["ping"]).await;
    assert!(pong.starts_with(&format!("pong from {gateway}")), "{pong}");
    let greeting = client_bin(gateway, &["greet", "world", "Ada"]).await;
    assert!(greeting.starts_with("Hello, Ada!"), "{greeting}");
    assert_eq!(
        client_bin(gateway, &["counter", "add", "alice", "5"]).await,
        "5"
    );
    assert_eq!(
        client_bin(gateway, &["counter", "add", "alice", "2"]).await,
        "7"
    );
    assert_eq!(client_bin(gateway, &["counter", "get", "alice"]).await, "7");
    assert_eq!(
        client_bin(gateway, &["account", "follow", "alice", "bob"]).await,
        "1"
    );
    assert_eq!(
        client_bin(gateway, &["account", "followers", "bob"]).await,
        "1"
    );
    // A slave works as a gateway too.
    let slave_gateway = procs.ports(cluster.slaves[0]).tcp;
    assert_eq!(
        client_bin(slave_gateway, &["counter", "get", "alice"]).await,
        "7"
    );

    // SIGTERM to the master stops the whole cluster, every process with status 0.
    let started = Instant::now();
    procs.sigterm(cluster.master);
    let deadline = started + Duration::from_secs(15);
    for &i in std::iter::once(&cluster.master).chain(&cluster.slaves) {
        let status = procs.wait_exit(i, deadline).await;
        assert!(status.success(), "{} exited with {status}", procs.name(i));
    }
    eprintln!(
        "walkthrough: SIGTERM to the master stopped the cluster in {:?}",
        started.elapsed()
    );

    // A new cluster on the same store finds the state.
    let again = procs.start_cluster("again-", 1, None).await;
    let gateway = procs.ports(again.master).tcp;
    assert_eq!(client_bin(gateway, &["counter", "get", "alice"]).await, "7");
    assert_eq!(
        client_bin(gateway, &["account", "followers", "bob"]).await,
        "1"
    );
}

// ---------------------------------------------------------------------------------------
// 2. kill -9 of a slave under load
// ---------------------------------------------------------------------------------------

/// What the load saw for one counter.
#[derive(Default)]
struct KeyStats {
    /// Increments acknowledged with `Ok`.
    acked: AtomicU64,
    /// Increments whose outcome is unknown (`Timeout`, `Lost`, or an unexpected error).
    unknown: AtomicU64,
}

struct Load {
    keys: Vec<String>,
    stats: Vec<KeyStats>,
    /// Calls that certainly were not delivered (and are simply retried).
    not_delivered: AtomicU64,
    /// How many calls ended with each kind of error.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Errors other than not-delivered, `Timeout` and `Lost`.
    unexpected: Mutex<Vec<String>>,
    /// Replies that contradict the acknowledged history of their counter.
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self, k: usize) -> u64 {
        self.stats[k].acked.load(Ordering::SeqCst)
    }

    fn unknown(&self, k: usize) -> u64 {
        self.stats[k].unknown.load(Ordering::SeqCst)
    }

    /// Books a failed increment of counter `k`.
    async fn on_error(&self, k: usize, e: CallError) {
        match e {
            CallError::Timeout | CallError::Lost(_) => {
                self.stats[k].unknown.fetch_add(1, Ordering::SeqCst);
            }
            e if e.is_not_delivered() => {
                self.not_delivered.fetch_add(1, Ordering::SeqCst);
                // Not delivered (e.g. no directory entry yet): a short pause.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            e => {
                self.stats[k].unknown.fetch_add(1, Ordering::SeqCst);
                self.unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{}: {e:?}", self.keys[k]));
            }
        }
    }

    /// One worker: increments its counters (every `workers`-th key) round-robin, one
    /// call at a time, so it alone writes them and can check every reply.
    async fn run(self: Arc<Self>, client: Client, worker: usize, workers: usize) {
        let mine: Vec<usize> = (worker..self.keys.len()).step_by(workers).collect();
        while !self.stop.load(Ordering::SeqCst) {
            for &k in &mine {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let key = &self.keys[k];
                let stats = &self.stats[k];
                match client
                    .grain::<Counter>(key)
                    .ask(Add(1))
                    .timeout(Duration::from_secs(2))
                    .await
                {
                    Ok(value) => {
                        let acked = stats.acked.fetch_add(1, Ordering::SeqCst) + 1;
                        let unknown = stats.unknown.load(Ordering::SeqCst);
                        let value = u64::try_from(value).unwrap_or(0);
                        if value < acked || value > acked + unknown {
                            self.violations.lock().unwrap().push(format!(
                                "{key}: Add replied {value} after {acked} acked and {unknown} unknown increments"
                            ));
                        }
                    }
                    Err(e) => {
                        let kind = format!("{e:?}");
                        let kind = kind.split('(').next().unwrap_or_default().to_owned();
                        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
                        self.on_error(k, e).await;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_a_slave_under_load() {
    let mut procs = Procs::new("kill9");
    bounded(Duration::from_secs(60), kill_under_load(&mut procs)).await;
}

async fn kill_under_load(procs: &mut Procs) {
    const KEYS: usize = 60;
    const WORKERS: usize = 4;
    let cluster = procs.start_cluster("", 3, Some(KEY)).await;
    let gateway = procs.ports(cluster.master).tcp;

    let load = Arc::new(Load {
        keys: (0..KEYS).map(|i| format!("load-{i}")).collect(),
        stats: (0..KEYS).map(|_| KeyStats::default()).collect(),
        not_delivered: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        unexpected: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let load_client = connect(&[gateway]).await;
    let load_started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(load.clone().run(load_client.clone(), w, WORKERS)))
        .collect();

    // At least a second of load, and every counter placed and acknowledged once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while load_started.elapsed() < Duration::from_secs(1) || (0..KEYS).any(|k| load.acked(k) == 0) {
        assert!(
            Instant::now() < deadline,
            "the load did not touch every counter"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The victim: the slave hosting the most counters.
    let placement: Vec<(usize, HashSet<String>)> = cluster
        .slaves
        .iter()
        .map(|&s| (s, procs.activated::<Counter>(s)))
        .collect();
    let spread: Vec<usize> = placement.iter().map(|(_, keys)| keys.len()).collect();
    assert_eq!(
        spread.iter().sum::<usize>(),
        KEYS,
        "every counter is active exactly once: {spread:?}"
    );
    let (victim, lost) = placement
        .iter()
        .max_by_key(|(_, keys)| keys.len())
        .cloned()
        .unwrap();
    assert!(!lost.is_empty());
    let acked_before = (0..KEYS).map(|k| load.acked(k)).sum::<u64>();

    procs.kill9(victim);
    let killed = Instant::now();

    // Failover: every counter answers a Get again (the probe client has a cold cache).
    let probe = connect(&[gateway]).await;
    let deadline = killed + Duration::from_secs(15);
    let served: Vec<_> = load
        .keys
        .iter()
        .map(|key| {
            let (probe, key) = (probe.clone(), key.clone());
            tokio::spawn(async move {
                get_counter(&probe, &key, deadline).await;
                killed.elapsed()
            })
        })
        .collect();
    let mut failover = Duration::ZERO;
    for task in served {
        failover = failover.max(task.await.unwrap());
    }
    eprintln!(
        "kill -9 failover: all {KEYS} counters served again {failover:?} after the kill of {} \
         ({} counters lost their host; placement {spread:?}; heartbeat 1 s × 3)",
        procs.name(victim),
        lost.len()
    );
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    // Load continues on the new hosts.
    let acked_at_recovery: Vec<u64> = (0..KEYS).map(|k| load.acked(k)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(2)
        || (0..KEYS).any(|k| load.acked(k) <= acked_at_recovery[k])
    {
        assert!(
            Instant::now() < deadline,
            "some counters accept no increments after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("a load worker did not stop")
            .unwrap();
    }

    // Every acknowledged increment is still there, and nothing was applied twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lost_acks = Vec::new();
    let (mut acked, mut unknown) = (0, 0);
    for (k, key) in load.keys.iter().enumerate() {
        let value = u64::try_from(get_counter(&probe, key, deadline).await).unwrap();
        let (a, u) = (load.acked(k), load.unknown(k));
        acked += a;
        unknown += u;
        if value < a || value > a + u {
            lost_acks.push(format!("{key}: value {value}, acked {a}, unknown {u}"));
        }
    }
    eprintln!(
        "kill -9 load: {acked} acked increments ({acked_before} before the kill), {unknown} unknown, \
         {} not delivered; errors by kind {:?}",
        load.not_delivered.load(Ordering::SeqCst),
        load.errors.lock().unwrap()
    );
    assert!(
        lost_acks.is_empty(),
        "acked <= value <= acked + unknown violated: {lost_acks:#?}"
    );
    let violations = load.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "replies contradicting the history: {violations:#?}"
    );
    let unexpected = load.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "unexpected call errors: {unexpected:#?}"
    );
    for &i in std::iter::once(&cluster.master).chain(&cluster.slaves) {
        if i != victim {
            procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // One activation per counter: the victim's counters were activated again on exactly
    // one survivor, the others never moved.
    let survivors: Vec<HashSet<String>> = cluster
        .slaves
        .iter()
        .filter(|&&s| s != victim)
        .map(|&s| procs.activated::<Counter>(s))
        .collect();
    for key in &load.keys {
        let hosts = survivors.iter().filter(|keys| keys.contains(key)).count();
        assert_eq!(hosts, 1, "{key} was activated on {hosts} surviving slaves");
    }
    load_client.close().await;
    probe.close().await;
}

// ---------------------------------------------------------------------------------------
// 3. SIGTERM of one slave
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_slave_hands_its_grains_over_with_their_state() {
    let mut procs = Procs::new("slave-sigterm");
    bounded(Duration::from_secs(60), slave_sigterm(&mut procs)).await;
}

async fn slave_sigterm(procs: &mut Procs) {
    const KEYS: i64 = 30;
    let cluster = procs.start_cluster("", 2, Some(KEY)).await;
    let client = connect(&[procs.ports(cluster.master).tcp]).await;
    for i in 0..KEYS {
        let value = client
            .grain::<Counter>(format!("t-{i}"))
            .ask(Add(i + 1))
            .await
            .unwrap();
        assert_eq!(value, i + 1);
    }
    let (victim, heir) = {
        let (a, b) = (cluster.slaves[0], cluster.slaves[1]);
        if procs.activated::<Counter>(a).len() >= procs.activated::<Counter>(b).len() {
            (a, b)
        } else {
            (b, a)
        }
    };
    let handed_over = procs.activated::<Counter>(victim);
    assert!(!handed_over.is_empty());

    procs.sigterm(victim);
    let status = procs
        .wait_exit(victim, Instant::now() + Duration::from_secs(10))
        .await;
    assert!(status.success(), "the slave exited with {status}");
    let exited = Instant::now();

    // Its grains are served by the other slave, with their state, without waiting for
    // the 3 s lease: the master acted on the slave's SHUTDOWN.
    let deadline = exited + Duration::from_secs(10);
    let reads: Vec<_> = (0..KEYS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { get_counter(&client, &format!("t-{i}"), deadline).await })
        })
        .collect();
    for (i, read) in (0..KEYS).zip(reads) {
        assert_eq!(read.await.unwrap(), i + 1, "t-{i} lost its state");
    }
    let took = exited.elapsed();
    eprintln!(
        "slave SIGTERM: its {} counters were served again {took:?} after it exited",
        handed_over.len()
    );
    assert!(
        took < Duration::from_millis(2500),
        "hand-over took {took:?}, as long as a lease"
    );
    let left = format!("slave left slave={}", procs.ports(victim).tcp);
    assert!(
        procs.log(cluster.master).contains(&left),
        "the master did not log `{left}`"
    );
    let on_heir = procs.activated::<Counter>(heir);
    assert!(
        handed_over.is_subset(&on_heir),
        "not every grain moved to the remaining slave"
    );
    // New grains go to the remaining slave only.
    for i in 0..10 {
        client
            .grain::<Counter>(format!("after-{i}"))
            .ask(Add(1))
            .await
            .unwrap();
    }
    let on_heir = procs.activated::<Counter>(heir);
    assert!((0..10).all(|i| on_heir.contains(&format!("after-{i}"))));
    assert!(procs.alive(cluster.master) && procs.alive(heir));
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// 4. Hostile datagrams and frames
// ---------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A frame with a correct length prefix around `version` and `body`.
fn raw_frame(version: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 1).unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.push(version);
    frame.extend_from_slice(body);
    frame
}

/// A raw connection to `addr` that has passed the cluster-key handshake.
async fn authenticated(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let key = ClusterKey::new(KEY.as_bytes()).unwrap();
    handshake::respond(&mut stream, &key)
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    stream
}

/// Sends `bytes` on a new authenticated connection to `addr` and expects the silo to
/// close it.
async fn expect_rejected(addr: SocketAddr, what: &str, bytes: &[u8]) {
    let mut stream = authenticated(addr).await;
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{addr} kept the connection open after {what}"
    );
}

/// A PING frame over a connection that skips the handshake is never answered: the
/// silo challenges, gets no valid answer, and closes.
async fn expect_unauthenticated_refused(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let ping = FrameCodec::default()
        .encode_to_vec(&Frame::Request {
            id: 7,
            body: Request::Ping,
        })
        .unwrap();
    stream.write_all(&ping).await.unwrap();
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{addr} kept an unauthenticated connection open"
    );
    assert!(
        seen.starts_with(&handshake::CHALLENGE_MAGIC),
        "{addr} sent no challenge"
    );
    // Only the challenge (and, if the silo read a full bad answer, its DENY): no PONG.
    let challenge_len = handshake::CHALLENGE_MAGIC.len() + handshake::NONCE_LEN;
    assert!(
        seen.len() == challenge_len || seen[challenge_len..] == handshake::DENY_MAGIC,
        "{addr} answered an unauthenticated request: {seen:?}"
    );
}

/// A PING frame over an authenticated raw connection must be answered with PONG.
async fn raw_ping(addr: SocketAddr) {
    let mut stream = authenticated(addr).await;
    let request = Frame::Request {
        id: 42,
        body: Request::Ping,
    };
    stream
        .write_all(&FrameCodec::default().encode_to_vec(&request).unwrap())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(body[0], FRAME_VERSION);
        granary_proto::codec::decode::<Frame>(&body[1..]).unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("{addr} did not answer a raw PING"));
    assert_eq!(
        answer,
        Frame::Response {
            id: 42,
            body: Response::Pong
        }
    );
}

/// Datagrams the silo must drop, each with what it is.
fn bad_datagrams(fake: SiloId) -> Vec<(&'static str, Vec<u8>)> {
    let wrong = PacketCodec::new(Some(b"wrong"), DEFAULT_MAX_PACKET).unwrap();
    let unsigned = PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap();
    let right = PacketCodec::new(Some(KEY.as_bytes()), DEFAULT_MAX_PACKET).unwrap();
    let handshake = |seq| Packet {
        from: fake,
        seq,
        body: PacketBody::Handshake,
    };
    let mut tampered = right.encode(&handshake(10)).unwrap();
    tampered[MAGIC.len() + 3] ^= 0x01;
    let mut other_version = right.encode(&handshake(11)).unwrap();
    other_version[3] = MAGIC[3].wrapping_add(1);
    let mut unknown_flags = right.encode(&handshake(12)).unwrap();
    unknown_flags[MAGIC.len()] = FLAG_SIGNED | 0x80;
    let mut magic_then_noise = MAGIC.to_vec();
    magic_then_noise.push(FLAG_SIGNED);
    magic_then_noise.extend(noise(3, 100));
    vec![
        ("random garbage", noise(1, 300)),
        ("an empty datagram", Vec::new()),
        ("a 20 KiB datagram", noise(2, 20 * 1024)),
        (
            "a HANDSHAKE signed with the wrong key",
            wrong.encode(&handshake(1)).unwrap(),
        ),
        (
            "an unsigned HANDSHAKE",
            unsigned.encode(&handshake(2)).unwrap(),
        ),
        ("a HANDSHAKE with a flipped body bit", tampered),
        ("a HANDSHAKE of another version", other_version),
        ("a HANDSHAKE with unknown flags", unknown_flags),
        ("the magic followed by noise", magic_then_noise),
        (
            "a truncated signed HANDSHAKE",
            right.encode(&handshake(13)).unwrap()[..20].to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_and_frames_leave_the_silo_serving() {
    let mut procs = Procs::new("bad-input");
    bounded(Duration::from_secs(60), bad_input(&mut procs)).await;
}

async fn bad_input(procs: &mut Procs) {
    let mut cluster = procs.start_cluster("", 1, Some(KEY)).await;
    let master = procs.ports(cluster.master);
    let slave = procs.ports(cluster.slaves[0]);

    // --- UDP, from a fake silo whose addresses the test holds.
    let fake_udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = SiloId::new(
        fake_tcp.local_addr().unwrap(),
        fake_udp.local_addr().unwrap(),
        SiloId::generation_now(),
    );
    for (what, datagram) in bad_datagrams(fake) {
        for target in [master.udp, slave.udp] {
            fake_udp
                .send_to(&datagram, target)
                .await
                .unwrap_or_else(|e| panic!("sending {what}: {e}"));
        }
    }
    // A master admits a HANDSHAKE with a WELCOME at once: nothing may come back.
    let mut buf = vec![0u8; 65_536];
    if let Ok(Ok((len, from))) =
        tokio::time::timeout(Duration::from_secs(1), fake_udp.recv_from(&mut buf)).await
    {
        panic!("a bad datagram was answered by {from} with {len} bytes");
    }

    for i in [cluster.master, cluster.slaves[0]] {
        assert!(
            procs.log(i).contains("dropped membership datagram"),
            "{} logged no dropped datagram: did the packets arrive?",
            procs.name(i)
        );
    }

    // --- TCP, against the master and the slave.
    let mut hanging = Vec::new();
    for addr in [master.tcp, slave.tcp] {
        expect_unauthenticated_refused(addr).await;
        raw_ping(addr).await;
        expect_rejected(addr, "a u32::MAX length prefix", &u32::MAX.to_be_bytes()).await;
        expect_rejected(addr, "a zero length prefix", &0u32.to_be_bytes()).await;
        expect_rejected(
            addr,
            "a frame of another version",
            &raw_frame(FRAME_VERSION + 1, b"hello"),
        )
        .await;
        expect_rejected(
            addr,
            "an undecodable frame body",
            &raw_frame(FRAME_VERSION, &noise(4, 64)),
        )
        .await;
        // Garbage whose first four bytes make a prefix above the 8 MiB cap.
        let mut garbage = noise(5, 512);
        garbage[0] = 0xff;
        expect_rejected(addr, "garbage", &garbage).await;
        // Half a frame, then silence: the connection just waits, and must not hold up
        // anyone else.
        let mut half = authenticated(addr).await;
        let frame = FrameCodec::default()
            .encode_to_vec(&Frame::Request {
                id: 1,
                body: Request::Ping,
            })
            .unwrap();
        half.write_all(&frame[..frame.len() / 2]).await.unwrap();
        let mut declared_large = authenticated(addr).await;
        declared_large
            .write_all(&(1u32 << 20).to_be_bytes())
            .await
            .unwrap();
        declared_large.write_all(&[FRAME_VERSION]).await.unwrap();
        hanging.push(half);
        hanging.push(declared_large);
        raw_ping(addr).await;
    }

    // --- The cluster still serves, through both gateways.
    assert!(procs.alive(cluster.master), "the master died");
    assert!(procs.alive(cluster.slaves[0]), "the slave died");
    for gateway in [master.tcp, slave.tcp] {
        let client = connect(&[gateway]).await;
        for i in 0..10 {
            let value = client
                .grain::<Counter>(format!("after-{i}"))
                .ask(Add(1))
                .timeout(Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("call through {gateway} failed: {e}"));
            assert!(value >= 1);
        }
        client.close().await;
    }
    // And a new slave can still join.
    let newcomer = procs.add_slave(&mut cluster, "slave-late", Some(KEY)).await;
    assert!(procs.alive(newcomer));

    // Control: the same HANDSHAKE correctly signed is answered with a WELCOME, so the
    // packets above were dropped for what was wrong with them, not for being malformed.
    let right = PacketCodec::new(Some(KEY.as_bytes()), DEFAULT_MAX_PACKET).unwrap();
    let handshake = Packet {
        from: fake,
        seq: 100,
        body: PacketBody::Handshake,
    };
    fake_udp
        .send_to(&right.encode(&handshake).unwrap(), master.udp)
        .await
        .unwrap();
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), fake_udp.recv_from(&mut buf))
        .await
        .expect("no WELCOME for a correctly signed HANDSHAKE")
        .unwrap();
    assert_eq!(from, master.udp);
    let welcome = right.decode(&buf[..len]).unwrap();
    match welcome.body {
        PacketBody::Welcome { members, .. } => {
            assert!(
                members.iter().any(|m| m.id == fake),
                "the WELCOME does not list the newcomer"
            );
        }
        other => panic!("expected a WELCOME, got {}", other.name()),
    }
    // The fake leaves at once, before anything is placed on it.
    let bye = Packet {
        from: fake,
        seq: 101,
        body: PacketBody::Shutdown,
    };
    fake_udp
        .send_to(&right.encode(&bye).unwrap(), master.udp)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = format!("slave left slave={}", fake.tcp);
    while !procs.log(cluster.master).contains(&left) {
        assert!(
            Instant::now() < deadline,
            "the master did not see the fake silo leave"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(procs.alive(cluster.master));
    drop(hanging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_with_the_wrong_cluster_key_never_joins() {
    let mut procs = Procs::new("wrong-key");
    bounded(Duration::from_secs(60), wrong_key(&mut procs)).await;
}

async fn wrong_key(procs: &mut Procs) {
    let mut cluster = procs.start_cluster("", 0, Some(KEY)).await;
    let master = procs.ports(cluster.master);
    let intruder = procs.spawn(procs.spec(
        "slave-wrong-key",
        free_ports(),
        Some(master),
        Some("not-the-key"),
    ));
    let client = connect(&[master.tcp]).await;
    // Over three heartbeat intervals (three HANDSHAKEs), the master never has a slave to
    // place a grain on: every call fails (the router retries "no live slave" until the
    // call's deadline, then reports it).
    let window = Instant::now() + Duration::from_secs(3);
    let mut calls = 0;
    while Instant::now() < window {
        let started = Instant::now();
        match client
            .grain::<Counter>(format!("w-{calls}"))
            .ask(Add(1))
            .timeout(Duration::from_millis(500))
            .await
        {
            Err(CallError::Unreachable(_) | CallError::Timeout) => {}
            other => panic!("a call with no live slave returned {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the call overran its timeout: {:?}",
            started.elapsed()
        );
        procs
            .check_alive(intruder)
            .unwrap_or_else(|e| panic!("{e}"));
        calls += 1;
    }
    // The intruder's own TCP port refuses the cluster's key (it holds another one).
    let via_intruder = Client::connect(
        ClientConfig::new([procs.ports(intruder).tcp])
            .with_connect_timeout(Duration::from_secs(1))
            .with_cluster_key(KEY.as_bytes()),
    )
    .await;
    assert!(
        matches!(via_intruder, Err(ConnectError::Unreachable(ref why)) if why.contains("wrong cluster key")),
        "{via_intruder:?}"
    );

    // Control: a slave with the right key joins and takes every grain.
    let good = procs
        .add_slave(&mut cluster, "slave-right-key", Some(KEY))
        .await;
    for i in 0..10 {
        client
            .grain::<Counter>(format!("w-{i}"))
            .ask(Add(1))
            .await
            .unwrap();
    }
    assert!(procs.activated::<Counter>(intruder).is_empty());
    assert!((0..10).all(|i| procs.activated::<Counter>(good).contains(&format!("w-{i}"))));
    let intruder_tcp = procs.ports(intruder).tcp;
    let intruder_udp = procs.ports(intruder).udp;
    assert!(
        procs
            .log(cluster.master)
            .lines()
            .any(|line| line.contains(&format!("src={intruder_udp}"))
                && line.contains("MAC does not verify")),
        "the master logged no rejected HANDSHAKE from the intruder"
    );
    assert!(
        !procs
            .log(cluster.master)
            .contains(&format!("slave joined slave={intruder_tcp}")),
        "the master admitted the slave with the wrong key"
    );
    assert!(procs.alive(intruder));
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// 5. A slave restarted on the same ports
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_slave_rejoins_as_a_new_generation() {
    let mut procs = Procs::new("restart");
    bounded(Duration::from_secs(60), restarted_slave(&mut procs)).await;
}

async fn restarted_slave(procs: &mut Procs) {
    const KEYS: i64 = 40;
    let cluster = procs.start_cluster("", 2, Some(KEY)).await;
    let client = connect(&[procs.ports(cluster.master).tcp]).await;
    for i in 0..KEYS {
        assert_eq!(
            client
                .grain::<Counter>(format!("r-{i}"))
                .ask(Add(i + 1))
                .await
                .unwrap(),
            i + 1
        );
    }
    let hosted: BTreeMap<usize, usize> = cluster
        .slaves
        .iter()
        .map(|&s| (s, procs.activated::<Counter>(s).len()))
        .collect();
    let victim = *hosted.iter().max_by_key(|(_, n)| **n).unwrap().0;
    assert!(hosted[&victim] > 0);

    procs.kill9(victim);
    let killed = Instant::now();
    let reborn = procs.restart(victim);
    procs
        .wait_joined(reborn, killed + START)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rejoined = killed.elapsed();

    // The master saw a new generation on the old addresses and dropped the old one at
    // once (no lease wait).
    let replaced = format!(
        "slave restarted; old generation declared dead old={}",
        procs.ports(victim).tcp
    );
    assert!(
        procs.log(cluster.master).contains(&replaced),
        "the master did not log `{replaced}`"
    );
    // The old grains come back with their state. `client` still caches the old
    // generation's address, which the new process now answers.
    let deadline = killed + Duration::from_secs(10);
    for i in 0..KEYS {
        assert_eq!(
            get_counter(&client, &format!("r-{i}"), deadline).await,
            i + 1
        );
    }
    eprintln!(
        "restarted slave: rejoined {rejoined:?} and all {KEYS} counters served {:?} after the kill",
        killed.elapsed()
    );
    // And new grains are placed on it again.
    for i in 0..60 {
        client
            .grain::<Counter>(format!("new-{i}"))
            .ask(Add(1))
            .await
            .unwrap();
    }
    let placed = procs
        .activated::<Counter>(reborn)
        .iter()
        .filter(|k| k.starts_with("new-"))
        .count();
    eprintln!("restarted slave: {placed} of 60 new counters placed on it");
    assert!(placed > 0, "no new grain was placed on the restarted slave");
    for i in [cluster.master, reborn]
        .into_iter()
        .chain(cluster.slaves.iter().copied().filter(|&s| s != victim))
    {
        procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
    }
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// 6. The master restarted on the same ports and store
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_takes_its_slaves_back() {
    let mut procs = Procs::new("master-restart");
    bounded(Duration::from_secs(60), restarted_master(&mut procs)).await;
}

async fn restarted_master(procs: &mut Procs) {
    const KEYS: i64 = 20;
    let cluster = procs.start_cluster("", 2, Some(KEY)).await;
    let client = connect(&[procs.ports(cluster.master).tcp]).await;
    for i in 0..KEYS {
        let value = client
            .grain::<Counter>(format!("m-{i}"))
            .ask(Add(i + 1))
            .await
            .unwrap();
        assert_eq!(value, i + 1);
    }

    procs.kill9(cluster.master);
    let killed = Instant::now();
    let master = procs.restart(cluster.master);
    // The slaves are told REJOIN (the new master does not know them), fence themselves
    // and join the new generation; they do not exit.
    let deadline = killed + START;
    for &slave in &cluster.slaves {
        let joined = format!("slave joined slave={}", procs.ports(slave).tcp);
        while !procs.log(master).contains(&joined) {
            procs.check_alive(master).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                Instant::now() < deadline,
                "{} did not rejoin the restarted master",
                procs.name(slave)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rejoined = killed.elapsed();
    // The state written through the old master is in its store; the old client
    // reconnects to the new master on its own.
    let deadline = killed + Duration::from_secs(10);
    for i in 0..KEYS {
        assert_eq!(
            get_counter(&client, &format!("m-{i}"), deadline).await,
            i + 1
        );
    }
    let served = killed.elapsed();
    for i in 0..KEYS {
        let value = client
            .grain::<Counter>(format!("m-{i}"))
            .ask(Add(1))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(value, i + 2, "m-{i} after the master restart");
    }
    eprintln!(
        "restarted master: slaves rejoined {rejoined:?} and all {KEYS} counters served {served:?} after the kill"
    );
    for &slave in &cluster.slaves {
        procs.check_alive(slave).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            procs.log(slave).contains("master restarted"),
            "{} did not notice the new master generation",
            procs.name(slave)
        );
    }
    procs.check_alive(master).unwrap_or_else(|e| panic!("{e}"));
    client.close().await;
}
