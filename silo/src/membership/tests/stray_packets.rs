//! Packets a silo must not act on: replays (old sequence numbers), packets from silos it
//! does not know, and a flood of short-lived silos (the tombstones stay bounded).

use granary_proto::packet::{DepartureReason, LoadReport, Packet, PacketBody};

use super::{joined_cluster, sid, Net};
use crate::membership::protocol::Outbox;
use crate::membership::table::MAX_TOMBSTONES;

#[test]
fn replayed_packets_are_dropped() {
    let mut net = joined_cluster(1);
    let slave = net.nodes[1].id;
    let master = net.nodes[0].id;
    // A replayed (old sequence number) SHUTDOWN from the slave does nothing.
    let mut out = Outbox::new();
    let replay = Packet {
        from: slave,
        seq: 1,
        body: PacketBody::Shutdown,
    };
    net.nodes[0]
        .protocol
        .on_packet(net.now, slave.udp, replay, &mut out);
    assert!(net.snap(0).is_active(&slave));
    assert!(out.is_empty());
    // Same at the slave for an old SHUTDOWN from the master.
    let replay = Packet {
        from: master,
        seq: 1,
        body: PacketBody::Shutdown,
    };
    net.nodes[1]
        .protocol
        .on_packet(net.now, master.udp, replay, &mut out);
    assert!(!net.nodes[1].protocol.shutdown_requested());
}

#[test]
fn packets_from_strangers_are_ignored_by_slaves() {
    let mut net = joined_cluster(1);
    let stranger = sid(9999, 1);
    let mut out = Outbox::new();
    let packet = Packet {
        from: stranger,
        seq: 1,
        body: PacketBody::SlaveDisconnect {
            member: net.nodes[0].id,
            reason: DepartureReason::Dead,
            view: 99,
        },
    };
    net.nodes[1]
        .protocol
        .on_packet(net.now, stranger.udp, packet, &mut out);
    assert!(out.is_empty());
    assert!(net.snap(1).is_active(&net.nodes[0].id));
}

#[test]
fn unknown_heartbeat_gets_rejoin() {
    let mut net = Net::new();
    let stranger = sid(9000, 1);
    let mut out = Outbox::new();
    let packet = Packet {
        from: stranger,
        seq: 1,
        body: PacketBody::Heartbeat {
            epoch: 0,
            load: LoadReport::default(),
            view: 0,
            ack: 1,
        },
    };
    net.nodes[0]
        .protocol
        .on_packet(net.now, stranger.udp, packet, &mut out);
    assert_eq!(out, vec![(stranger.udp, PacketBody::Rejoin)]);
    assert!(!net.snap(0).is_active(&stranger));
}

#[test]
fn tombstones_are_bounded() {
    let mut net = Net::new();
    let mut out = Outbox::new();
    for port in 0..(MAX_TOMBSTONES as u16 + 10) {
        let id = sid(10_000 + port, 1);
        for body in [PacketBody::Handshake, PacketBody::Shutdown] {
            let packet = Packet {
                from: id,
                seq: if body == PacketBody::Handshake { 1 } else { 2 },
                body,
            };
            net.nodes[0]
                .protocol
                .on_packet(net.now, id.udp, packet, &mut out);
        }
    }
    let snap = net.snap(0);
    assert_eq!(snap.members.len(), 1 + MAX_TOMBSTONES);
    assert_eq!(snap.active_members().count(), 1);
}
