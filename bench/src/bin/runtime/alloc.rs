//! Heap allocations per operation: the counting global allocator (off during the timed
//! scenarios) and the one-pass count of section 6.

use std::sync::Arc;

use granary_bench::alloc::{count_start, count_stop, CountingAlloc};
use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};

use crate::args::Args;
use crate::baseline::{b_activate_all, b_ask, b_counts, BMsg};
use crate::grains::{Bump, Cold, Count, Ping, Stored, Touch};
use crate::results::{Kind, Results};
use crate::scenarios::activate_all;
use crate::Fixtures;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Section 6: heap allocations per ask, tell and activation, and per baseline
/// operation. One pass: allocation counts are deterministic up to background noise.
pub(crate) async fn record_allocations(
    res: &mut Results,
    f: &Fixtures,
    args: &Args,
) -> anyhow::Result<()> {
    let Fixtures {
        hot,
        tell_one,
        b_hot,
        b_tell_one,
        stored_storage,
        ..
    } = f;
    res.section("6. heap allocations per operation (counting allocator, one pass)");
    let n = 20_000u64;
    count_start();
    for i in 0..n {
        hot[0].ask(Ping(i)).await?;
    }
    let (a, _) = count_stop();
    res.record(
        "allocations per ask",
        "allocs",
        Kind::Latency,
        Some("  baseline per round trip"),
        a as f64 / n as f64,
    );
    count_start();
    for _ in 0..n {
        tell_one[0].tell(Bump).await?;
    }
    tell_one[0].ask(Count).await?;
    let (a, _) = count_stop();
    // No ratio: a raw send allocates only one mailbox block per 32 messages.
    res.record(
        "allocations per tell",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / n as f64,
    );
    for stateful in [false, true] {
        let keys = 10_000;
        let storage: Arc<dyn GrainStorage> = if stateful {
            stored_storage.clone()
        } else {
            Arc::new(MemoryStorage::new())
        };
        let s2 = Silo::start(SiloConfig::default(), storage).await?;
        GrainRef::<Cold>::new(s2.router(), "warm")
            .ask(Touch)
            .await?;
        GrainRef::<Stored>::new(s2.router(), "warm")
            .ask(Touch)
            .await?;
        count_start();
        if stateful {
            activate_all::<Stored>(s2.router(), keys, args.activation_concurrency).await;
        } else {
            activate_all::<Cold>(s2.router(), keys, args.activation_concurrency).await;
        }
        let (a, _) = count_stop();
        let name = if stateful {
            "allocations per activation (stateful)"
        } else {
            "allocations per activation (stateless)"
        };
        res.record(
            name,
            "allocs",
            Kind::Latency,
            Some("  baseline per spawn+channel+round trip"),
            a as f64 / keys as f64,
        );
        s2.shutdown().await;
    }
    count_start();
    for i in 0..n {
        b_ask(&b_hot[0], i).await;
    }
    let (a, _) = count_stop();
    res.record(
        "  baseline per round trip",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / n as f64,
    );
    count_start();
    for _ in 0..n {
        b_tell_one[0].send(BMsg::Bump).await.expect("send");
    }
    b_counts(b_tell_one).await;
    let (a, _) = count_stop();
    res.record(
        "  baseline per send",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / n as f64,
    );
    count_start();
    let (_, table) = b_activate_all(10_000, args.activation_concurrency).await;
    let (a, _) = count_stop();
    drop(table);
    res.record(
        "  baseline per spawn+channel+round trip",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / 10_000.0,
    );
    Ok(())
}
