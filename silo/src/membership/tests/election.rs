//! Master candidates: the election (Bully-ordered, by majority, with epochs), leases that
//! never overlap, failover with slaves following the new master, an up-to-date store
//! winning, persisted votes, a restarted master rejoining as a standby, and a slave that
//! knows only a standby finding the acting master through NOT_LEADER hints.

use std::net::SocketAddr;
use std::time::Duration;

use granary_proto::packet::{PacketBody, SiloId};
use granary_proto::replica::StorePosition;

use super::{sid, Net, INTERVAL};
use crate::membership::candidate::ElectionState;
use crate::membership::config::MembershipConfig;
use crate::membership::snapshot::Hosting;

const CANDIDATE_PORTS: [u16; 3] = [7001, 7002, 7003];

fn candidate_config(me: u16) -> MembershipConfig {
    let peers: Vec<SocketAddr> = CANDIDATE_PORTS
        .iter()
        .filter(|p| **p != me)
        .map(|p| sid(*p, 0).udp)
        .collect();
    MembershipConfig::candidate(peers)
        .with_heartbeat_interval(INTERVAL)
        .with_missed_heartbeats(3)
}

fn slave_config() -> MembershipConfig {
    let mut config = MembershipConfig::slave(sid(CANDIDATE_PORTS[0], 0).udp)
        .with_heartbeat_interval(INTERVAL)
        .with_missed_heartbeats(3);
    for p in &CANDIDATE_PORTS[1..] {
        config = config.with_master(sid(*p, 0).udp);
    }
    config
}

/// Three candidates (nodes 0..3) and `slaves` slaves.
fn cluster(slaves: u16) -> Net {
    let mut net = Net::empty();
    for port in CANDIDATE_PORTS {
        net.add(candidate_config(port), sid(port, 1));
    }
    for s in 0..slaves {
        net.add(slave_config(), sid(8000 + s, 1));
    }
    net
}

/// Indexes of candidates whose lease holds now.
fn acting(net: &Net) -> Vec<usize> {
    (0..CANDIDATE_PORTS.len())
        .filter(|&i| {
            !net.nodes[i].down
                && net.nodes[i]
                    .protocol
                    .leadership()
                    .is_some_and(|(_, until)| net.now < until)
        })
        .collect()
}

/// Runs for `d`, checking after every step that no two leases overlap.
fn run_checked(net: &mut Net, d: Duration, drop: impl Fn(&SiloId, &SocketAddr) -> bool) {
    let end = net.now + d;
    while net.now < end {
        net.run_except(Duration::from_millis(10), |from, to, _| drop(from, to));
        let now_acting = acting(net);
        assert!(
            now_acting.len() <= 1,
            "two masters act at once: {now_acting:?}"
        );
    }
}

#[test]
fn three_candidates_elect_exactly_one_master_and_everyone_follows_it() {
    let mut net = cluster(2);
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    let leader = acting(&net);
    assert_eq!(leader.len(), 1);
    // Bully: with equal stores, the highest address wins.
    assert_eq!(leader[0], 2);
    let id = net.nodes[2].id;
    for i in 0..net.nodes.len() {
        let snap = net.snap(i);
        assert_eq!(snap.master, Some(id), "node {i}");
        assert_eq!(snap.epoch, 1, "node {i}");
    }
    for slave in [3, 4] {
        assert_eq!(net.snap(slave).hosting, Hosting::Serving);
    }
    assert_eq!(
        net.sent("VOTE_REQUEST"),
        2,
        "one campaign, one request per peer"
    );
}

#[test]
fn the_master_dies_and_another_acts_without_overlap() {
    let mut net = cluster(2);
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    let old = acting(&net)[0];
    let old_id = net.nodes[old].id;
    net.nodes[old].down = true;
    run_checked(&mut net, Duration::from_secs(3), |_, _| false);
    let new = acting(&net);
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], old);
    let new_id = net.nodes[new[0]].id;
    assert_eq!(net.snap(new[0]).epoch, 2);
    // The slaves follow the new master, report and serve again.
    for slave in [3, 4] {
        let snap = net.snap(slave);
        assert_eq!(snap.master, Some(new_id), "slave {slave}");
        assert_ne!(snap.master, Some(old_id));
        assert_eq!(snap.hosting, Hosting::Serving, "slave {slave}");
    }
}

#[test]
fn a_master_cut_off_from_the_others_stops_before_another_starts() {
    let mut net = cluster(1);
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    let old = acting(&net)[0];
    let old_addr = net.nodes[old].id.udp;
    // Partition: the master hears nobody and nobody hears it. `run_checked` asserts at
    // every 10 ms that the two leases never overlap.
    let cut = |from: &SiloId, to: &SocketAddr| from.udp == old_addr || *to == old_addr;
    run_checked(&mut net, Duration::from_secs(4), cut);
    assert!(
        net.nodes[old].protocol.leadership().is_none(),
        "it stepped down"
    );
    let new = acting(&net);
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], old);
    // Healed: the old master follows the new one (no new election).
    let epoch = net.snap(new[0]).epoch;
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    assert_eq!(acting(&net), new);
    assert_eq!(net.snap(old).master, Some(net.nodes[new[0]].id));
    assert_eq!(net.snap(new[0]).epoch, epoch);
}

