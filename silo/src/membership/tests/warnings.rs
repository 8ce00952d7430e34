//! How often membership problems are reported: the warning throttle backs off while a
//! cause persists, and an unanswered or rejected slave reports once per back-off step.

use std::time::{Duration, Instant};

use granary_proto::packet::{LoadReport, PacketBody};

use super::{master_addr, sid, INTERVAL};
use crate::membership::candidate::ElectionState;
use crate::membership::config::MembershipConfig;
use crate::membership::driver::Throttle;
use crate::membership::protocol::{Outbox, Protocol};

#[test]
fn throttle_backs_off_while_the_cause_persists() {
    let mut throttle = Throttle::default();
    let t0 = Instant::now();
    // One event every 100 ms for a minute.
    let lines = (0..600)
        .filter(|i| throttle.allow(t0 + INTERVAL * *i).is_some())
        .count();
    // 0, 1, 3, 7, 15, 31 s (doubling silences), then at 63 s: 6 lines in a minute.
    assert_eq!(lines, 6);
    // After a quiet spell, the next line comes at once (counting what was held back)
    // and the silence starts over at one second.
    let later = t0 + Duration::from_secs(600);
    assert_eq!(throttle.allow(later), Some(289));
    assert_eq!(throttle.allow(later + Duration::from_millis(500)), None);
    assert!(throttle
        .allow(later + Duration::from_millis(1500))
        .is_some());
}

fn lonely_slave(now: Instant) -> Protocol {
    let config = MembershipConfig::slave(master_addr())
        .with_heartbeat_interval(INTERVAL)
        .with_missed_heartbeats(3);
    Protocol::new(&config, sid(7100, 1), ElectionState::default(), now)
}

fn reports(protocol: &Protocol) -> u32 {
    match protocol {
        Protocol::Slave(s) => s.unjoined_reports(),
        Protocol::Candidate(_) => unreachable!("a slave"),
    }
}

#[test]
fn an_unanswered_slave_reports_once_per_back_off_step() {
    let t0 = Instant::now();
    let mut slave = lonely_slave(t0);
    let mut out = Outbox::new();
    let mut handshakes = 0;
    for i in 1..=100 {
        slave.on_tick(t0 + INTERVAL * i, LoadReport::default(), &mut out);
        handshakes += out
            .drain(..)
            .filter(|(_, b)| *b == PacketBody::Handshake)
            .count();
        if i == 1 {
            assert_eq!(
                reports(&slave),
                0,
                "nothing before two unanswered HANDSHAKEs"
            );
        }
    }
    assert_eq!(handshakes, 100, "it keeps trying every interval");
    // Interval 100 ms: reports at 0.2, 0.6, 1.4, 3.0 and 6.2 s: five in ten seconds.
    assert_eq!(reports(&slave), 5);
}

#[test]
fn a_rejected_cluster_key_is_reported_at_the_next_tick() {
    use granary_proto::packet::AuthRejection;
    let t0 = Instant::now();
    let mut slave = lonely_slave(t0);
    let mut out = Outbox::new();
    slave.on_rejected(t0, master_addr(), AuthRejection::WrongKey);
    slave.on_tick(t0 + INTERVAL, LoadReport::default(), &mut out);
    assert_eq!(reports(&slave), 1);
    // A rejection from anyone but the master is ignored.
    let mut other = lonely_slave(t0);
    other.on_rejected(t0, sid(9999, 1).udp, AuthRejection::WrongKey);
    other.on_tick(t0 + INTERVAL, LoadReport::default(), &mut out);
    assert_eq!(reports(&other), 0);
}

#[test]
fn throttle_limits_warnings() {
    let mut throttle = Throttle::default();
    let t0 = Instant::now();
    assert_eq!(throttle.allow(t0), Some(0));
    assert_eq!(throttle.allow(t0 + Duration::from_millis(10)), None);
    assert_eq!(throttle.allow(t0 + Duration::from_millis(20)), None);
    assert_eq!(throttle.allow(t0 + Duration::from_secs(2)), Some(2));
}
