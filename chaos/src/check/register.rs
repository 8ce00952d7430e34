//! The register model and a linearizability checker for it.
//!
//! A register key's operations are `Write(v)` (every written value is unique in the run)
//! and `Read → Option<v>`. The history of one key is linearizable if there is a total
//! order of its operations that respects real time (an operation that completed before
//! another was invoked comes first) in which every read returns the last value written
//! before it (`None` before any write).
//!
//! The search is Wing & Gong's, with Lowe's memoisation of (set of linearized
//! operations, register value) pairs, as in Knossos and porcupine. The set is
//! represented by a 128-bit Zobrist hash, so the cache costs 32 bytes per entry
//! whatever the history's length. Before the search:
//! - failed operations (certainly not applied) and indeterminate reads are dropped;
//! - an indeterminate write whose value no read returned is dropped (taking effect
//!   "never" is allowed, and no read depends on it);
//! - an indeterminate write whose value a read returned must have taken effect before
//!   that read completed: its completion becomes the earliest such read's completion;
//! - a read of a value no write wrote is a violation at once.

use std::collections::{HashMap, HashSet};

use super::{by_key, excerpt, Findings, Violation};
use crate::history::{Call, Op, Outcome, Reply};

/// Search steps allowed per key before giving up (reported as unknown, not as a pass).
pub const DEFAULT_BUDGET: u64 = 200_000_000;

/// The result of checking one key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order explains every operation.
    Linearizable,
    /// The operation (index into the checked list) that no order could place.
    Violation {
        /// Index (into the key's operations) of the operation no order could place.
        stuck: usize,
        /// What is wrong, in one line.
        what: String,
    },
    /// The search ran out of budget.
    Unknown,
}

