//! Memory per live activation, measured in a child process (this binary re-run with
//! `--rss-child KIND`): VmRSS and live heap before and after holding all activations.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use granary_bench::sys::vm_rss_bytes;
use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};

use crate::args::Args;
use crate::baseline::{b_activate_all, b_ask, spawn_server, BMsg};
use crate::grains::{Cold, Stored, Touch};
use crate::scenarios::{activate_all, filled_storage};
use granary_bench::alloc::{count_start, count_stop};

/// Child mode: hold `args.activations` activations of `kind` and print the RSS delta.
pub(crate) async fn rss_child(kind: &str, args: &Args) -> anyhow::Result<()> {
    let n = args.activations;
    let conc = args.activation_concurrency;
    let (before, after) = match kind {
        "stateless" | "stateful" => {
            let storage: Arc<dyn GrainStorage> = if kind == "stateful" {
                filled_storage(n).await
            } else {
                Arc::new(MemoryStorage::new())
            };
            let silo = Silo::start(SiloConfig::default(), storage).await?;
            let router = silo.router();
            // Warm the runtime (worker threads, registry, timer wheel) before measuring.
            GrainRef::<Cold>::new(router.clone(), "warm")
                .ask(Touch)
                .await?;
            GrainRef::<Stored>::new(router.clone(), "warm")
                .ask(Touch)
                .await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = vm_rss_bytes();
            count_start();
            if kind == "stateful" {
                activate_all::<Stored>(router, n, conc).await;
            } else {
                activate_all::<Cold>(router, n, conc).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = vm_rss_bytes();
            assert!(silo.load().0 > n);
            (before, after)
        }
        "baseline" => {
            let warm = spawn_server(8);
            b_ask(&warm, 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = vm_rss_bytes();
            count_start();
            let (_, table) = b_activate_all(n, conc).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = vm_rss_bytes();
            assert_eq!(table.lock().unwrap().len(), n);
            (before, after)
        }
        other => bail!("unknown --rss-child kind {other}"),
    };
    let (_, heap) = count_stop();
    println!("RSS {before} {after} {n} {heap}");
    // Skip the teardown of everything held.
    std::process::exit(0);
}

/// Memory held per live activation, from a probe child.
pub(crate) struct MemProbe {
    /// VmRSS growth per activation.
    rss_per: f64,
    /// Live heap growth (bytes requested from the allocator) per activation.
    heap_per: f64,
    before: u64,
    after: u64,
}

/// Runs the probe child for `kind`.
pub(crate) fn probe_rss(kind: &str, args: &Args) -> anyhow::Result<MemProbe> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "--rss-child",
            kind,
            "--activations",
            &args.activations.to_string(),
            "--activation-concurrency",
            &args.activation_concurrency.to_string(),
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RSS "))
        .with_context(|| {
            format!(
                "probe {kind} failed: {}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let f: Vec<i64> = line[4..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (before, after, n, heap) = (f[0] as u64, f[1] as u64, f[2] as f64, f[3] as f64);
    Ok(MemProbe {
        rss_per: after.saturating_sub(before) as f64 / n,
        heap_per: heap / n,
        before,
        after,
    })
}

/// Runs the probe child for each kind of activation and the baseline.
pub(crate) fn probe_all(args: &Args) -> anyhow::Result<Vec<(&'static str, MemProbe)>> {
    let mut mem = Vec::new();
    for kind in ["stateless", "stateful", "baseline"] {
        mem.push((kind, probe_rss(kind, args)?));
    }
    Ok(mem)
}

/// Prints the memory section of the report.
pub(crate) fn print_memory(mem: &[(&str, MemProbe)], args: &Args) {
    println!();
    println!(
        "Memory per live activation (child process, VmRSS before/after {} activations, 1 run):",
        args.activations
    );
    println!(
        "  (a mailbox's first tokio mpsc block: 32 slots × size_of::<Envelope>() = 32 × {} bytes; baseline 32 × {} bytes)",
        std::mem::size_of::<granary_runtime::envelope::Envelope>(),
        std::mem::size_of::<BMsg>()
    );
    let base = mem
        .iter()
        .find(|(k, _)| *k == "baseline")
        .map(|(_, m)| m.rss_per);
    for (kind, m) in mem {
        let ratio = match base {
            Some(b) if *kind != "baseline" && b > 0.0 => {
                format!("  {:.1}× baseline", m.rss_per / b)
            }
            _ => String::new(),
        };
        println!(
            "  {:<10} RSS {:>6.0} B/activation, live heap {:>6.0} B/activation   (VmRSS {:.1} -> {:.1} MiB){}",
            kind,
            m.rss_per,
            m.heap_per,
            m.before as f64 / 1048576.0,
            m.after as f64 / 1048576.0,
            ratio
        );
    }
}
