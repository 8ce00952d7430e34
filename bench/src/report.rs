//! The side-by-side results of the peer benchmarks: one [`Metric`] per measured figure,
//! with every system's values (one per repetition), written as JSON and printed as one
//! line per metric with Granary's cost relative to each other system.
//!
//! Ratios are always "Granary's cost ÷ the other's": time per operation (for rates, the
//! other's rate ÷ Granary's), latency or bytes. Below 1.0 Granary is cheaper, above it
//! dearer; a target such as "ask within 2× of raw mpsc" reads `cost × ≤ 2.0`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::median;

/// The system every ratio is computed for.
pub const GRANARY: &str = "granary";

/// Whether a bigger figure is better (rates) or worse (latency, bytes, allocations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Rates: more per second is better.
    Higher,
    /// Latencies, sizes, counts: less is better.
    Lower,
}

/// One measured figure for every system that ran it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    /// Stable name, e.g. `local.ask.seq.p50`.
    pub name: String,
    /// Unit of the values (`ns/msg`, `µs`, `asks/s`, `B/actor`).
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// `(system, values)`: one value per repetition (or per suite run, once merged).
    pub systems: Vec<(String, Vec<f64>)>,
}

impl Metric {
    /// An empty metric.
    pub fn new(name: &str, unit: &str, better: Better) -> Self {
        Self {
            name: name.to_owned(),
            unit: unit.to_owned(),
            better,
            systems: Vec::new(),
        }
    }

    /// Adds one value of `system`.
    pub fn push(&mut self, system: &str, value: f64) {
        match self.systems.iter_mut().find(|(s, _)| s == system) {
            Some((_, values)) => values.push(value),
            None => self.systems.push((system.to_owned(), vec![value])),
        }
    }

    /// The median of `system`'s values.
    pub fn median(&self, system: &str) -> Option<f64> {
        self.systems
            .iter()
            .find(|(s, _)| s == system)
            .map(|(_, v)| median(v))
    }

    /// Granary's cost relative to `other` (see the module docs); `None` if either is
    /// missing or zero.
    pub fn cost_ratio(&self, other: &str) -> Option<f64> {
        let g = self.median(GRANARY)?;
        let o = self.median(other)?;
        let r = match self.better {
            Better::Higher => o / g,
            Better::Lower => g / o,
        };
        r.is_finite().then_some(r)
    }
}

/// Every metric of one benchmark run, plus the conditions it ran under.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Which benchmark (`peers`, `remote`, `all`).
    pub bench: String,
    /// Smoke mode: tiny counts, figures meaningless.
    pub smoke: bool,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// `/proc/loadavg` (1, 5, 15 min) at the start and at the end.
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
    /// CPUs, runtime flavours, thread counts, pinning: free text, one entry per fact.
    pub setup: Vec<String>,
    /// The figures.
    pub metrics: Vec<Metric>,
}

impl Report {
    /// A report for `bench`, recording the load average now.
    pub fn start(bench: &str, smoke: bool) -> Self {
        Self {
            bench: bench.to_owned(),
            smoke,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            load_start: crate::sys::load_average(),
            ..Self::default()
        }
    }

    /// The metric named `name`, created on first use.
    pub fn metric(&mut self, name: &str, unit: &str, better: Better) -> &mut Metric {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return &mut self.metrics[i];
        }
        self.metrics.push(Metric::new(name, unit, better));
        self.metrics.last_mut().expect("just pushed")
    }

    /// Records one value.
    pub fn record(&mut self, name: &str, unit: &str, better: Better, system: &str, v: f64) {
        self.metric(name, unit, better).push(system, v);
    }

    /// Records the end-of-run load average.
    pub fn finish(&mut self) {
        self.load_end = crate::sys::load_average();
    }

    /// Writes the report as JSON to `path` (creating its directory).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// Reads a report written by [`Report::write`].
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
    }

    /// Prints the setup and one line per metric: every system's median, then
    /// Granary's cost relative to each other system.
    pub fn print(&self) {
        println!(
            "== {}{}: load average {} at start, {} at end",
            self.bench,
            if self.smoke {
                " (SMOKE: figures meaningless)"
            } else {
                ""
            },
            self.load_start,
            self.load_end
        );
        for fact in &self.setup {
            println!("   {fact}");
        }
        for m in &self.metrics {
            println!("{}", line(m));
        }
    }
}

/// One metric as one line: `name unit | system median … | cost ×: vs-system ratio …`.
pub fn line(m: &Metric) -> String {
    let mut out = format!("{:<34} {:>8} |", m.name, m.unit);
    for (system, values) in &m.systems {
        out.push_str(&format!(" {system} {}", fmt_value(median(values))));
    }
    let ratios: Vec<String> = m
        .systems
        .iter()
        .filter(|(s, _)| s != GRANARY)
        .filter_map(|(s, _)| m.cost_ratio(s).map(|r| format!("{s} {r:.2}")))
        .collect();
    if m.median(GRANARY).is_some() && !ratios.is_empty() {
        out.push_str(&format!(" | granary cost ×: {}", ratios.join(", ")));
    }
    out
}

/// A value with three significant figures and thousands grouping for big ones.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Merges several runs of the same benchmark: each system's values become the
/// per-run medians, so the merged median is a median of run medians.
pub fn merge(runs: &[Report]) -> Vec<Metric> {
    let mut merged: Vec<Metric> = Vec::new();
    for run in runs {
        for m in &run.metrics {
            let i = match merged.iter().position(|x| x.name == m.name) {
                Some(i) => i,
                None => {
                    merged.push(Metric::new(&m.name, &m.unit, m.better));
                    merged.len() - 1
                }
            };
            for (system, values) in &m.systems {
                merged[i].push(system, median(values));
            }
        }
    }
    merged
}

/// `bench/results/<name>` in the source tree.
pub fn results_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_granary_cost_over_the_other() {
        let mut rate = Metric::new("r", "asks/s", Better::Higher);
        rate.push(GRANARY, 100.0);
        rate.push("raw", 200.0);
        assert_eq!(rate.cost_ratio("raw"), Some(2.0));
        let mut lat = Metric::new("l", "µs", Better::Lower);
        lat.push(GRANARY, 30.0);
        lat.push("raw", 10.0);
        assert_eq!(lat.cost_ratio("raw"), Some(3.0));
        assert_eq!(lat.cost_ratio("absent"), None);
        assert!(line(&lat).contains("raw 3.00"));
    }

    #[test]
    fn merge_takes_run_medians() {
        let mut a = Report::default();
        a.record("m", "u", Better::Lower, GRANARY, 1.0);
        a.record("m", "u", Better::Lower, GRANARY, 3.0);
        let mut b = Report::default();
        b.record("m", "u", Better::Lower, GRANARY, 10.0);
        let merged = merge(&[a, b]);
        assert_eq!(merged[0].systems[0].1, vec![2.0, 10.0]);
        assert_eq!(fmt_value(1234567.0), "1,234,567");
    }
}
