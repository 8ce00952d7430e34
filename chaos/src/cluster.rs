//! The silo processes of a run: the topology, starting them (inside their namespace),
//! signals, restarts, and waiting until they serve.
//!
//! Slots `0..candidates` are master candidates (`--role master`), the rest slaves. With
//! more than one candidate, each is given the others' UDP addresses as `--peer` and its
//! own embedded store (standbys keep replicas), and every slave all of them as
//! `--master`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use granary_client::{Client, ClientConfig};
use granary_example::{Greeter, Hello};
use tokio::time::Instant;

use crate::net::Net;

/// The cluster key every silo and client of a run uses.
pub const KEY: &str = "granary-chaos";

/// How many silos of each kind.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Topology {
    /// Master candidates (the acting master and its standbys).
    pub candidates: usize,
    /// Slaves.
    pub slaves: usize,
}

impl Topology {
    /// Silo slots in all.
    pub fn silos(&self) -> usize {
        self.candidates + self.slaves
    }

    /// The slot of slave `n`.
    pub fn slave(&self, n: usize) -> usize {
        self.candidates + n
    }

    /// Whether `slot` is a master candidate.
    pub fn is_master(&self, slot: usize) -> bool {
        slot < self.candidates
    }
}

/// A silo slot's process (the latest incarnation).
#[derive(Debug)]
struct Proc {
    name: String,
    child: Option<Child>,
    paused: bool,
    /// How many times it was started.
    runs: usize,
}

/// The silo processes of one run; every one still running is killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// How many silos of each kind.
    pub topology: Topology,
    binary: PathBuf,
    dir: PathBuf,
    /// The master's store directory (a small tmpfs when the disk may be filled).
    store: PathBuf,
    procs: Vec<Proc>,
}

impl Cluster {
    /// Prepares the slots (nothing runs yet). Logs and rules files go to `dir`.
    pub fn new(topology: Topology, binary: PathBuf, dir: &Path, store: PathBuf) -> Self {
        let procs = (0..topology.silos())
            .map(|slot| Proc {
                name: if topology.is_master(slot) {
                    format!("m{slot}")
                } else {
                    format!("s{}", slot - topology.candidates)
                },
                child: None,
                paused: false,
                runs: 0,
            })
            .collect();
        Cluster {
            topology,
            binary,
            dir: dir.to_owned(),
            store,
            procs,
        }
    }

    /// The name of `slot` (`m0`, `s1`…), for logs and reports.
    pub fn name(&self, slot: usize) -> &str {
        &self.procs[slot].name
    }

    /// The fault filter's rules file of `slot`.
    pub fn rules_path(&self, slot: usize) -> PathBuf {
        self.dir
            .join("faults")
            .join(format!("{}.rules", self.name(slot)))
    }

    /// The process id of `slot`'s running silo.
    pub fn pid(&self, slot: usize) -> Option<u32> {
        self.procs[slot].child.as_ref().map(Child::id)
    }

    fn args(&self, net: &Net, slot: usize) -> Vec<String> {
        let t = self.topology;
        let mut args = vec![
            "--listen".to_owned(),
            net.tcp(slot).to_string(),
            "--udp".to_owned(),
            net.udp(slot).to_string(),
            "--cluster-key".to_owned(),
            KEY.to_owned(),
        ];
        if t.is_master(slot) {
            args.extend(["--role".into(), "master".into(), "--storage".into()]);
            // One store per candidate (standbys keep replicas), all on the store volume.
            let store = if t.candidates > 1 {
                self.store.join(format!("m{slot}"))
            } else {
                self.store.clone()
            };
            let _ = std::fs::create_dir_all(&store);
            args.push(format!("embedded:{}", store.join("grains.redb").display()));
            for peer in (0..t.candidates).filter(|&c| c != slot) {
                args.extend(["--peer".into(), net.udp(peer).to_string()]);
            }
        } else {
            args.extend(["--role".into(), "slave".into()]);
            for candidate in 0..t.candidates {
                args.extend(["--master".into(), net.udp(candidate).to_string()]);
            }
        }
        args
    }

