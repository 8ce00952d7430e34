//! `client lock …`, `client var …` and `client beacon …`: the coordination grains
//! ([`Lock`], [`Variable`]) and the reminder example ([`Beacon`]) from the command line.
//! Output is bare values, one per line, for scripts.

use std::time::Duration;

use clap::Subcommand;
use granary_client::Client;
use granary_example::beacon::Beat;
use granary_example::lock::acquire;
use granary_example::{
    Arm, Beacon, Beats, Disarm, Inspect, Lock, Release, Renew, VarGet, VarSet, VarUnwatch,
    VarWatch, Variable, WatchOpen, WatchPoll, Watcher,
};

/// How often `lock acquire` asks again while queued, and `var watch` polls its watcher.
const POLL: Duration = Duration::from_millis(100);

/// How long `var watch`'s watcher stays subscribed without a poll (a client that died).
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Acquire lock NAME (waiting in line); prints the fencing token.
    Acquire {
        name: String,
        /// Who holds it (default: `client-PID`); pass the same to queue again.
        #[arg(long)]
        owner: Option<String>,
        /// The lease: the lock passes on if it is not renewed or released by then.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        lease: Duration,
        /// Give up (exit 1) if not acquired within this time.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        wait: Duration,
    },
    /// Release lock NAME held with TOKEN; prints whether it was still held.
    Release { name: String, token: u64 },
    /// Renew the lease of TOKEN on lock NAME; prints the new lease.
    Renew {
        name: String,
        token: u64,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        lease: Duration,
    },
    /// Show lock NAME: holder, token, lease left, waiters.
    Status { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum VarCommand {
    /// Print variable NAME as `VERSION VALUE`.
    Get { name: String },
    /// Set variable NAME; prints the new version.
    Set {
        name: String,
        value: String,
        /// Only if the version is still this one (compare-and-set).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Print variable NAME as `VERSION VALUE`, then every change, until interrupted.
    Watch {
        name: String,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BeaconCommand {
    /// Register beacon KEY's durable reminder, one beat per PERIOD (at least 1s).
    Arm {
        key: String,
        #[arg(value_parser = humantime::parse_duration)]
        period: Duration,
    },
    /// Remove beacon KEY's reminder; prints whether there was one.
    Disarm { key: String },
    /// Print beacon KEY's recorded beats: `DUE_UNIX_MS LATE_MS MISSED`, one per line.
    Beats { key: String },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) async fn lock(client: &Client, command: LockCommand, t: Duration) -> anyhow::Result<()> {
    match command {
        LockCommand::Acquire {
            name,
            owner,
            lease,
            wait,
        } => {
            let owner = owner.unwrap_or_else(|| format!("client-{}", std::process::id()));
            match acquire(&client.grain::<Lock>(&name), &owner, lease, POLL, wait).await? {
                Some(token) => println!("{token}"),
                None => anyhow::bail!("lock {name} not acquired within {wait:?}"),
            }
        }
        LockCommand::Release { name, token } => {
            let released = client
                .grain::<Lock>(name)
                .ask(Release { token })
                .timeout(t)
                .await?;
            println!("{released}");
        }
        LockCommand::Renew { name, token, lease } => {
            let lease_ms = client
                .grain::<Lock>(name)
                .ask(Renew {
                    token,
                    lease_ms: ms(lease),
                })
                .timeout(t)
                .await?;
            println!("{:?}", Duration::from_millis(lease_ms));
        }
        LockCommand::Status { name } => {
            let view = client.grain::<Lock>(name).ask(Inspect).timeout(t).await?;
            match view.holder {
                Some(h) => {
                    let left = h.expires_unix_ms.saturating_sub(now_unix_ms());
                    println!(
                        "held by {} with token {} ({left} ms left)",
                        h.owner, h.token
                    );
                }
                None => println!("free (last token {})", view.last_token),
            }
            for (i, w) in view.waiters.iter().enumerate() {
                println!("waiter {}: {w}", i + 1);
            }
        }
    }
    Ok(())
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, ms)
}

fn show(version: u64, value: Option<&str>) {
    println!("{version} {}", value.unwrap_or(""));
}

pub(crate) async fn var(client: &Client, command: VarCommand, t: Duration) -> anyhow::Result<()> {
    match command {
        VarCommand::Get { name } => {
            let (version, value) = client
                .grain::<Variable>(name)
                .ask(VarGet)
                .timeout(t)
                .await?;
            show(version, value.as_deref());
        }
        VarCommand::Set {
            name,
            value,
            if_version,
        } => {
            let version = client
                .grain::<Variable>(name)
                .ask(VarSet { value, if_version })
                .timeout(t)
                .await?;
            println!("{version}");
        }
        VarCommand::Watch { name, count } => watch(client, &name, count, t).await?,
    }
    Ok(())
}

/// Subscribes a watcher grain of its own and prints what it gets; on Ctrl-C (or after
/// `count` changes) unsubscribes it.
async fn watch(
    client: &Client,
    name: &str,
    count: Option<usize>,
    t: Duration,
) -> anyhow::Result<()> {
    let key = format!("client-{}-{:016x}", std::process::id(), fastrand_u64());
    let var = client.grain::<Variable>(name);
    let watcher = client.grain::<Watcher>(&key);
    let subscribe = || async {
        watcher
            .ask(WatchOpen {
                timeout_ms: ms(WATCH_TIMEOUT),
            })
            .timeout(t)
            .await?;
        var.ask(VarWatch {
            watcher: key.clone(),
        })
        .timeout(t)
        .await
    };
    let (mut version, value) = subscribe().await?;
    show(version, value.as_deref());
    let mut printed = 0usize;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while count.is_none_or(|n| printed < n) {
        tokio::select! {
            _ = &mut ctrl_c => break,
            () = tokio::time::sleep(POLL) => {}
        }
        match watcher.ask(WatchPoll).timeout(t).await {
            Ok(polled) => {
                if polled.coalesced > 0 {
                    eprintln!("({} changes coalesced)", polled.coalesced);
                }
                for change in polled.changes {
                    if change.version <= version {
                        continue;
                    }
                    version = change.version;
                    show(version, Some(&change.value));
                    printed += 1;
                }
            }
            Err(e) => {
                // The watcher was re-activated or dropped: subscribe again, and print the
                // current value if it moved meanwhile.
                eprintln!("(watch interrupted: {e}; subscribing again)");
                let (now, value) = subscribe().await?;
                if now > version {
                    version = now;
                    show(version, value.as_deref());
                    printed += 1;
                }
            }
        }
    }
    let _ = var.ask(VarUnwatch { watcher: key }).timeout(t).await;
    Ok(())
}

/// A random number for watcher keys (no extra dependency: the hasher is seeded randomly).
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_unix_ms());
    h.finish()
}

pub(crate) async fn beacon(
    client: &Client,
    command: BeaconCommand,
    t: Duration,
) -> anyhow::Result<()> {
    match command {
        BeaconCommand::Arm { key, period } => {
            client
                .grain::<Beacon>(key)
                .ask(Arm {
                    period_ms: ms(period),
                })
                .timeout(t)
                .await?;
            println!("armed");
        }
        BeaconCommand::Disarm { key } => {
            println!(
                "{}",
                client.grain::<Beacon>(key).ask(Disarm).timeout(t).await?
            );
        }
        BeaconCommand::Beats { key } => {
            let beats: Vec<Beat> = client.grain::<Beacon>(key).ask(Beats).timeout(t).await?;
            for b in beats {
                println!("{} {} {}", b.due_unix_ms, b.late_ms(), b.missed);
            }
        }
    }
    Ok(())
}
