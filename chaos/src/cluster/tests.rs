//! Reading the acting master off a candidate's log.

use super::acting_epoch;

#[test]
fn the_last_acting_line_names_the_epoch() {
    let log = "\
INFO no acting master: campaigning for epoch 3 (store at 0/0)
INFO acting as master for epoch 3: elected by 2 of 3 candidates (store at 0/0)
INFO a slave joined
";
    assert_eq!(acting_epoch(log), Some(3));
    let lone = "INFO acting as master for epoch 12 (no other candidates)\n";
    assert_eq!(acting_epoch(lone), Some(12));
}

#[test]
fn a_candidate_that_stepped_down_or_follows_does_not_act() {
    let stepped = "\
INFO acting as master for epoch 4: elected by 2 of 3 candidates (store at 1/9)
WARN stopped acting as master for epoch 4: the lease ran out
";
    assert_eq!(acting_epoch(stepped), None);
    let standby = "INFO following the acting master 10.0.0.1:7000 (epoch 5) as a standby\n";
    assert_eq!(acting_epoch(standby), None);
}
