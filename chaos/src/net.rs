//! Where the silos live: a network namespace each on a bridge, or plain loopback.
//!
//! With namespaces (the default; needs root and `ip` from iproute2), the harness builds:
//!
//! ```text
//! root namespace                       gchPID-br (bridge namespace)        gchPID-sN
//!   gchPIDh 10.77.X.1/24 ──veth── gchPIDhb ─┐                              (one per silo slot)
//!                                           br0 ── gchPIDsNb ──veth── eth0 10.77.X.(10+N)/24
//! ```
//!
//! Every silo slot has its own namespace and address (and so its own ports: every silo
//! listens on 7100/TCP and 7101/UDP); the harness's clients reach them through its own
//! veth. A symmetric partition of a silo takes its bridge port down: its packets go
//! nowhere, nobody's reach it, exactly as on a cut cable (no error, only silence), and
//! bringing the port up heals it. Asymmetric partitions use the silos' fault filter
//! (see `faults`). Names carry the harness's pid, so concurrent runs do not collide, and
//! namespaces of dead harnesses (a `kill -9`'d run) are removed at the next start.
//!
//! Without namespaces (`--net loopback`) every silo listens on 127.0.0.1 on its own
//! ports and every partition goes through the fault filter.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The first byte of every namespace and link name this harness creates.
pub const PREFIX: &str = "gch";
/// TCP port of every silo in namespace mode.
pub const TCP_PORT: u16 = 7100;
/// UDP port of every silo in namespace mode.
pub const UDP_PORT: u16 = 7101;

/// Which kind of network the silos are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum NetKind {
    /// A network namespace per silo on a bridge (root only).
    Netns,
    /// 127.0.0.1, partitions through the fault filter only.
    Loopback,
}

