//! The faults, the seeded schedule, and applying and healing them.
//!
//! A schedule is a list of faults, one at a time, each held for a while and followed
//! by a quiet spell (so each fault's availability and recovery can be measured on its
//! own). It is drawn from the run's seed only, so `--seed N` replays the same faults
//! on the same victims at the same offsets. (The operations' interleaving depends on
//! the machine's timing and is not replayed; the history of each run is kept.)

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::net::{Net, NetKind};
use crate::run::Stage;

/// What can go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9` of a slave, restarted when the fault ends.
    Kill,
    /// SIGSTOP of a slave, SIGCONT when the fault ends (it was declared dead meanwhile).
    Pause,
    /// A slave cut off from everyone (its bridge port down; filter on loopback).
    Isolate,
    /// A slave and the master(s) cannot reach each other (UDP and TCP, both ways); the
    /// other slaves and the clients still reach both.
    PartitionMaster,
    /// Asymmetric: the slave hears nothing from the master, the master hears it.
    Deaf,
    /// Asymmetric: the master hears no membership datagram from the slave, the slave
    /// still hears the master (and TCP works both ways).
    Mute,
    /// Every silo's datagrams: 20 % lost, 20 % duplicated, delayed 0–300 ms; TCP
    /// writes delayed 0–30 ms.
    Lossy,
    /// The master's store volume is full.
    DiskFull,
    /// `kill -9` of the (acting) master, restarted when the fault ends.
    KillMaster,
    /// The acting master cut off from everyone (its bridge port down; filter on
    /// loopback): it must stop acting before another candidate starts, and rejoin as a
    /// standby when the cut heals.
    IsolateMaster,
}

impl FaultKind {
    /// Every kind, in the order the long run lists them.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::PartitionMaster,
        FaultKind::Deaf,
        FaultKind::Mute,
        FaultKind::Lossy,
        FaultKind::DiskFull,
        FaultKind::KillMaster,
        FaultKind::IsolateMaster,
    ];

    /// Whether the fault needs a slave victim.
    fn needs_slave(self) -> bool {
        !matches!(
            self,
            FaultKind::Lossy
                | FaultKind::DiskFull
                | FaultKind::KillMaster
                | FaultKind::IsolateMaster
        )
    }

    /// How the report names the fault.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 slave",
            FaultKind::Pause => "SIGSTOP slave",
            FaultKind::Isolate => "isolate slave",
            FaultKind::PartitionMaster => "partition slave|master",
            FaultKind::Deaf => "asym: slave deaf",
            FaultKind::Mute => "asym: slave mute",
            FaultKind::Lossy => "lossy network",
            FaultKind::DiskFull => "master disk full",
            FaultKind::KillMaster => "kill -9 master",
            FaultKind::IsolateMaster => "isolate master",
        }
    }
}

/// One planned fault.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Planned {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Offset from the start of the workload.
    #[serde(with = "micros")]
    pub at: Duration,
    /// How long it is held.
    #[serde(with = "micros")]
    pub hold: Duration,
    /// The slave it hits (index among the slaves).
    pub slave: Option<usize>,
}

mod micros {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

/// How faults are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Mode {
    /// Each listed fault once, in the listed order.
    Once,
    /// Random faults from the list until the run's time is up.
    Mixed,
}

/// Draws the schedule for `duration` of workload from `seed`.
pub fn schedule(
    seed: u64,
    kinds: &[FaultKind],
    mode: Mode,
    duration: Duration,
    slaves: usize,
) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let warmup = Duration::from_secs(5);
    let mut at = warmup;
    let mut plan = Vec::new();
    let mut next = 0;
    loop {
        let kind = match mode {
            Mode::Once => match kinds.get(next) {
                Some(&kind) => kind,
                None => break,
            },
            Mode::Mixed => kinds[rng.usize(..kinds.len())],
        };
        next += 1;
        let hold = Duration::from_millis(match kind {
            // Long enough to be declared dead (3 heartbeats of 1 s) and replaced.
            FaultKind::Kill | FaultKind::Pause | FaultKind::Isolate | FaultKind::IsolateMaster => {
                rng.u64(4_500..9_000)
            }
            FaultKind::KillMaster => rng.u64(3_000..7_000),
            _ => rng.u64(4_000..10_000),
        });
        let quiet = Duration::from_millis(rng.u64(6_000..10_000));
        if mode == Mode::Mixed && at + hold + quiet > duration {
            break;
        }
        let slave = kind.needs_slave().then(|| rng.usize(..slaves));
        plan.push(Planned {
            kind,
            at,
            hold,
            slave,
        });
        at += hold + quiet;
    }
    plan
}

/// Writes the fault filter's rules files, one per silo slot.
#[derive(Debug)]
pub struct Rules {
    files: Vec<std::path::PathBuf>,
}

impl Rules {
    /// Empty rules for every slot of `cluster`.
    pub fn new(cluster: &Cluster) -> anyhow::Result<Rules> {
        let files: Vec<_> = (0..cluster.topology.silos())
            .map(|slot| cluster.rules_path(slot))
            .collect();
        if let Some(dir) = files.first().and_then(|f| f.parent()) {
            std::fs::create_dir_all(dir)?;
        }
        let rules = Rules { files };
        rules.clear()?;
        Ok(rules)
    }

    /// Replaces `slot`'s rules (atomically: written aside, then renamed over).
    pub fn set(&self, slot: usize, lines: &[String]) -> anyhow::Result<()> {
        let path = &self.files[slot];
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n")?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
    }

