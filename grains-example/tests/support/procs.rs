//! [`Procs`]: the silo processes of one test, their logs, and the cluster helpers.

use std::collections::HashSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use granary_client::{Client, ClientConfig};
use granary_example::{Greeter, Hello};
use granary_runtime::Grain;
use tokio::time::Instant;

use super::{free_ports, run_bin, tail, Output, Ports, FLAG_VARS, SILO, START};

/// How to start one silo process: a name (for its log file and messages) and its
/// command line.
#[derive(Clone, Debug)]
pub struct SiloSpec {
    pub name: String,
    /// The flags, as on the command line.
    pub args: Vec<String>,
    /// Extra environment variables (the `GRANARY_*` ones are cleared first).
    pub env: Vec<(String, String)>,
    /// Where it listens, if the test reaches it: [`Procs::ports`], [`Procs::wait_listening`]
    /// and [`Procs::wait_joined`] need it.
    pub ports: Option<Ports>,
    /// The cluster key the helpers' clients use to reach it.
    pub key: Option<String>,
}

impl SiloSpec {
    /// A silo with exactly `args` on its command line.
    pub fn new<S: AsRef<str>>(name: &str, args: &[S]) -> Self {
        SiloSpec {
            name: name.to_owned(),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
            ports: None,
            key: None,
        }
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, var: &str, value: &str) -> Self {
        self.env.push((var.to_owned(), value.to_owned()));
        self
    }

    /// Records where the silo listens (the flags must say the same).
    pub fn ports(mut self, ports: Ports) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Records the cluster key the silo runs with (the flags must say the same).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
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
pub struct Procs {
    test: &'static str,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// Environment of every silo this guard spawns (before each spec's own).
    env: Vec<(String, String)>,
}

/// Indices (into [`Procs`]) of a master and its slaves.
#[derive(Debug)]
pub struct Cluster {
    pub master: usize,
    pub slaves: Vec<usize>,
}

/// Indices (into [`Procs`]) of master candidates and their slaves.
#[derive(Debug)]
pub struct Candidates {
    pub candidates: Vec<usize>,
    pub slaves: Vec<usize>,
}

