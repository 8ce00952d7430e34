//! Grain-state storage benchmark, after Orleans' storage benchmark: a few grains, each
//! writing (then reading) its state in a loop, one operation at a time per grain as an
//! activation would, all grains concurrently.
//!
//! For each store it runs a write phase (every write passes the etag of the previous
//! one, so it exercises the conditional-write path) and then a read phase, each for
//! `--seconds`, and prints throughput and p50/p99/max latency per phase.
//!
//! Stores: `memory` (a baseline), `embedded` (redb in a temp dir, durable commits) and,
//! when `MONGODB_URI` is set, `mongodb` (a throwaway database, dropped at the end).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin storage -- \
//!     [--seconds 30] [--grains 10] [--state-bytes 10240] [--stores memory,embedded,mongodb]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use granary_bench::stats::percentile;
use granary_proto::GrainId;
use granary_runtime::GrainStorage;
use granary_silo::storage::{EmbeddedStorage, MemoryStorage, MongoOptions, MongoStorage};

/// Command-line settings.
#[derive(Debug)]
struct Args {
    /// Duration of each phase (write, read) per store.
    seconds: f64,
    /// Concurrent grains.
    grains: usize,
    /// Size of each grain's state.
    state_bytes: usize,
    /// Which stores to run, in order.
    stores: Vec<String>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            seconds: 30.0,
            grains: 10,
            state_bytes: 10 * 1024,
            stores: vec!["memory".into(), "embedded".into(), "mongodb".into()],
        };
        if granary_bench::smoke::enabled() {
            // CI: a fraction of a second per phase, memory and embedded stores only.
            args.seconds = 0.2;
            args.stores = vec!["memory".into(), "embedded".into()];
        }
        let mut it = granary_bench::smoke::args().into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--seconds" => args.seconds = value()?.parse()?,
                "--grains" => args.grains = value()?.parse()?,
                "--state-bytes" => args.state_bytes = value()?.parse()?,
                "--stores" => args.stores = value()?.split(',').map(str::to_owned).collect(),
                "-h" | "--help" => {
                    println!(
                        "usage: storage [--seconds N] [--grains N] [--state-bytes N] [--smoke] \
                         [--stores memory,embedded,mongodb]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        if args.seconds.is_nan() || args.seconds <= 0.0 || args.grains == 0 {
            bail!("--seconds and --grains must be positive");
        }
        Ok(args)
    }
}

/// Results of one phase against one store.
struct Phase {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    /// Sorted latencies of the successful operations.
    latencies: Vec<Duration>,
}

impl Phase {
    fn percentile(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }

    fn row(&self, store: &str, op: &str) -> String {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        format!(
            "{store:<9} {op:<6} {:>9} {:>10.0} {:>9} {:>9} {:>9} {:>7}",
            self.ops,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.errors,
        )
    }
}

/// Runs `op` in a loop on every grain concurrently until `duration` has passed.
async fn phase<F, Fut>(grains: usize, duration: Duration, op: F) -> Phase
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..grains)
        .map(|g| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(g, i).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            if errors <= 3 {
                                eprintln!("grain {g}: {e:#}");
                            }
                        }
                    }
                    i += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut result = Phase {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await.expect("benchmark task panicked");
        result.latencies.extend(latencies);
        result.errors += errors;
    }
    result.elapsed = started.elapsed();
    result.ops = result.latencies.len();
    result.latencies.sort_unstable();
    result
}

/// Write phase then read phase against `store`.
async fn bench_store(store: Arc<dyn GrainStorage>, args: &Args) -> anyhow::Result<(Phase, Phase)> {
    let ids: Arc<Vec<GrainId>> = Arc::new(
        (0..args.grains)
            .map(|i| GrainId::new("bench.storage/v1", format!("grain-{i}")))
            .collect(),
    );
    let mut seed = vec![0u8; args.state_bytes];
    fastrand::fill(&mut seed);
    // Each grain's current etag; only that grain's task touches its slot.
    let mut etags = Vec::new();
    for id in ids.iter() {
        etags.push(store.write(id, &seed, None).await?);
    }
    let etags: Arc<Vec<tokio::sync::Mutex<String>>> =
        Arc::new(etags.into_iter().map(tokio::sync::Mutex::new).collect());
    let duration = Duration::from_secs_f64(args.seconds);

    let writes = {
        let (store, ids, etags, seed) = (Arc::clone(&store), Arc::clone(&ids), etags, seed);
        phase(args.grains, duration, move |g, i| {
            let (store, ids, etags) = (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&etags));
            let mut state = seed.clone();
            state[..8].copy_from_slice(&i.to_le_bytes());
            async move {
                let mut etag = etags[g].lock().await;
                *etag = store.write(&ids[g], &state, Some(etag.as_str())).await?;
                Ok(())
            }
        })
        .await
    };
    let reads = {
        let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
        phase(args.grains, duration, move |g, _| {
            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
            async move {
                store.read(&ids[g]).await?.context("state vanished")?;
                Ok(())
            }
        })
        .await
    };
    Ok((writes, reads))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    println!(
        "granary storage benchmark: {} grains, {} B state, {} s per phase",
        args.grains, args.state_bytes, args.seconds
    );
    let mut rows = Vec::new();
    for name in &args.stores {
        let (store, cleanup): (Arc<dyn GrainStorage>, Cleanup) = match name.as_str() {
            "memory" => (Arc::new(MemoryStorage::new()), Cleanup::None),
            "embedded" => {
                let dir = tempfile::tempdir()?;
                let store = EmbeddedStorage::open(dir.path().join("bench.redb"))?;
                (Arc::new(store), Cleanup::Dir { _dir: dir })
            }
            "mongodb" => {
                let Ok(uri) = std::env::var("MONGODB_URI") else {
                    println!("mongodb: skipped, MONGODB_URI not set");
                    continue;
                };
                let database = format!("granary_bench_{:08x}", fastrand::u32(..));
                let options = MongoOptions {
                    database: database.clone(),
                    ..MongoOptions::default()
                };
                let store = MongoStorage::connect(&uri, options).await?;
                (Arc::new(store), Cleanup::Mongo { uri, database })
            }
            other => bail!("unknown store {other:?}; expected memory, embedded or mongodb"),
        };
        eprintln!("running {name} …");
        let (writes, reads) = bench_store(store, &args).await?;
        rows.push(writes.row(name, "write"));
        rows.push(reads.row(name, "read"));
        cleanup.run().await;
    }
    println!(
        "{:<9} {:<6} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "store", "op", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// What to remove after a store's run.
enum Cleanup {
    None,
    /// The embedded store's temp dir, deleted on drop.
    Dir {
        _dir: tempfile::TempDir,
    },
    /// The benchmark's MongoDB database.
    Mongo {
        uri: String,
        database: String,
    },
}

impl Cleanup {
    async fn run(self) {
        if let Cleanup::Mongo { uri, database } = self {
            match mongodb::Client::with_uri_str(&uri).await {
                Ok(client) => {
                    if let Err(e) = client.database(&database).drop().await {
                        eprintln!("could not drop {database}: {e}");
                    }
                }
                Err(e) => eprintln!("could not drop {database}: {e}"),
            }
        }
    }
}
