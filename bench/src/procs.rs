//! A Granary cluster under test as child processes: free ports, then a master
//! (`--storage memory`) and one slave started from the bench's `silo` binary (which
//! hosts the example grains and the bench's [`Echo`](crate::grains::Echo)), stopped
//! (SIGTERM, then SIGKILL after 3 s) when dropped, also on error. [`Children`] runs any
//! set of such processes (the replication benchmark starts two clusters of four).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// Free ports on 127.0.0.1: `tcp` TCP ones and `udp` UDP ones. All sockets are held
/// until every port is chosen, so the ports are distinct.
pub fn free_ports(tcp: usize, udp: usize) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    let tcps = (0..tcp)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let udps = (0..udp)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp_ports = tcps
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let udp_ports = udps
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok((tcp_ports, udp_ports))
}

/// The master and the slave as child processes; stopped when dropped.
#[derive(Debug)]
pub struct Cluster {
    /// `master`, then `slave`.
    children: Children,
    /// The master's TCP address (the client's gateway).
    pub master: SocketAddr,
    /// The slave's TCP address (where the grains live).
    pub slave: SocketAddr,
}

impl Cluster {
    /// Starts a master and a slave from the `silo` binary at `silo`.
    pub fn start(silo: &Path) -> anyhow::Result<Cluster> {
        let (tcp, udp) = free_ports(2, 2)?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut cluster = Cluster {
            children: Children::new()?,
            master: addr(tcp[0]),
            slave: addr(tcp[1]),
        };
        let master_udp = addr(udp[0]).to_string();
        let master_tcp = cluster.master.to_string();
        let slave_tcp = cluster.slave.to_string();
        let slave_udp = addr(udp[1]).to_string();
        cluster.children.spawn(
            silo,
            "master",
            &[
                "--role",
                "master",
                "--listen",
                &master_tcp,
                "--udp",
                &master_udp,
                "--storage",
                "memory",
            ],
            &[],
        )?;
        cluster.children.spawn(
            silo,
            "slave",
            &[
                "--role",
                "slave",
                "--listen",
                &slave_tcp,
                "--udp",
                &slave_udp,
                "--master",
                &master_udp,
            ],
            &[],
        )?;
        Ok(cluster)
    }

    /// The process id of the `"master"` or the `"slave"` (0 if unknown).
    pub fn pid(&self, name: &str) -> u32 {
        self.children.pid(name)
    }

    /// The children's logs and exit states, for an error report.
    pub fn report(&mut self) -> String {
        self.children.report()
    }
}

/// Child processes, each logging to `NAME.log` in a temporary directory. Dropping it
/// stops them in reverse start order (slaves save and release their grains before the
/// master goes): SIGTERM, then SIGKILL after 3 s.
#[derive(Debug)]
pub struct Children {
    /// `(name, process)`, in start order.
    children: Vec<(String, Child)>,
    /// Their stdout/stderr.
    logs: tempfile::TempDir,
}

impl Children {
    /// No children yet.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            children: Vec::new(),
            logs: tempfile::tempdir()?,
        })
    }

    /// The temporary directory the logs are in (removed when dropped).
    pub fn dir(&self) -> &Path {
        self.logs.path()
    }

    /// Starts `program` with `args` and `env` as `name`, logging warnings only (per-call
    /// logging would be measured too) unless `env` sets `RUST_LOG`.
    pub fn spawn(
        &mut self,
        program: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.logs.path().join(format!("{name}.log")))?;
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {name} ({})", program.display()))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// The process id of `name` (0 if there is none).
    pub fn pid(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| c.id())
    }

    /// The children's logs and exit states, for an error report.
    pub fn report(&mut self) -> String {
        let mut out = String::new();
        for (name, child) in &mut self.children {
            let state = match child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                Ok(None) => "running".to_owned(),
                Err(e) => format!("unknown ({e})"),
            };
            let log = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let _ = writeln!(out, "--- {name}: {state}; last log lines:");
            for line in tail.into_iter().rev() {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        eprintln!("the {name} did not stop on SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}