/// Checks every register key of `ops` into `findings`.
pub fn check(ops: &[Op], findings: &mut Findings, budget: u64) {
    let registers = by_key(
        ops.iter()
            .filter(|op| matches!(op.call, Call::Write { .. } | Call::Read { .. })),
    );
    for (key, ops) in registers {
        findings.register_keys += 1;
        findings.register_ops += ops.len();
        match check_key(&ops, budget) {
            Verdict::Linearizable => {}
            Verdict::Unknown => findings.unknown.push(key),
            Verdict::Violation { stuck, what } => findings.violations.push(Violation {
                model: "register",
                key,
                what,
                excerpt: excerpt(&ops, ops[stuck], 4),
            }),
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Index into the key's operations.
    op: usize,
    write: bool,
    value: Option<u64>,
    invoked: u64,
    returned: u64,
}

/// Checks one key's operations (any order).
pub fn check_key(ops: &[&Op], budget: u64) -> Verdict {
    let mut written: HashSet<u64> = HashSet::new();
    // For each value: the earliest completion of an acknowledged read that returned it.
    let mut first_read: HashMap<u64, u64> = HashMap::new();
    for op in ops {
        match (&op.call, &op.outcome) {
            (Call::Write { value, .. }, Outcome::Ok(_) | Outcome::Info(_)) => {
                written.insert(*value);
            }
            (Call::Read { .. }, Outcome::Ok(Reply::Value(Some(v)))) => {
                let at = first_read.entry(*v).or_insert(op.completed);
                *at = (*at).min(op.completed);
            }
            _ => {}
        }
    }
    let mut entries = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let entry = match (&op.call, &op.outcome) {
            (_, Outcome::Fail(_)) => continue,
            (Call::Write { value, .. }, Outcome::Ok(_)) => Entry {
                op: i,
                write: true,
                value: Some(*value),
                invoked: op.invoked,
                returned: op.completed,
            },
            (Call::Write { value, .. }, Outcome::Info(_)) => match first_read.get(value) {
                None => continue,
                Some(&read) => Entry {
                    op: i,
                    write: true,
                    value: Some(*value),
                    invoked: op.invoked,
                    returned: read.max(op.invoked),
                },
            },
            (Call::Read { .. }, Outcome::Ok(Reply::Value(v))) => {
                if let Some(v) = v {
                    if !written.contains(v) {
                        return Verdict::Violation {
                            stuck: i,
                            what: format!("read {v}, a value no write wrote"),
                        };
                    }
                }
                Entry {
                    op: i,
                    write: false,
                    value: *v,
                    invoked: op.invoked,
                    returned: op.completed,
                }
            }
            (Call::Read { .. }, Outcome::Ok(other)) => {
                return Verdict::Violation {
                    stuck: i,
                    what: format!("a read replied {other:?}, not a register value"),
                }
            }
            _ => continue, // indeterminate reads
        };
        entries.push(entry);
    }
    search(&entries, budget)
}

/// A node of the event list: the call or the return of an entry.
#[derive(Clone, Copy, Debug)]
struct Node {
    entry: usize,
    call: bool,
    /// For a call: its return's node.
    partner: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// Wing–Gong–Lowe over `entries`.
fn search(entries: &[Entry], budget: u64) -> Verdict {
    if entries.is_empty() {
        return Verdict::Linearizable;
    }
    // Events sorted by time; at equal times calls first (concurrent, the lenient side).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
    for (i, e) in entries.iter().enumerate() {
        events.push((e.invoked, true, i));
        events.push((e.returned, false, i));
    }
    events.sort_by_key(|&(t, call, i)| (t, !call, i));
    // Node 0 is the head sentinel.
    let mut nodes = vec![Node {
        entry: NIL,
        call: false,
        partner: NIL,
        prev: NIL,
        next: NIL,
    }];
    let mut call_node = vec![NIL; entries.len()];
    for &(_, call, i) in &events {
        let n = nodes.len();
        let prev = n - 1;
        nodes[prev].next = n;
        nodes.push(Node {
            entry: i,
            call,
            partner: NIL,
            prev,
            next: NIL,
        });
        if call {
            call_node[i] = n;
        } else {
            nodes[call_node[i]].partner = n;
        }
    }
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let zobrist: Vec<u128> = (0..entries.len())
        .map(|_| (u128::from(rng.u64(..)) << 64) | u128::from(rng.u64(..)))
        .collect();

    let mut cache: HashSet<(u128, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut linearized: u128 = 0;
    let mut state: Option<u64> = None;
    let mut deepest = (0usize, NIL);
    let mut steps = 0u64;
    let mut at = nodes[0].next;
    while nodes[0].next != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown;
        }
        let node = nodes[at];
        if node.call {
            let e = &entries[node.entry];
            let (ok, next_state) = if e.write {
                (true, e.value)
            } else {
                (state == e.value, state)
            };
            if ok {
                let hash = linearized ^ zobrist[node.entry];
                if cache.insert((hash, next_state)) {
                    stack.push((at, state));
                    linearized = hash;
                    state = next_state;
                    lift(&mut nodes, at);
                    at = nodes[0].next;
                    continue;
                }
            }
            at = node.next;
        } else {
            // A return reached with its call not linearized: backtrack.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), node.entry);
            }
            let Some((call, previous)) = stack.pop() else {
                let stuck = entries[deepest.1];
                return Verdict::Violation {
                    stuck: stuck.op,
                    what: describe(&stuck, deepest.0),
                };
            };
            linearized ^= zobrist[nodes[call].entry];
            state = previous;
            unlift(&mut nodes, call);
            at = nodes[call].next;
        }
    }
    Verdict::Linearizable
}

fn describe(stuck: &Entry, depth: usize) -> String {
    let what = if stuck.write {
        format!("Write({})", stuck.value.unwrap_or_default())
    } else {
        format!("Read → {:?}", stuck.value)
    };
    format!(
        "not linearizable: after {depth} operation(s) in order, no order places {what} \
         (invoked at {} µs, returned at {} µs) consistently with the others",
        stuck.invoked, stuck.returned
    )
}

/// Unlinks a call node and its return node.
fn lift(nodes: &mut [Node], call: usize) {
    for n in [call, nodes[call].partner] {
        let Node { prev, next, .. } = nodes[n];
        nodes[prev].next = next;
        if next != NIL {
            nodes[next].prev = prev;
        }
    }
}

/// Links them back (in the reverse order of [`lift`]).
fn unlift(nodes: &mut [Node], call: usize) {
    for n in [nodes[call].partner, call] {
        let Node { prev, next, .. } = nodes[n];
        nodes[prev].next = n;
        if next != NIL {
            nodes[next].prev = n;
        }
    }
}
