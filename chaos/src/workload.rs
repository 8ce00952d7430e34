//! The client tasks: each calls grains one operation at a time and records every
//! operation in the [`Recorder`].
//!
//! - counter workers: `Add(1)` (and now and then `Get`) on random counter keys;
//! - register workers: `Write(v)` with a value unique in the run (`worker << 40 | n`)
//!   or `Read`, half and half, on random register keys;
//! - account workers: `Follow(a, b)` from a random "fan" (first half of the accounts) to
//!   a random "star" (second half), a grain-to-grain call that may cross silos, and now
//!   and then `Followers` of a star.
//!
//! After the faults, [`final_reads`] reads every key until it answers, so the checkers
//! see the final state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use granary_client::{Client, ClientConfig};
use granary_example::{Account, Add, Counter, Follow, Followers, Following, Get};
use granary_proto::CallError;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::KEY;
use crate::grains::{Read, Register, Write};
use crate::history::{Call, Outcome, Recorder, Reply};

/// The keys of a run.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Counter keys.
    pub counters: Vec<String>,
    /// Register keys.
    pub registers: Vec<String>,
    /// Account keys (first half fans, second half stars).
    pub accounts: Vec<String>,
}

impl Keys {
    /// `n` keys of each kind, named after the run's seed (fresh state every run).
    pub fn new(seed: u64, counters: usize, registers: usize, accounts: usize) -> Keys {
        let names = |kind: &str, n: usize| (0..n).map(|i| format!("{kind}-{seed}-{i}")).collect();
        Keys {
            counters: names("c", counters),
            registers: names("r", registers),
            accounts: names("a", accounts),
        }
    }
}

/// What one worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Counter workers.
    Counter,
    /// Register workers.
    Register,
    /// Account workers.
    Account,
}

/// A worker's settings.
#[derive(Clone, Debug)]
pub struct Worker {
    /// Unique per worker (also in register values).
    pub id: u32,
    /// What it does.
    pub role: Role,
    /// The run's seed.
    pub seed: u64,
    /// Time between operation starts (`None`: as fast as replies come).
    pub period: Option<Duration>,
    /// Each call's timeout.
    pub timeout: Duration,
}

/// A client over `gateways`, starting at the `first`-th (so workers spread out).
pub async fn connect(gateways: &[std::net::SocketAddr], first: usize) -> anyhow::Result<Client> {
    let mut rotated = gateways.to_vec();
    rotated.rotate_left(first % gateways.len().max(1));
    let config = ClientConfig::new(rotated)
        .with_cluster_key(KEY.as_bytes())
        .with_connect_timeout(Duration::from_secs(5));
    Ok(Client::connect(config).await?)
}

/// Runs one call and records it.
async fn call(
    client: &Client,
    rec: &Recorder,
    worker: u32,
    call: Call,
    timeout: Duration,
) -> Outcome {
    let invoked = rec.now();
    let result: Result<Reply, CallError> = match &call {
        Call::Add { key } => client
            .grain::<Counter>(key)
            .ask(Add(1))
            .timeout(timeout)
            .await
            .map(Reply::Int),
        Call::Get { key } => client
            .grain::<Counter>(key)
            .ask(Get)
            .timeout(timeout)
            .await
            .map(Reply::Int),
        Call::Write { key, value } => client
            .grain::<Register>(key)
            .ask(Write(*value))
            .timeout(timeout)
            .await
            .map(|()| Reply::Value(Some(*value))),
        Call::Read { key } => client
            .grain::<Register>(key)
            .ask(Read)
            .timeout(timeout)
            .await
            .map(Reply::Value),
        Call::Follow { from, to } => client
            .grain::<Account>(from)
            .ask(Follow(to.clone()))
            .timeout(timeout)
            .await
            .map(|n| Reply::Int(n as i64)),
        Call::Followers { key } => client
            .grain::<Account>(key)
            .ask(Followers)
            .timeout(timeout)
            .await
            .map(|n| Reply::Int(n as i64)),
        Call::Following { key } => client
            .grain::<Account>(key)
            .ask(Following)
            .timeout(timeout)
            .await
            .map(Reply::Keys),
    };
    let outcome = match result {
        Ok(reply) => Outcome::Ok(reply),
        Err(e) => Outcome::of_error(&e),
    };
    rec.record(worker, call, invoked, outcome.clone());
    outcome
}

/// Runs `worker` until `stop` is set.
pub async fn run(
    worker: Worker,
    client: Client,
    keys: Arc<Keys>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(
        worker.seed ^ u64::from(worker.id).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut ticker = worker.period.map(|p| {
        let mut t = tokio::time::interval_at(Instant::now() + p.mul_f64(rng.f64()), p);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let next = match worker.role {
            Role::Counter => {
                let key = keys.counters[rng.usize(..keys.counters.len())].clone();
                if rng.u8(..10) == 0 {
                    Call::Get { key }
                } else {
                    Call::Add { key }
                }
            }
            Role::Register => {
                let key = keys.registers[rng.usize(..keys.registers.len())].clone();
                if rng.bool() {
                    written += 1;
                    Call::Write {
                        key,
                        value: (u64::from(worker.id) << 40) | written,
                    }
                } else {
                    Call::Read { key }
                }
            }
            Role::Account => {
                // Fans follow stars, never the other way: a follow cycle (a → b while
                // b → a) deadlocks non-reentrant grains until the nested call's 30 s
                // timeout, as documented, and would only measure that.
                let n = keys.accounts.len();
                let fans = (n / 2).max(1);
                let from = rng.usize(..fans);
                let to = fans + rng.usize(..(n - fans).max(1));
                if rng.u8(..10) == 0 {
                    Call::Followers {
                        key: keys.accounts[to].clone(),
                    }
                } else {
                    Call::Follow {
                        from: keys.accounts[from].clone(),
                        to: keys.accounts[to].clone(),
                    }
                }
            }
        };
        if let Outcome::Fail(_) = call(&client, &rec, worker.id, next, worker.timeout).await {
            // Not delivered (no slave, master down…): do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The worker id of the final reads.
pub const FINAL_READER: u32 = u32::MAX;

/// Reads every key once successfully (retrying until `deadline`); returns the keys
/// that never answered.
pub async fn final_reads(
    client: &Client,
    keys: &Keys,
    rec: &Recorder,
    deadline: Instant,
) -> Vec<String> {
    let mut calls: Vec<Call> = Vec::new();
    calls.extend(keys.counters.iter().map(|k| Call::Get { key: k.clone() }));
    calls.extend(keys.registers.iter().map(|k| Call::Read { key: k.clone() }));
    for k in &keys.accounts {
        calls.push(Call::Followers { key: k.clone() });
        calls.push(Call::Following { key: k.clone() });
    }
    let mut unanswered = Vec::new();
    for c in calls {
        loop {
            if let Outcome::Ok(_) =
                call(client, rec, FINAL_READER, c.clone(), Duration::from_secs(2)).await
            {
                break;
            }
            if Instant::now() >= deadline {
                unanswered.push(c.key().to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    unanswered
}
