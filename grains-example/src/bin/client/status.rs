//! `client status`: the cluster as plain-text tables, from any gateway (no HTTP port
//! needed). Two reports are taken an interval apart, so rates and the p99 latency are
//! those of that interval; `--watch` repeats every interval.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use granary_client::status::{
    ClusterStatus, LatencyBuckets, MemberView, RoleKind, SiloState, SiloStatus,
};
use granary_client::Client;
use tokio::time::Instant;

/// How many events the table shows.
const EVENTS_SHOWN: usize = 10;
/// How many hot grains the table shows.
const HOT_SHOWN: usize = 10;

/// Prints the cluster status once (after one interval), or every interval with `watch`.
pub(crate) async fn run(client: &Client, interval: Duration, watch: bool) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let styled = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut before = client.cluster_status().await?;
    let mut taken = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let after = match client.cluster_status().await {
            Ok(status) => status,
            Err(e) if watch => {
                println!(
                    "cannot get the cluster status through {}: {e} (retrying)",
                    client.gateway()
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        let text = render(&View {
            before: &before,
            after: &after,
            elapsed: now - taken,
            now_unix_ms: unix_ms(),
            gateway: client.gateway(),
            styled,
        });
        let mut out = std::io::stdout().lock();
        if watch && terminal {
            // Home and clear, so the tables redraw in place.
            write!(out, "\x1b[H\x1b[2J")?;
        } else if watch {
            writeln!(out, "----")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !watch {
            return Ok(());
        }
        before = after;
        taken = now;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one screen is made of.
pub(crate) struct View<'a> {
    /// The earlier report (rates are counted from it).
    pub(crate) before: &'a ClusterStatus,
    /// The report shown.
    pub(crate) after: &'a ClusterStatus,
    /// Time between the two.
    pub(crate) elapsed: Duration,
    /// Now, for the events' ages.
    pub(crate) now_unix_ms: u64,
    /// Who answered.
    pub(crate) gateway: SocketAddr,
    /// Bold headings and a red `dead` (a terminal, without `NO_COLOR`).
    pub(crate) styled: bool,
}

/// The whole screen.
pub(crate) fn render(view: &View<'_>) -> String {
    let after = view.after;
    let count = |state: SiloState| after.members.iter().filter(|m| m.state == state).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster: master {}, {} active, {} dead, {} left (via gateway {}); rates over the last {:.1}s",
        after.master.tcp,
        count(SiloState::Active),
        count(SiloState::Dead),
        count(SiloState::Leaving),
        view.gateway,
        view.elapsed.as_secs_f64(),
    );
    section(&mut out, "SILOS", &silos(view), view.styled);
    for (id, why) in &after.unanswered {
        let _ = writeln!(out, "no report from {}: {why}", id.tcp);
    }
    section(&mut out, "GRAIN TYPES", &grain_types(view), view.styled);
    let _ = writeln!(
        out,
        "MSG/S and P99 over the last {:.1}s; MESSAGES and P99 ALL since each silo started; \
         a p99 is the upper bound of its latency bucket",
        view.elapsed.as_secs_f64()
    );
    section(&mut out, "HOT GRAINS", &hot_grains(after), view.styled);
    section(
        &mut out,
        &format!("EVENTS (last {EVENTS_SHOWN})"),
        &events(after, view.now_unix_ms),
        view.styled,
    );
    out
}

fn section(out: &mut String, title: &str, table: &Table, styled: bool) {
    out.push('\n');
    if styled {
        let _ = writeln!(out, "\x1b[1m{title}\x1b[0m");
    } else {
        let _ = writeln!(out, "{title}");
    }
    table.render(out, styled);
}

/// One row per member, master first, live before gone; dead and departed silos show
/// what their last heartbeat said.
fn silos(view: &View<'_>) -> Table {
    let after = view.after;
    let mut table = Table::new(&[
        ("ROLE", Align::Left),
        ("ADDRESS", Align::Left),
        ("STATE", Align::Left),
        ("UPTIME", Align::Right),
        ("ACTIVATIONS", Align::Right),
        ("QUEUE", Align::Right),
        ("CPU", Align::Right),
        ("RSS", Align::Right),
    ]);
    let mut members: Vec<&MemberView> = after.members.iter().collect();
    members.sort_by_key(|m| (m.id != after.master, m.state != SiloState::Active, m.id));
    for member in members {
        let report = after.silos.iter().find(|s| s.id == member.id);
        let row = match report {
            Some(silo) => {
                let earlier = view.before.silos.iter().find(|s| s.id == silo.id);
                vec![
                    silo.role.as_str().to_owned(),
                    silo.id.tcp.to_string(),
                    silo.state.as_str().to_owned(),
                    duration(Duration::from_millis(silo.uptime_ms)),
                    silo.activations.to_string(),
                    silo.queue_depth.to_string(),
                    cpu(earlier, silo, view.elapsed),
                    bytes(silo.rss_bytes),
                ]
            }
            None => vec![
                member.role.as_str().to_owned(),
                member.id.tcp.to_string(),
                member.state.as_str().to_owned(),
                "-".into(),
                last_heard(member, member.activations),
                last_heard(member, member.queue_depth),
                "-".into(),
                "-".into(),
            ],
        };
        table.row(row);
    }
    table
}

/// A figure from a heartbeat: as is for a live silo, `-` for a gone one (its last
/// report is stale).
fn last_heard(member: &MemberView, figure: u64) -> String {
    if member.state == SiloState::Active && member.role == RoleKind::Slave {
        // Only slaves report load in heartbeats.
        figure.to_string()
    } else {
        "-".into()
    }
}

/// CPU use over the interval, as a percentage of one core (`-` without an earlier
/// report of the same silo).
fn cpu(earlier: Option<&SiloStatus>, now: &SiloStatus, elapsed: Duration) -> String {
    match earlier {
        Some(earlier) if !elapsed.is_zero() => {
            let used = now.cpu_ms.saturating_sub(earlier.cpu_ms) as f64;
            format!("{:.0}%", used / elapsed.as_secs_f64() / 10.0)
        }
        _ => "-".into(),
    }
}

/// Per grain type, summed over the silos.
fn grain_types(view: &View<'_>) -> Table {
    #[derive(Default)]
    struct Sum {
        activations: u64,
        queue: u64,
        messages: u64,
        interval_messages: u64,
        interval: LatencyBuckets,
        all: LatencyBuckets,
    }
    let mut sums: BTreeMap<&str, Sum> = BTreeMap::new();
    for silo in &view.after.silos {
        let earlier = view.before.silos.iter().find(|s| s.id == silo.id);
        for t in &silo.grain_types {
            let sum = sums.entry(&t.grain_type).or_default();
            sum.activations += t.activations;
            sum.queue += t.queue_depth;
            sum.messages += t.messages;
            add(&mut sum.all, &t.latency);
            // A silo without an earlier report has no interval yet.
            let before =
                earlier.and_then(|e| e.grain_types.iter().find(|b| b.grain_type == t.grain_type));
            match (earlier, before) {
                (Some(_), Some(before)) => {
                    sum.interval_messages += t.messages.saturating_sub(before.messages);
                    add(&mut sum.interval, &t.latency.since(&before.latency));
                }
                (Some(_), None) => {
                    sum.interval_messages += t.messages;
                    add(&mut sum.interval, &t.latency);
                }
                (None, _) => {}
            }
        }
    }
    let mut table = Table::new(&[
        ("TYPE", Align::Left),
        ("ACTIVATIONS", Align::Right),
        ("QUEUE", Align::Right),
        ("MSG/S", Align::Right),
        ("P99", Align::Right),
        ("MESSAGES", Align::Right),
        ("P99 ALL", Align::Right),
    ]);
    let secs = view.elapsed.as_secs_f64().max(0.001);
    for (name, sum) in sums {
        table.row(vec![
            name.to_owned(),
            sum.activations.to_string(),
            sum.queue.to_string(),
            format!("{:.1}", sum.interval_messages as f64 / secs),
            p99(&sum.interval),
            sum.messages.to_string(),
            p99(&sum.all),
        ]);
    }
    table
}

/// Adds `more`'s counts to `total`'s.
fn add(total: &mut LatencyBuckets, more: &LatencyBuckets) {
    if total.counts.len() < more.counts.len() {
        total.counts.resize(more.counts.len(), 0);
    }
    for (sum, count) in total.counts.iter_mut().zip(&more.counts) {
        *sum += count;
    }
    total.sum_us += more.sum_us;
}

fn p99(buckets: &LatencyBuckets) -> String {
    buckets.quantile(0.99).map_or_else(|| "-".into(), duration)
}

/// The busiest activations of the whole cluster.
fn hot_grains(after: &ClusterStatus) -> Table {
    let mut hot: Vec<_> = after
        .silos
        .iter()
        .flat_map(|s| s.hot_grains.iter().map(move |g| (s, g)))
        .collect();
    hot.sort_by(|(_, a), (_, b)| {
        (b.rate_milli, b.queue_depth, b.messages).cmp(&(a.rate_milli, a.queue_depth, a.messages))
    });
    let mut table = Table::new(&[
        ("TYPE", Align::Left),
        ("KEY", Align::Left),
        ("SILO", Align::Left),
        ("MSG/S", Align::Right),
        ("QUEUE", Align::Right),
        ("MESSAGES", Align::Right),
        ("COPIES", Align::Right),
    ]);
    for (silo, grain) in hot.into_iter().take(HOT_SHOWN) {
        table.row(vec![
            grain.grain_type.clone(),
            grain.key.clone(),
            silo.id.tcp.to_string(),
            format!("{:.1}", grain.rate_milli as f64 / 1000.0),
            grain.queue_depth.to_string(),
            grain.messages.to_string(),
            grain.replicas.to_string(),
        ]);
    }
    table
}

/// The last events, oldest first.
fn events(after: &ClusterStatus, now_unix_ms: u64) -> Table {
    let mut table = Table::new(&[
        ("AGO", Align::Right),
        ("EVENT", Align::Left),
        ("SILO", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    let skip = after.events.len().saturating_sub(EVENTS_SHOWN);
    for event in &after.events[skip..] {
        let ago = Duration::from_millis(now_unix_ms.saturating_sub(event.at_unix_ms));
        table.row(vec![
            duration(ago),
            event.kind.as_str().to_owned(),
            event.silo.tcp.to_string(),
            event.detail.clone(),
        ]);
    }
    table
}

/// `850µs`, `12.3ms`, `4.2s`, `5m12s`, `3h07m`.
fn duration(d: Duration) -> String {
    let us = d.as_micros();
    let secs = d.as_secs();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// `812 KiB`, `12.3 MiB`, `1.1 GiB`.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = n as f64;
    if n < KIB * KIB {
        format!("{:.0} KiB", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.1} MiB", n / KIB / KIB)
    } else {
        format!("{:.1} GiB", n / KIB / KIB / KIB)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart.
struct Table {
    header: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[(&'static str, Align)]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String, styled: bool) {
        if self.rows.is_empty() {
            out.push_str("(none)\n");
            return;
        }
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.header[i].0.len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let header: Vec<String> = self.header.iter().map(|(h, _)| (*h).to_owned()).collect();
        self.line(out, &header, &widths, styled, true);
        for row in &self.rows {
            self.line(out, row, &widths, styled, false);
        }
    }

    fn line(
        &self,
        out: &mut String,
        cells: &[String],
        widths: &[usize],
        styled: bool,
        header: bool,
    ) {
        let mut line = String::new();
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            let (left, right) = match self.header[i].1 {
                // The last column is not padded on the right: no trailing blanks.
                Align::Left if i == last => (0, 0),
                Align::Left => (0, pad),
                Align::Right => (pad, 0),
            };
            line.extend(std::iter::repeat_n(' ', left));
            match (styled, header, cell.as_str()) {
                (true, true, _) => {
                    let _ = write!(line, "\x1b[1m{cell}\x1b[0m");
                }
                (true, false, "dead") => {
                    let _ = write!(line, "\x1b[31m{cell}\x1b[0m");
                }
                _ => line.push_str(cell),
            }
            line.extend(std::iter::repeat_n(' ', right));
            if i != last {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
#[path = "status/tests.rs"]
mod tests;
