//! The versioned record format and the policy check.

use super::*;

#[test]
fn a_versioned_record_round_trips() {
    for (version, state) in [(0u64, &b""[..]), (1, b"abc"), (u64::MAX, b"\x00\xff")] {
        let record = versioned_record(version, state);
        assert_eq!(split_record(&record), (version, state));
    }
}

#[test]
fn a_record_written_before_replication_is_version_zero() {
    let plain = b"\x05hello";
    assert_eq!(split_record(plain), (0, &plain[..]));
    // Too short to carry a version after the magic: taken as plain state.
    assert_eq!(split_record(b"GRV1abc"), (0, &b"GRV1abc"[..]));
}

#[test]
fn scaling_builders_are_const_and_clamp_max_copies() {
    const S: Scaling = Scaling::DEFAULT.max_copies(0).hot_queue(3).hot_rate(10);
    assert_eq!(S.max_copies, 1);
    assert_eq!(S.hot_queue, 3);
    assert_eq!(S.hot_rate, 10);
    assert_eq!(Replication::Single.scaling(), None);
    assert_eq!(
        Replication::STATELESS_WORKER.with_scaling(S),
        Replication::StatelessWorker(S)
    );
    assert_eq!(Replication::Single.with_scaling(S), Replication::Single);
}

#[test]
#[should_panic(expected = "keeps no state")]
fn a_stateless_worker_with_state_is_refused() {
    check_policy(Replication::STATELESS_WORKER, 8);
}

#[test]
fn stateless_workers_without_state_and_other_policies_pass() {
    check_policy(Replication::STATELESS_WORKER, 0);
    check_policy(Replication::READ_REPLICAS, 8);
    check_policy(Replication::Single, 8);
}