impl Procs {
    pub fn new(test: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("granary-{test}-"))
            .tempdir()
            .expect("create a temporary directory");
        Procs {
            test,
            dir,
            procs: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable (a `GRANARY_*` flag, say) of every silo spawned from
    /// now on.
    pub fn env_all(&mut self, var: &str, value: &str) {
        self.env.push((var.to_owned(), value.to_owned()));
    }

    /// The test's directory: every silo's working directory, and where the logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--storage` for a master: the embedded store in this test's directory.
    pub fn store(&self) -> String {
        format!("embedded:{}", self.dir.path().join("grains.redb").display())
    }

    /// A cluster member: a master (`master: None`, on [`Procs::store`]) or a slave of
    /// `master`, on `ports`, with `key` if any.
    pub fn spec(
        &self,
        name: &str,
        ports: Ports,
        master: Option<Ports>,
        key: Option<&str>,
    ) -> SiloSpec {
        let role = if master.is_some() { "slave" } else { "master" };
        let mut args = vec![
            "--role".to_owned(),
            role.to_owned(),
            "--listen".to_owned(),
            ports.tcp.to_string(),
            "--udp".to_owned(),
            ports.udp.to_string(),
        ];
        if let Some(master) = master {
            args.extend(["--master".to_owned(), master.udp.to_string()]);
        } else {
            args.extend(["--storage".to_owned(), self.store()]);
        }
        if let Some(key) = key {
            args.extend(["--cluster-key".to_owned(), key.to_owned()]);
        }
        SiloSpec {
            name: name.to_owned(),
            args,
            env: Vec::new(),
            ports: Some(ports),
            key: key.map(str::to_owned),
        }
    }

    /// Starts a silo in the test directory; its stdout and stderr go to `NAME.RUN.log`
    /// there. Returns its index, which the other methods take.
    pub fn spawn(&mut self, spec: SiloSpec) -> usize {
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
            .args(&spec.args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,granary_runtime::activation=trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for var in FLAG_VARS {
            command.env_remove(var);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().expect("spawn the silo binary");
        self.procs.push(Proc {
            spec,
            child,
            log,
            status: None,
        });
        self.procs.len() - 1
    }

    /// Runs a silo that is expected to exit by itself (within [`super::RUN_LIMIT`]), in
    /// the test directory, with the same environment as [`Procs::spawn`] plus `env`;
    /// returns its status, stdout and stderr.
    pub async fn run_silo(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut all_env = vec![("RUST_LOG".to_owned(), "info".to_owned())];
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let shown = format!("silo {}", args.join(" "));
        run_bin(SILO, &args, &all_env, Some(self.dir.path()), &shown).await
    }

    /// Starts the silo `i` again with the same flags (same ports, same key), as a new
    /// process with its own log. `i` must have exited.
    pub fn restart(&mut self, i: usize) -> usize {
        assert!(
            !self.alive(i),
            "{} is still running",
            self.procs[i].spec.name
        );
        let spec = self.procs[i].spec.clone();
        self.spawn(spec)
    }

    /// How many processes the test spawned so far (the next one's index).
    pub fn count(&self) -> usize {
        self.procs.len()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.procs[i].spec.name
    }

    /// Where silo `i` listens; panics if its [`SiloSpec`] did not say.
    pub fn ports(&self, i: usize) -> Ports {
        self.procs[i]
            .spec
            .ports
            .unwrap_or_else(|| panic!("{} was started without known ports", self.name(i)))
    }

    /// Reaps the process if it has exited; its exit status if so.
    pub fn try_status(&mut self, i: usize) -> Option<ExitStatus> {
        let proc = &mut self.procs[i];
        if proc.status.is_none() {
            proc.status = proc.child.try_wait().expect("try_wait on a silo");
        }
        proc.status
    }

    pub fn alive(&mut self, i: usize) -> bool {
        self.try_status(i).is_none()
    }

    /// `kill -9`, and reap it (its sockets are closed when this returns). Never panics:
    /// the guard's `Drop` uses it.
    pub fn kill9(&mut self, i: usize) {
        let proc = &mut self.procs[i];
        if proc.status.is_none() {
            let _ = proc.child.kill();
            proc.status = proc.child.wait().ok();
        }
    }

    /// `kill -TERM`: a graceful shutdown.
    pub fn sigterm(&mut self, i: usize) {
        self.signal(i, libc::SIGTERM, "TERM");
    }

    /// `kill -INT`, what Ctrl-C in its terminal sends: a graceful shutdown too.
    pub fn sigint(&mut self, i: usize) {
        self.signal(i, libc::SIGINT, "INT");
    }

    fn signal(&mut self, i: usize, signal: libc::c_int, name: &str) {
        assert!(self.alive(i), "{} already exited", self.name(i));
        let pid = libc::pid_t::try_from(self.procs[i].child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
        // not yet reaped, so it cannot have been recycled.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill -{name} {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits (polling) until process `i` exits; panics at `deadline`.
    pub async fn wait_exit(&mut self, i: usize, deadline: Instant) -> ExitStatus {
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

    /// Everything process `i` printed so far (stdout and stderr, interleaved).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.procs[i].log).unwrap_or_default()
    }

    /// Waits (polling) until process `i` has printed a line containing `needle`, and
    /// returns that line. Panics at `deadline`, or if the process exits without having
    /// printed it, with the tail of its log.
    pub async fn wait_for_line(&mut self, i: usize, needle: &str, deadline: Instant) -> String {
        loop {
            // Read after checking for exit, so the last lines of an exited process count.
            let exited = self.try_status(i);
            let log = self.log(i);
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            let why = match exited {
                Some(status) => format!("exited ({status})"),
                None if Instant::now() >= deadline => "timed out".to_owned(),
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            panic!(
                "{} {why} without printing `{needle}`:\n{}",
                self.name(i),
                tail(&log, 30)
            );
        }
    }

    /// Whether silo `i` logged a line about slave `tcp` as the master names slaves,
    /// `slave TCP/udp:UDP#GENERATION WHAT…`, with `what` right after the id: `"left"`,
    /// `"joined"` (which also matches `joined again`).
    pub fn logged_slave(&self, i: usize, tcp: SocketAddr, what: &str) -> bool {
        let who = format!("slave {tcp}/udp:");
        self.log(i).lines().any(|line| {
            line.split_once(&who)
                .and_then(|(_, rest)| rest.split_once(' '))
                .is_some_and(|(_, after)| after.starts_with(what))
        })
    }

    /// How many activations of grains of type `G` process `i` logged (a grain activated
    /// twice counts twice).
    pub fn activations<G: Grain>(&self, i: usize) -> usize {
        let marker = format!("activation: activated grain={}/", G::TYPE_NAME);
        self.log(i).lines().filter(|l| l.contains(&marker)).count()
    }

    /// Keys of the grains of type `G` that process `i` activated (per its log).
    pub fn activated<G: Grain>(&self, i: usize) -> HashSet<String> {
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
    pub fn check_alive(&mut self, i: usize) -> Result<(), String> {
        match self.try_status(i) {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited early ({status}):\n{}",
                self.name(i),
                tail(&self.log(i), 30)
            )),
        }
    }

    /// Waits until the silo `i` answers pings on its TCP port. `Err` if it exited.
    pub async fn wait_listening(&mut self, i: usize, deadline: Instant) -> Result<Client, String> {
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
    pub async fn wait_joined(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
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
    pub async fn start_cluster(
        &mut self,
        prefix: &str,
        slaves: usize,
        key: Option<&str>,
    ) -> Cluster {
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

    /// Starts `candidates` master candidates and `slaves` slaves that know every
    /// candidate, with `key`, on fresh ports; waits until every slave has joined. Each
    /// candidate keeps its own embedded store, replicated among them — or, with
    /// `shared`, every silo uses that store (a `mongodb://` URI: the candidates then
    /// elect through a lease in it).
    pub async fn start_candidates(
        &mut self,
        candidates: usize,
        slaves: usize,
        key: Option<&str>,
        shared: Option<&str>,
    ) -> Candidates {
        let deadline = Instant::now() + START;
        let ports: Vec<Ports> = (0..candidates).map(|_| free_ports()).collect();
        let mut cluster = Candidates {
            candidates: Vec::new(),
            slaves: Vec::new(),
        };
        for (c, mine) in ports.iter().enumerate() {
            let name = format!("candidate{c}");
            let mut spec = self.spec(&name, *mine, None, key);
            let store = format!(
                "embedded:{}",
                self.dir.path().join(format!("{name}.redb")).display()
            );
            // `spec` gave it the test's store; each candidate keeps its own replica.
            let at = spec.args.iter().position(|a| a == "--storage").unwrap();
            spec.args[at + 1] = shared.map_or(store, str::to_owned);
            for other in ports.iter().filter(|p| *p != mine) {
                spec.args
                    .extend(["--peer".to_owned(), other.udp.to_string()]);
            }
            cluster.candidates.push(self.spawn(spec));
        }
        for s in 0..slaves {
            let mut spec = self.spec(&format!("slave{s}"), free_ports(), Some(ports[0]), key);
            for other in &ports[1..] {
                spec.args
                    .extend(["--master".to_owned(), other.udp.to_string()]);
            }
            if let Some(shared) = shared {
                spec.args
                    .extend(["--storage".to_owned(), shared.to_owned()]);
            }
            cluster.slaves.push(self.spawn(spec));
        }
        for &slave in &cluster.slaves {
            self.wait_joined(slave, deadline)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        cluster
    }

    /// The candidate (an index of `candidates`) that acts as master, as the cluster's
    /// status says through `client`; waits until one acts, up to `deadline`.
    pub async fn acting_master(
        &self,
        candidates: &[usize],
        client: &Client,
        deadline: Instant,
    ) -> usize {
        loop {
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_millis(500), client.cluster_status()).await
            {
                if let Some(c) = candidates
                    .iter()
                    .position(|&i| self.ports(i).tcp == status.master.tcp)
                {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "no candidate acts as master");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts one more slave of `cluster`'s master and waits until it joined.
    pub async fn add_slave(
        &mut self,
        cluster: &mut Cluster,
        name: &str,
        key: Option<&str>,
    ) -> usize {
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