#[test]
fn a_candidate_behind_in_the_store_never_wins() {
    let mut net = cluster(0);
    // The highest candidate's store is behind the others'.
    for (i, position) in [(0, StorePosition::new(3, 9)), (1, StorePosition::new(3, 9))] {
        net.nodes[i].protocol.set_position(position);
    }
    net.nodes[2].protocol.set_position(StorePosition::new(3, 2));
    run_checked(&mut net, Duration::from_secs(3), |_, _| false);
    let leader = acting(&net);
    assert_eq!(leader.len(), 1);
    assert_ne!(leader[0], 2, "the behind candidate must not win");
}

#[test]
fn a_restarted_master_rejoins_as_a_standby_without_an_election() {
    let mut net = cluster(1);
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    let first = acting(&net)[0];
    net.nodes[first].down = true;
    run_checked(&mut net, Duration::from_secs(3), |_, _| false);
    let second = acting(&net)[0];
    let epoch = net.snap(second).epoch;
    let requests = net.sent("VOTE_REQUEST");
    // The old master comes back (a new run with its persisted election state).
    let old = net.nodes[first].id;
    let again = SiloId {
        generation: old.generation + 1,
        ..old
    };
    let persisted = net.nodes[first].persisted;
    net.nodes[first] =
        super::Node::new(candidate_config(old.udp.port()), again, persisted, net.now);
    run_checked(&mut net, Duration::from_secs(3), |_, _| false);
    assert_eq!(
        acting(&net),
        vec![second],
        "the acting master is not disturbed"
    );
    assert_eq!(net.snap(second).epoch, epoch);
    assert_eq!(net.sent("VOTE_REQUEST"), requests, "no campaign");
    assert_eq!(net.snap(first).master, Some(net.nodes[second].id));
}

#[test]
fn votes_are_persisted_before_they_are_sent() {
    let mut net = cluster(0);
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    let leader = acting(&net)[0];
    for i in 0..3 {
        let state: ElectionState = net.nodes[i].persisted;
        assert_eq!(state.epoch, 1, "node {i}");
        if i == leader {
            assert_eq!(state.voted_for, Some(net.nodes[leader].id));
        }
        assert!(state.promised >= 1, "node {i}");
    }
    // Every VOTE granted was preceded by a persisted vote for that candidate.
    let granted = net
        .log
        .iter()
        .filter(|(_, _, kind)| *kind == "VOTE")
        .count();
    assert!(granted >= 1);
}

#[test]
fn a_lone_candidate_cannot_act_without_a_majority() {
    let mut net = cluster(0);
    net.nodes[1].down = true;
    net.nodes[2].down = true;
    run_checked(&mut net, Duration::from_secs(5), |_, _| false);
    assert!(acting(&net).is_empty(), "1 of 3 is no majority");
    // It does not even campaign: hearing nobody, it could not win, and a raised epoch
    // would only force another election once the others are back.
    assert!(
        !net.log.iter().any(|(_, _, kind)| *kind
            == PacketBody::VoteRequest {
                epoch: 0,
                position: StorePosition::default()
            }
            .name()),
        "a candidate that hears no majority must not campaign"
    );
    assert_eq!(net.nodes[0].persisted.epoch, 0);
    // The others come back: the three elect one master, at the first epoch.
    net.nodes[1].down = false;
    net.nodes[2].down = false;
    run_checked(&mut net, Duration::from_secs(5), |_, _| false);
    assert_eq!(acting(&net).len(), 1);
    assert!(net.nodes.iter().all(|n| n.persisted.epoch <= 2));
}

#[test]
fn a_slave_given_one_standby_finds_the_acting_master_through_its_hint() {
    let mut net = cluster(0);
    run_checked(&mut net, Duration::from_secs(2), |_, _| false);
    let first = acting(&net)[0];
    // A slave that knows one candidate only, a standby (Bully: node 2 acts, node 0 stands by).
    assert_eq!(first, 2);
    let standby = 0;
    let config = MembershipConfig::slave(net.nodes[standby].id.udp)
        .with_heartbeat_interval(INTERVAL)
        .with_missed_heartbeats(3);
    let slave = net.add(config, sid(8000, 1));
    run_checked(&mut net, Duration::from_secs(1), |_, _| false);
    assert!(
        net.sent("NOT_LEADER") >= 1,
        "the standby names the acting master"
    );
    let snap = net.snap(slave);
    assert_eq!(snap.master, Some(net.nodes[first].id));
    assert_eq!(snap.hosting, Hosting::Serving);

    // The acting master dies. The slave knows the standby it was given and the dead master
    // it was told of; Bully order makes node 1, which it never heard of, act next: only
    // the standby's next hint can lead the slave there.
    net.nodes[first].down = true;
    run_checked(&mut net, Duration::from_secs(3), |_, _| false);
    let second = acting(&net);
    assert_eq!(second, vec![1]);
    let snap = net.snap(slave);
    assert_eq!(snap.master, Some(net.nodes[second[0]].id));
    assert_eq!(snap.epoch, 2);
    assert_eq!(snap.hosting, Hosting::Serving);
}
