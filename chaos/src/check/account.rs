//! The follow graph: `Follow(a, b)` makes account `a` call `AddFollower(a)` on `b`
//! (grain to grain, maybe across silos), then record `b` in its own `following`.
//!
//! At the end the harness reads (as worker [`FINAL_READER`]) every account's `Followers` count and `Following`
//! set. With `acked(a → b)` the acknowledged follows and `maybe(a → b)` those
//! acknowledged or indeterminate:
//! - `following(a)` contains every `b` of an acknowledged `a → b` and nothing that was
//!   never attempted;
//! - `followers(b)` is at least `|{a : acked(a → b)}|` and at most
//!   `|{a : maybe(a → b)}|` (follows are idempotent: a repeat never counts twice).

use std::collections::{BTreeMap, BTreeSet};

use super::{Findings, Violation};
use crate::history::{Call, Op, Outcome, Reply};
use crate::workload::FINAL_READER;

/// Checks the follow graph of `ops` into `findings`.
pub fn check(ops: &[Op], findings: &mut Findings) {
    let mut acked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut maybe: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut follows_of: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    // The last acknowledged final reads.
    let mut followers: BTreeMap<&str, (&Op, i64)> = BTreeMap::new();
    let mut following: BTreeMap<&str, (&Op, BTreeSet<&str>)> = BTreeMap::new();
    for op in ops {
        match (&op.call, &op.outcome) {
            (Call::Follow { from, to }, outcome) => {
                follows_of.entry(to).or_default().push(op);
                follows_of.entry(from).or_default().push(op);
                match outcome {
                    Outcome::Ok(_) => {
                        acked.entry(from).or_default().insert(to);
                        maybe.entry(from).or_default().insert(to);
                    }
                    Outcome::Info(_) => {
                        maybe.entry(from).or_default().insert(to);
                    }
                    Outcome::Fail(_) => {}
                }
            }
            // Only the final reads count as the end state.
            (_, _) if op.worker != FINAL_READER => {}
            (Call::Followers { key }, Outcome::Ok(Reply::Int(n)))
                if followers
                    .get(key.as_str())
                    .is_none_or(|(o, _)| o.invoked < op.invoked) =>
            {
                followers.insert(key, (op, *n));
            }
            (Call::Following { key }, Outcome::Ok(Reply::Keys(keys)))
                if following
                    .get(key.as_str())
                    .is_none_or(|(o, _)| o.invoked < op.invoked) =>
            {
                following.insert(key, (op, keys.iter().map(String::as_str).collect()));
            }
            _ => {}
        }
    }
    let accounts: BTreeSet<&str> = follows_of.keys().copied().collect();
    let empty = BTreeSet::new();
    let (mut lost, mut duplicated) = (0u64, 0u64);
    let mut found = Vec::new();
    let mut push = |key: &str, what: String, mut excerpt: Vec<Op>| {
        excerpt.sort_by_key(|op| op.invoked);
        excerpt.truncate(12);
        found.push(Violation {
            model: "account",
            key: key.to_owned(),
            what,
            excerpt,
        });
    };
    for &account in &accounts {
        let related = || -> Vec<Op> {
            follows_of
                .get(account)
                .map(|ops| ops.iter().map(|op| (*op).clone()).collect())
                .unwrap_or_default()
        };
        let acked_out = acked.get(account).unwrap_or(&empty);
        let maybe_out = maybe.get(account).unwrap_or(&empty);
        match following.get(account) {
            None if !acked_out.is_empty() => push(
                account,
                "no final Following read succeeded; its acknowledged follows are unchecked".into(),
                Vec::new(),
            ),
            None => {}
            Some((read, seen)) => {
                let missing: Vec<&&str> = acked_out.difference(seen).collect();
                let extra: Vec<&&str> = seen.difference(maybe_out).collect();
                if !missing.is_empty() || !extra.is_empty() {
                    let mut ex = related();
                    ex.push((*read).clone());
                    push(
                        account,
                        format!("following {seen:?}: acknowledged follows missing {missing:?}, never attempted {extra:?}"),
                        ex,
                    );
                }
            }
        }
        let acked_in = acked.values().filter(|to| to.contains(account)).count() as i64;
        let maybe_in = maybe.values().filter(|to| to.contains(account)).count() as i64;
        match followers.get(account) {
            None if acked_in > 0 => push(
                account,
                "no final Followers read succeeded; its acknowledged followers are unchecked"
                    .into(),
                Vec::new(),
            ),
            None => {}
            Some((read, n)) if *n < acked_in || *n > maybe_in => {
                if *n < acked_in {
                    lost += (acked_in - n) as u64;
                } else {
                    duplicated += (n - maybe_in) as u64;
                }
                let mut ex = related();
                ex.push((*read).clone());
                push(
                    account,
                    format!("{n} followers, but {acked_in} acknowledged and {maybe_in} possible"),
                    ex,
                );
            }
            Some(_) => {}
        }
    }
    findings.violations.extend(found);
    findings.lost += lost;
    findings.duplicated += duplicated;
    findings.accounts += accounts.len();
}