    /// Starts `slot`'s silo (in its namespace, if any); its output goes to
    /// `NAME.RUN.log`.
    pub fn start(&mut self, net: &Net, slot: usize) -> anyhow::Result<()> {
        if self.procs[slot].child.is_some() {
            bail!("{} is already running", self.name(slot));
        }
        let args = self.args(net, slot);
        let rules = self.rules_path(slot);
        let proc = &mut self.procs[slot];
        proc.runs += 1;
        let log = self.dir.join(format!("{}.{}.log", proc.name, proc.runs));
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args(&args)
            .current_dir(&self.dir)
            .env("GRANARY_FAULTS", &rules)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (var, _) in std::env::vars() {
            if var.starts_with("GRANARY_") && var != "GRANARY_FAULTS" {
                command.env_remove(var);
            }
        }
        let ns = net.ns_path(slot).map(File::open).transpose()?;
        if let Some(ns) = &ns {
            let fd = ns.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe and touches no memory of ours; the
            // fd stays open in the parent until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawn {}", self.binary.display()))?;
        proc.child = Some(child);
        proc.paused = false;
        Ok(())
    }

    fn signal(&mut self, slot: usize, signal: libc::c_int) -> anyhow::Result<()> {
        let Some(pid) = self.pid(slot) else {
            bail!("{} is not running", self.name(slot));
        };
        // SAFETY: kill(2) on our own child, not reaped yet (so its pid is not reused).
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self, slot: usize) {
        if let Some(mut child) = self.procs[slot].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.procs[slot].paused = false;
    }

    /// SIGSTOP: the process freezes, sockets open, nothing answered.
    pub fn pause(&mut self, slot: usize) -> anyhow::Result<()> {
        self.signal(slot, libc::SIGSTOP)?;
        self.procs[slot].paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, slot: usize) -> anyhow::Result<()> {
        self.signal(slot, libc::SIGCONT)?;
        self.procs[slot].paused = false;
        Ok(())
    }

    /// SIGTERM and wait (up to `limit`, then kill -9) for a graceful exit.
    pub async fn stop_gracefully(&mut self, slot: usize, limit: Duration) -> anyhow::Result<()> {
        self.signal(slot, libc::SIGTERM)?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.procs[slot].child.as_mut() {
                if child.try_wait()?.is_some() {
                    self.procs[slot].child = None;
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill9(slot);
        bail!("{} ignored SIGTERM for {limit:?}", self.name(slot))
    }

    /// Whether `slot`'s process runs (reaps it if it exited).
    pub fn running(&mut self, slot: usize) -> bool {
        match self.procs[slot].child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Fails with the tail of the log if any started silo has exited unexpectedly.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.procs.len() {
            if self.procs[slot].child.is_some() && !self.running(slot) {
                bail!(
                    "{} exited by itself:\n{}",
                    self.name(slot),
                    self.log_tail(slot, 30)
                );
            }
        }
        Ok(())
    }

    /// The running candidate that acts as master, read off the candidates' logs (the
    /// latest "acting as master for epoch N" not followed by "stopped acting"; the
    /// highest epoch wins). `None` while no candidate acts (an election is under way).
    pub fn acting_master(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for slot in 0..self.topology.candidates {
            if !self.running(slot) {
                continue;
            }
            let proc = &self.procs[slot];
            let log = self.dir.join(format!("{}.{}.log", proc.name, proc.runs));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(epoch) = acting_epoch(&text) {
                if best.is_none_or(|(e, _)| epoch > e) {
                    best = Some((epoch, slot));
                }
            }
        }
        best.map(|(_, slot)| slot)
    }

    /// The last `lines` lines of the latest log of `slot`.
    pub fn log_tail(&self, slot: usize, lines: usize) -> String {
        let proc = &self.procs[slot];
        let log = self.dir.join(format!("{}.{}.log", proc.name, proc.runs));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `slot` serves grain calls as a gateway (a slave: it has joined).
    pub async fn wait_serving(
        &mut self,
        net: &Net,
        slot: usize,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let config = ClientConfig::new([net.tcp(slot)])
            .with_cluster_key(KEY.as_bytes())
            .with_connect_timeout(Duration::from_millis(500));
        loop {
            if self.procs[slot].child.is_some() && !self.running(slot) {
                bail!(
                    "{} exited while starting:\n{}",
                    self.name(slot),
                    self.log_tail(slot, 30)
                );
            }
            if let Ok(client) = Client::connect(config.clone()).await {
                if self.topology.is_master(slot) {
                    // A master alone hosts no grains: answering pings is serving.
                    client.close().await;
                    return Ok(());
                }
                let probe = client.grain::<Greeter>(format!("probe-{}", self.name(slot)));
                let answered = probe
                    .ask(Hello("chaos".into()))
                    .timeout(Duration::from_millis(500))
                    .await
                    .is_ok();
                client.close().await;
                if answered {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} does not serve:\n{}",
                    self.name(slot),
                    self.log_tail(slot, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts every silo, masters first, and waits until all serve.
    pub async fn start_all(&mut self, net: &Net, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        for slot in 0..self.topology.candidates {
            self.start(net, slot)?;
        }
        for slot in 0..self.topology.candidates {
            self.wait_serving(net, slot, deadline).await?;
        }
        for slot in self.topology.candidates..self.topology.silos() {
            self.start(net, slot)?;
        }
        for slot in self.topology.candidates..self.topology.silos() {
            self.wait_serving(net, slot, deadline).await?;
        }
        Ok(())
    }

    /// Kills every silo (SIGCONT first is not needed: SIGKILL ends stopped ones too).
    pub fn kill_all(&mut self) {
        for slot in 0..self.procs.len() {
            self.kill9(slot);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The epoch a candidate's log says it acts for: its last "acting as master for epoch N"
/// line, unless a "stopped acting as master" line follows it.
pub fn acting_epoch(log: &str) -> Option<u64> {
    for line in log.lines().rev() {
        if line.contains("stopped acting as master") {
            return None;
        }
        if let Some(rest) = line.split("acting as master for epoch ").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return digits.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests;