/// The silos' network, torn down on drop.
#[derive(Debug)]
pub struct Net {
    kind: NetKind,
    /// `gch` + the harness's pid.
    tag: String,
    /// Per slot: its address and ports.
    slots: Vec<(IpAddr, u16, u16)>,
    /// Namespaces created, removed on drop.
    namespaces: Vec<String>,
    /// The harness's veth in the root namespace, removed on drop.
    root_link: Option<String>,
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_stdout(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid inside a name made by this harness (`gch1234-s0`, `gch1234h`), if any.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes namespaces and links left by harnesses that are no longer running. Returns
/// how many it removed.
pub fn cleanup_stale() -> usize {
    let mut removed = 0;
    for line in ip_stdout(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if owner(name).is_some_and(|pid| !pid_alive(pid)) && ip(&["netns", "del", name]).is_ok() {
            removed += 1;
        }
    }
    for line in ip_stdout(&["-o", "link", "show"]).lines() {
        // "12: gch1234h@if11: <...>"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or_default();
        if owner(name).is_some_and(|pid| !pid_alive(pid)) && ip(&["link", "del", name]).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl Net {
    /// Namespaces on a bridge, with `slots` silo slots.
    pub fn netns(slots: usize) -> anyhow::Result<Net> {
        let stale = cleanup_stale();
        if stale > 0 {
            eprintln!("chaos: removed {stale} namespace(s)/link(s) left by dead runs");
        }
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        // A /24 no route of the root namespace uses yet.
        let mut subnet = (pid % 200 + 20) as u8;
        while !ip_stdout(&["-4", "route", "show", &format!("10.77.{subnet}.0/24")])
            .trim()
            .is_empty()
        {
            subnet = subnet.wrapping_add(1).max(20);
        }
        let mut net = Net {
            kind: NetKind::Netns,
            tag: tag.clone(),
            slots: Vec::new(),
            namespaces: Vec::new(),
            root_link: None,
        };
        let bridge = format!("{tag}-br");
        ip(&["netns", "add", &bridge])?;
        net.namespaces.push(bridge.clone());
        ip(&["-n", &bridge, "link", "set", "lo", "up"])?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        let host = format!("{tag}h");
        let host_peer = format!("{tag}hb");
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &host_peer,
        ])?;
        net.root_link = Some(host.clone());
        ip(&["link", "set", &host_peer, "netns", &bridge])?;
        ip(&["-n", &bridge, "link", "set", &host_peer, "master", "br0"])?;
        ip(&["-n", &bridge, "link", "set", &host_peer, "up"])?;
        ip(&["addr", "add", &format!("10.77.{subnet}.1/24"), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        for slot in 0..slots {
            let ns = net.ns_name(slot);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let (inner, outer) = (format!("{tag}s{slot}a"), format!("{tag}s{slot}b"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            let addr = Ipv4Addr::new(10, 77, subnet, 10 + slot as u8);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["link", "set", &outer, "netns", &bridge])?;
            ip(&["-n", &bridge, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &bridge, "link", "set", &outer, "up"])?;
            net.slots.push((IpAddr::V4(addr), TCP_PORT, UDP_PORT));
        }
        Ok(net)
    }

    /// Loopback, with `slots` silo slots on ports free now.
    pub fn loopback(slots: usize) -> anyhow::Result<Net> {
        let mut net = Net {
            kind: NetKind::Loopback,
            tag: format!("{PREFIX}{}", std::process::id()),
            slots: Vec::new(),
            namespaces: Vec::new(),
            root_link: None,
        };
        // Hold every socket until all are picked, so no two slots share a port.
        let mut held = Vec::new();
        for _ in 0..slots {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let ports = (tcp.local_addr()?.port(), udp.local_addr()?.port());
            net.slots
                .push((IpAddr::V4(Ipv4Addr::LOCALHOST), ports.0, ports.1));
            held.push((tcp, udp));
        }
        Ok(net)
    }

    /// Namespaces or loopback.
    pub fn kind(&self) -> NetKind {
        self.kind
    }

    fn ns_name(&self, slot: usize) -> String {
        format!("{}-s{slot}", self.tag)
    }

    /// The namespace file a silo of `slot` enters before it runs (namespace mode).
    pub fn ns_path(&self, slot: usize) -> Option<PathBuf> {
        (self.kind == NetKind::Netns).then(|| PathBuf::from("/run/netns").join(self.ns_name(slot)))
    }

    /// The TCP (grain traffic) address of `slot`.
    pub fn tcp(&self, slot: usize) -> SocketAddr {
        let (ip, tcp, _) = self.slots[slot];
        SocketAddr::new(ip, tcp)
    }

    /// The UDP (membership) address of `slot`.
    pub fn udp(&self, slot: usize) -> SocketAddr {
        let (ip, _, udp) = self.slots[slot];
        SocketAddr::new(ip, udp)
    }

    /// How the fault filter names `slot`'s UDP side: its IP in namespace mode (unique),
    /// its `IP:PORT` on loopback.
    pub fn udp_peer(&self, slot: usize) -> String {
        match self.kind {
            NetKind::Netns => self.slots[slot].0.to_string(),
            NetKind::Loopback => self.udp(slot).to_string(),
        }
    }

    /// As [`Net::udp_peer`], for TCP.
    pub fn tcp_peer(&self, slot: usize) -> String {
        match self.kind {
            NetKind::Netns => self.slots[slot].0.to_string(),
            NetKind::Loopback => self.tcp(slot).to_string(),
        }
    }

    /// Cuts `slot` off from everyone (namespace mode: its bridge port goes down), or
    /// reconnects it.
    pub fn set_isolated(&self, slot: usize, isolated: bool) -> anyhow::Result<()> {
        if self.kind != NetKind::Netns {
            bail!("link-level isolation needs --net netns");
        }
        let port = format!("{}s{slot}b", self.tag);
        let state = if isolated { "down" } else { "up" };
        ip(&[
            "-n",
            &format!("{}-br", self.tag),
            "link",
            "set",
            &port,
            state,
        ])
    }

    /// Removes everything created (also done on drop).
    pub fn teardown(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
        if let Some(link) = self.root_link.take() {
            let _ = ip(&["link", "del", &link]); // usually gone with its peer already
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests;
