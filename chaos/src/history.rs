//! The recorded history: every operation a workload invoked, when, and how it ended.
//!
//! As in Jepsen, an operation has an invocation and a completion, and ends in one of
//! three ways: `Ok` (acknowledged, with its reply), `Fail` (certainly not applied: the
//! call was not delivered, per [`CallError::is_not_delivered`]) or `Info` (unknown:
//! timed out, lost in flight, or failed after the handler ran). An `Info` operation may
//! take effect at any time after its invocation, or never; the checkers treat it so.
//! Times are microseconds since the run started, from one monotonic clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use granary_proto::CallError;
use serde::{Deserialize, Serialize};

/// What was called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// Counter `key`: `Add(1)`.
    Add {
        /// The counter.
        key: String,
    },
    /// Counter `key`: `Get`.
    Get {
        /// The counter.
        key: String,
    },
    /// Register `key`: write a value no other write uses.
    Write {
        /// The register.
        key: String,
        /// The value, unique in the run.
        value: u64,
    },
    /// Register `key`: read.
    Read {
        /// The register.
        key: String,
    },
    /// Account `from` follows account `to`.
    Follow {
        /// The follower.
        from: String,
        /// The account followed.
        to: String,
    },
    /// Account `key`: follower count.
    Followers {
        /// The account.
        key: String,
    },
    /// Account `key`: the accounts it follows.
    Following {
        /// The account.
        key: String,
    },
}

impl Call {
    /// The grain key the operation is about (`from` for a follow).
    pub fn key(&self) -> &str {
        match self {
            Call::Add { key }
            | Call::Get { key }
            | Call::Write { key, .. }
            | Call::Read { key }
            | Call::Followers { key }
            | Call::Following { key } => key,
            Call::Follow { from, .. } => from,
        }
    }
}

/// An acknowledged operation's reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A counter value or a follower count.
    Int(i64),
    /// A register value (`None`: never written).
    Value(Option<u64>),
    /// The accounts an account follows.
    Keys(Vec<String>),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "v", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged.
    Ok(Reply),
    /// Certainly not applied (the error says why).
    Fail(String),
    /// May or may not have been applied, at any time after the invocation.
    Info(String),
}

impl Outcome {
    /// How a call error counts: not delivered is a `Fail`, everything else is unknown.
    pub fn of_error(error: &CallError) -> Outcome {
        let text = format!("{}: {error}", error.kind());
        if error.is_not_delivered() {
            Outcome::Fail(text)
        } else {
            Outcome::Info(text)
        }
    }

    /// The reply of an acknowledged operation.
    pub fn ok(&self) -> Option<&Reply> {
        match self {
            Outcome::Ok(reply) => Some(reply),
            _ => None,
        }
    }

    /// `ok`, `fail` or `info`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Fail(_) => "fail",
            Outcome::Info(_) => "info",
        }
    }
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique, in order of completion.
    pub id: u64,
    /// The client task that ran it (each runs one operation at a time).
    pub worker: u32,
    /// What was called.
    pub call: Call,
    /// Microseconds since the start of the run.
    pub invoked: u64,
    /// When the client saw the outcome (for `Info`, the effect may come later still).
    pub completed: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// The recorder shared by every workload task.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    next: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// An empty history whose clock starts at `start`.
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            next: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records a completed operation (completion time: now).
    pub fn record(&self, worker: u32, call: Call, invoked: u64, outcome: Outcome) {
        let completed = self.now();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let op = Op {
            id,
            worker,
            call,
            invoked,
            completed,
            outcome,
        };
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(op);
    }

    /// How many operations were recorded so far.
    pub fn len(&self) -> usize {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Writes a history as JSON lines.
pub fn write_jsonl(ops: &[Op], path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(path: &std::path::Path) -> anyhow::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))
        })
        .collect()
}