    /// No faults anywhere.
    pub fn clear(&self) -> anyhow::Result<()> {
        (0..self.files.len()).try_for_each(|slot| self.set(slot, &[]))
    }
}

/// Rules cutting `slot`'s traffic to `peer` in `protos` (a subset of udp/tcp).
fn cut(net: &Net, peer: usize, protos: &[&str]) -> Vec<String> {
    protos
        .iter()
        .map(|&p| {
            let who = if p == "udp" {
                net.udp_peer(peer)
            } else {
                net.tcp_peer(peer)
            };
            format!("{p} out {who} drop")
        })
        .collect()
}

/// Cuts UDP and TCP between `victim` and each of `others`, both ways.
fn cut_both_ways(net: &Net, rules: &Rules, victim: usize, others: &[usize]) -> anyhow::Result<()> {
    let mut own = Vec::new();
    for &other in others {
        own.extend(cut(net, other, &["udp", "tcp"]));
        rules.set(other, &cut(net, victim, &["udp", "tcp"]))?;
    }
    rules.set(victim, &own)
}

/// Cuts `slot` off from every other of the `silos` slots: its bridge port down
/// (netns), or filter rules both ways (loopback).
fn isolate(net: &Net, rules: &Rules, slot: usize, silos: usize) -> anyhow::Result<()> {
    if net.kind() == NetKind::Netns {
        net.set_isolated(slot, true)
    } else {
        let everyone: Vec<usize> = (0..silos).filter(|&s| s != slot).collect();
        cut_both_ways(net, rules, slot, &everyone)
    }
}

/// The acting master (its log says so); while none acts (an election is under way), the
/// first running candidate. With one candidate, its clients see unavailability until it
/// is back; with standbys, one of them takes over.
fn target_master(cluster: &mut Cluster, masters: &[usize]) -> Option<usize> {
    cluster
        .acting_master()
        .or_else(|| masters.iter().copied().find(|&m| cluster.running(m)))
}

/// A full disk: a ballast file grown until the volume has no space left.
fn fill_disk(dir: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("ballast"))?;
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
        if written > 1 << 30 {
            anyhow::bail!("the store volume did not fill up after 1 GiB: is it a small tmpfs?");
        }
    }
    Ok(written)
}

impl Stage {
    /// Applies `fault` (from now until [`Stage::heal`]).
    pub fn apply(&mut self, fault: &Planned) -> anyhow::Result<()> {
        let Stage {
            cluster,
            net,
            rules,
            store,
            ..
        } = self;
        let t = cluster.topology;
        let victim = fault.slave.map(|s| t.slave(s));
        let masters: Vec<usize> = (0..t.candidates).collect();
        match fault.kind {
            FaultKind::Kill => cluster.kill9(victim.context("no victim")?),
            FaultKind::Pause => cluster.pause(victim.context("no victim")?)?,
            FaultKind::Isolate => isolate(net, rules, victim.context("no victim")?, t.silos())?,
            FaultKind::PartitionMaster => {
                cut_both_ways(net, rules, victim.context("no victim")?, &masters)?;
            }
            FaultKind::Deaf => {
                let v = victim.context("no victim")?;
                for &m in &masters {
                    rules.set(m, &cut(net, v, &["udp", "tcp"]))?;
                }
            }
            FaultKind::Mute => {
                let v = victim.context("no victim")?;
                let own: Vec<String> = masters
                    .iter()
                    .flat_map(|&m| cut(net, m, &["udp"]))
                    .collect();
                rules.set(v, &own)?;
            }
            FaultKind::Lossy => {
                let lines = [
                    "udp out * loss 0.2",
                    "udp out * dup 0.2",
                    "udp out * delay 0ms..300ms",
                    "tcp out * delay 0ms..30ms",
                ]
                .map(str::to_owned);
                for slot in 0..t.silos() {
                    rules.set(slot, &lines)?;
                }
            }
            FaultKind::DiskFull => {
                fill_disk(store)?;
            }
            FaultKind::KillMaster => {
                if let Some(m) = target_master(cluster, &masters) {
                    cluster.kill9(m);
                }
            }
            FaultKind::IsolateMaster => {
                if let Some(m) = target_master(cluster, &masters) {
                    isolate(net, rules, m, t.silos())?;
                }
            }
        }
        Ok(())
    }

    /// Ends `fault`: restarts, resumes, reconnects, clears rules, frees space.
    pub fn heal(&mut self, fault: &Planned) -> anyhow::Result<()> {
        let Stage {
            cluster,
            net,
            rules,
            store,
            ..
        } = self;
        let t = cluster.topology;
        let victim = fault.slave.map(|s| t.slave(s));
        match fault.kind {
            FaultKind::Kill => cluster.start(net, victim.context("no victim")?)?,
            FaultKind::Pause => cluster.resume(victim.context("no victim")?)?,
            FaultKind::Isolate if net.kind() == NetKind::Netns => {
                net.set_isolated(victim.context("no victim")?, false)?
            }
            // Whichever candidate was cut off (the acting one may have changed since).
            FaultKind::IsolateMaster if net.kind() == NetKind::Netns => {
                for m in 0..t.candidates {
                    net.set_isolated(m, false)?;
                }
            }
            FaultKind::DiskFull => std::fs::remove_file(store.join("ballast"))?,
            FaultKind::KillMaster => {
                for m in 0..t.candidates {
                    if !cluster.running(m) {
                        cluster.start(net, m)?;
                    }
                }
            }
            _ => rules.clear()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
