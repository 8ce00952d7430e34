//! The results table: one row per scenario, its value in every repetition, reported as
//! median / min / max and as a cost relative to its baseline row.

use granary_bench::stats::{median, min_max};

/// How a row's figures compare: higher-is-better rates or lower-is-better latencies.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Rate,
    Latency,
}

struct Row {
    name: String,
    unit: &'static str,
    kind: Kind,
    values: Vec<f64>,
    /// Name of the row this one is compared with.
    baseline: Option<String>,
}

#[derive(Default)]
pub(crate) struct Results {
    rows: Vec<Row>,
}

impl Results {
    pub(crate) fn record(
        &mut self,
        name: &str,
        unit: &'static str,
        kind: Kind,
        baseline: Option<&str>,
        v: f64,
    ) {
        match self.rows.iter_mut().find(|r| r.name == name) {
            Some(row) => row.values.push(v),
            None => self.rows.push(Row {
                name: name.to_owned(),
                unit,
                kind,
                values: vec![v],
                baseline: baseline.map(str::to_owned),
            }),
        }
    }

    fn median(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| median(&r.values))
    }

    pub(crate) fn print(&self) {
        println!(
            "{:<52} {:>8} {:>12} {:>12} {:>12} {:>11}",
            "scenario", "unit", "median", "min", "max", "cost ×base"
        );
        println!("{}", "-".repeat(112));
        for row in &self.rows {
            if row.name.starts_with('#') {
                println!("{}", &row.name[1..]);
                continue;
            }
            let (lo, hi) = min_max(&row.values);
            let med = median(&row.values);
            let ratio = row
                .baseline
                .as_deref()
                .and_then(|b| self.median(b))
                .map(|b| match row.kind {
                    Kind::Rate => format!("{:.2}×", b / med),
                    Kind::Latency => format!("{:.2}×", med / b),
                })
                .unwrap_or_default();
            println!(
                "{:<52} {:>8} {:>12} {:>12} {:>12} {:>11}",
                row.name,
                row.unit,
                fmt(med, row.kind),
                fmt(lo, row.kind),
                fmt(hi, row.kind),
                ratio
            );
        }
    }

    pub(crate) fn section(&mut self, title: &str) {
        let name = format!("#{title}");
        if !self.rows.iter().any(|r| r.name == name) {
            self.rows.push(Row {
                name,
                unit: "",
                kind: Kind::Rate,
                values: vec![],
                baseline: None,
            });
        }
    }
}

fn fmt(v: f64, kind: Kind) -> String {
    match kind {
        Kind::Latency => format!("{v:.2}"),
        Kind::Rate if v >= 100.0 => {
            // Thousands separators for readability.
            let s = format!("{:.0}", v);
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Kind::Rate => format!("{v:.1}"),
    }
}
