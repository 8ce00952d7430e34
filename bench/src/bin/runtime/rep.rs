//! One repetition of the timed scenarios 1–5: the runtime's, then the baselines'.

use std::sync::Arc;

use granary_silo::storage::MemoryStorage;

use crate::args::Args;
use crate::baseline::{b_activate_all, b_concurrent, b_sequential, b_tell};
use crate::grains::{Cold, Stored};
use crate::results::{Kind, Results};
use crate::scenarios::{activation_run, ask_concurrent, ask_sequential, tell_throughput};
use crate::Fixtures;

/// Runs every timed scenario once, recording into `res`.
pub(crate) async fn one_rep(res: &mut Results, f: &Fixtures, args: &Args) -> anyhow::Result<()> {
    let Fixtures {
        hot,
        many,
        tell_one,
        tell_many,
        b_hot,
        b_many,
        b_tell_one,
        b_tell_many,
        stored_storage,
        ..
    } = f;
    let w = args.window;
    res.section("1. ask, one hot grain");
    let (rate, p50, p99) = ask_sequential(&hot[0], w).await;
    res.record(
        "ask 1 grain, 1 caller (sequential)",
        "asks/s",
        Kind::Rate,
        Some("baseline 1 server, 1 caller"),
        rate,
    );
    res.record(
        "  latency of one ask, p50",
        "µs",
        Kind::Latency,
        Some("  baseline round trip, p50"),
        p50,
    );
    res.record(
        "  latency of one ask, p99",
        "µs",
        Kind::Latency,
        Some("  baseline round trip, p99"),
        p99,
    );
    for &n in &args.hot_callers {
        let rate = ask_concurrent(hot, n, w).await;
        res.record(
            &format!("ask 1 grain, {n} callers"),
            "asks/s",
            Kind::Rate,
            Some(&format!("baseline 1 server, {n} callers")),
            rate,
        );
    }

    res.section(&format!("2. ask, spread over {} grains", args.grains));
    for &c in &args.many_callers {
        let rate = ask_concurrent(many, c, w).await;
        res.record(
            &format!("ask {} grains, {c} callers", args.grains),
            "asks/s",
            Kind::Rate,
            Some(&format!("baseline {} servers, {c} callers", args.grains)),
            rate,
        );
    }

    res.section("3. tell (timed until all handled)");
    let rate = tell_throughput(tell_one, 1, w).await;
    res.record(
        "tell 1 grain, 1 sender",
        "tells/s",
        Kind::Rate,
        Some("baseline send, 1 server, 1 sender"),
        rate,
    );
    let rate = tell_throughput(tell_many, args.tell_senders, w).await;
    res.record(
        &format!("tell {} grains, {} senders", args.grains, args.tell_senders),
        "tells/s",
        Kind::Rate,
        Some(&format!(
            "baseline send, {} servers, {} senders",
            args.grains, args.tell_senders
        )),
        rate,
    );

    res.section(&format!(
        "4. activations: {} fresh keys, {} callers, fresh silo per rep",
        args.activations, args.activation_concurrency
    ));
    let (rate, down) = activation_run::<Cold>(Arc::new(MemoryStorage::new()), args).await?;
    res.record(
        "activate stateless grain (State = ())",
        "act/s",
        Kind::Rate,
        Some("baseline spawn+channel+round trip"),
        rate,
    );
    res.record(
        "  silo shutdown with them live",
        "s",
        Kind::Latency,
        None,
        down,
    );
    let (rate, down) = activation_run::<Stored>(stored_storage.clone(), args).await?;
    res.record(
        "activate stateful grain (MemoryStorage read)",
        "act/s",
        Kind::Rate,
        Some("baseline spawn+channel+round trip"),
        rate,
    );
    res.record(
        "  silo shutdown with them live ",
        "s",
        Kind::Latency,
        None,
        down,
    );

    res.section("5. baseline: tokio mpsc(1024) + oneshot, server task per grain");
    let (rate, p50, p99) = b_sequential(&b_hot[0], w).await;
    res.record(
        "baseline 1 server, 1 caller",
        "req/s",
        Kind::Rate,
        None,
        rate,
    );
    res.record("  baseline round trip, p50", "µs", Kind::Latency, None, p50);
    res.record("  baseline round trip, p99", "µs", Kind::Latency, None, p99);
    for &n in &args.hot_callers {
        let rate = b_concurrent(b_hot, n, w).await;
        res.record(
            &format!("baseline 1 server, {n} callers"),
            "req/s",
            Kind::Rate,
            None,
            rate,
        );
    }
    for &c in &args.many_callers {
        let rate = b_concurrent(b_many, c, w).await;
        res.record(
            &format!("baseline {} servers, {c} callers", args.grains),
            "req/s",
            Kind::Rate,
            None,
            rate,
        );
    }
    let rate = b_tell(b_tell_one, 1, w).await;
    res.record(
        "baseline send, 1 server, 1 sender",
        "msgs/s",
        Kind::Rate,
        None,
        rate,
    );
    let rate = b_tell(b_tell_many, args.tell_senders, w).await;
    res.record(
        &format!(
            "baseline send, {} servers, {} senders",
            args.grains, args.tell_senders
        ),
        "msgs/s",
        Kind::Rate,
        None,
        rate,
    );
    let (rate, table) = b_activate_all(args.activations, args.activation_concurrency).await;
    drop(table);
    res.record(
        "baseline spawn+channel+round trip",
        "act/s",
        Kind::Rate,
        None,
        rate,
    );
    Ok(())
}
