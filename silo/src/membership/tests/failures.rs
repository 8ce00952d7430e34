//! Failure detection and recovery: a silent slave's lease runs out, a dead slave is told
//! to REJOIN, a slave loses and regains its master, and restarted silos (a new
//! generation on the same address) replace their old selves.

use granary_proto::packet::{LoadReport, Packet, PacketBody, SiloId};

use super::{joined_cluster, master_addr, sid, Node, INTERVAL, MASTER_PORT};
use crate::membership::config::MembershipConfig;
use crate::membership::protocol::{Outbox, Protocol};
use crate::membership::snapshot::MemberStatus;

#[test]
fn silent_slave_is_declared_dead_after_the_lease() {
    let mut net = joined_cluster(2);
    let dead = net.nodes[1].id;
    // Slave 1 goes silent; the rest keep ticking.
    for round in 0..5 {
        net.tick(0);
        net.tick(2);
        net.deliver_except(|from, _, _| *from == dead);
        net.advance(INTERVAL);
        let alive = net.snap(0).is_active(&dead);
        // Lease is 3 × 100 ms: still alive at 300 ms, dead after.
        assert_eq!(alive, round < 3, "round {round}");
    }
    assert_eq!(net.snap(0).get(&dead).unwrap().status, MemberStatus::Dead);
    assert!(!net.snap(2).is_active(&dead));
    assert_eq!(net.snap(2).get(&dead).unwrap().status, MemberStatus::Dead);
}

#[test]
fn dead_slave_is_told_to_rejoin() {
    let mut net = joined_cluster(1);
    let slave = net.nodes[1].id;
    // The slave's packets are lost (and it does not tick), but it hears the master.
    for _ in 0..5 {
        net.tick(0);
        net.deliver_except(|from, _, _| *from == slave);
        net.advance(INTERVAL);
    }
    assert!(!net.snap(0).is_active(&slave));
    assert!(
        net.snap(1).master_reachable,
        "the slave has not noticed yet"
    );
    // The network heals: the next heartbeat gets REJOIN, the slave handshakes with the
    // same id, and is welcomed back.
    net.tick(1);
    net.deliver();
    assert_eq!(net.sent("REJOIN"), 1);
    assert!(net.snap(0).is_active(&slave));
    assert!(net.snap(1).master_reachable);
}

#[test]
fn rejoin_fences_the_slave_until_welcome() {
    let mut net = joined_cluster(1);
    let master = net.nodes[0].id;
    // Deliver a REJOIN by hand and look at the slave before the WELCOME comes back.
    let mut out = Outbox::new();
    net.nodes[0].seq += 1;
    let packet = Packet {
        from: master,
        seq: net.nodes[0].seq,
        body: PacketBody::Rejoin,
    };
    net.nodes[1]
        .protocol
        .on_packet(net.now, master.udp, packet, &mut out);
    net.settle(1);
    assert!(!net.snap(1).master_reachable);
    assert_eq!(out, vec![(master_addr(), PacketBody::Handshake)]);
    net.queue(1, out);
    net.deliver();
    assert!(net.snap(1).master_reachable);
}

#[test]
fn slave_loses_and_regains_an_unreachable_master() {
    let mut net = joined_cluster(1);
    let master = net.nodes[0].id;
    // Everything is lost for longer than the lease.
    for _ in 0..4 {
        net.tick_all();
        net.deliver_except(|_, _, _| true);
        net.advance(INTERVAL);
    }
    net.tick(1);
    let snap = net.snap(1);
    assert!(!snap.master_reachable);
    assert_eq!(snap.master, Some(master));
    // While unreachable the slave sends HANDSHAKE, which a live master answers.
    net.rounds(1);
    assert!(net.snap(1).master_reachable);
}

#[test]
fn restarted_master_is_adopted() {
    let mut net = joined_cluster(2);
    let old_master = net.nodes[0].id;
    // The master restarts on the same address with a new generation and no state.
    let config = MembershipConfig::master().with_heartbeat_interval(INTERVAL);
    let new_master = sid(MASTER_PORT, 2);
    net.nodes[0] = Node {
        id: new_master,
        protocol: Protocol::new(&config, new_master, net.now),
        seq: 0,
        load: LoadReport::default(),
        version: 1,
    };
    net.rounds(3);
    for i in 1..3 {
        let snap = net.snap(i);
        assert_eq!(snap.master, Some(new_master), "node {i}");
        assert!(snap.master_reachable);
        assert_eq!(snap.get(&old_master).unwrap().status, MemberStatus::Dead);
        assert_eq!(snap.active_members().count(), 3);
    }
    assert_eq!(net.snap(0).active_slaves().count(), 2);
}

#[test]
fn restarted_slave_replaces_its_old_generation() {
    let mut net = joined_cluster(2);
    let old = net.nodes[1].id;
    let new = SiloId {
        generation: old.generation + 1,
        ..old
    };
    net.nodes[1] = Node {
        id: new,
        protocol: Protocol::new(
            &MembershipConfig::slave(master_addr()).with_heartbeat_interval(INTERVAL),
            new,
            net.now,
        ),
        seq: 0,
        load: LoadReport::default(),
        version: 1,
    };
    net.rounds(1);
    for i in [0, 2] {
        let snap = net.snap(i);
        assert_eq!(
            snap.get(&old).unwrap().status,
            MemberStatus::Dead,
            "node {i}"
        );
        assert!(snap.is_active(&new), "node {i}");
    }
    // A stale HANDSHAKE from the old generation is ignored.
    let mut out = Outbox::new();
    let stale = Packet {
        from: old,
        seq: 10_000,
        body: PacketBody::Handshake,
    };
    net.nodes[0]
        .protocol
        .on_packet(net.now, old.udp, stale, &mut out);
    assert!(out.is_empty());
    assert!(!net.snap(0).is_active(&old));
}
