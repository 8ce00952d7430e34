//! Packet round trips and the rejection of every kind of bad datagram.

use super::*;

fn id(port: u16, generation: u64) -> SiloId {
    SiloId::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 1], port + 1)),
        generation,
    )
}

fn every_body() -> Vec<PacketBody> {
    let load = LoadReport {
        activations: 12,
        queue_depth: 345,
        suspended: true,
    };
    vec![
        PacketBody::Handshake,
        PacketBody::Welcome {
            epoch: 4,
            view: 7,
            params: ProtocolParams {
                heartbeat_interval_ms: 1000,
                missed_heartbeats: 3,
            },
            members: vec![
                WireMember {
                    id: id(1000, 1),
                    load,
                },
                WireMember {
                    id: id(2000, u64::MAX),
                    load: LoadReport::default(),
                },
            ],
        },
        PacketBody::Heartbeat {
            epoch: 4,
            load,
            view: 9,
            ack: 77,
        },
        PacketBody::Shutdown,
        PacketBody::SlaveConnect {
            member: id(3000, 5),
            view: 10,
        },
        PacketBody::SlaveDisconnect {
            member: id(3000, 5),
            reason: DepartureReason::Left,
            view: 11,
        },
        PacketBody::SlaveDisconnect {
            member: id(4000, 6),
            reason: DepartureReason::Dead,
            view: 12,
        },
        PacketBody::Rejoin,
        PacketBody::NotLeader {
            epoch: 5,
            leader: Some(id(6000, 2)),
        },
        PacketBody::NotLeader {
            epoch: 0,
            leader: None,
        },
        PacketBody::LeaderBeat {
            epoch: 5,
            round: 99,
        },
        PacketBody::LeaderBeatAck {
            epoch: 5,
            round: 99,
            position: StorePosition::new(5, 12),
        },
        PacketBody::StandbyBeat {
            epoch: 5,
            leader: Some(id(6000, 2)),
            position: StorePosition::new(4, 3),
        },
        PacketBody::VoteRequest {
            epoch: 6,
            position: StorePosition::new(5, 12),
        },
        PacketBody::Vote {
            epoch: 6,
            granted: true,
            position: StorePosition::new(5, 11),
        },
    ]
}

fn packet(body: PacketBody) -> Packet {
    Packet {
        from: id(5000, 1_700_000_000_000),
        seq: 42,
        body,
    }
}

fn unsigned() -> PacketCodec {
    PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap()
}

fn signed(key: &[u8]) -> PacketCodec {
    PacketCodec::new(Some(key), DEFAULT_MAX_PACKET).unwrap()
}

#[test]
fn every_packet_round_trips_unsigned_and_signed() {
    for codec in [unsigned(), signed(b"cluster secret")] {
        for body in every_body() {
            let p = packet(body);
            let bytes = codec.encode(&p).unwrap();
            assert_eq!(&bytes[..4], &MAGIC);
            assert_eq!(bytes[4] == FLAG_SIGNED, codec.is_signed());
            assert_eq!(codec.decode(&bytes).unwrap(), p, "{}", p.body.name());
        }
    }
}

#[test]
fn signed_packet_is_exactly_a_mac_longer() {
    let p = packet(PacketBody::Handshake);
    let plain = unsigned().encode(&p).unwrap();
    let sig = signed(b"k").encode(&p).unwrap();
    assert_eq!(sig.len(), plain.len() + MAC_LEN);
    assert_eq!(&sig[HEADER_LEN..plain.len()], &plain[HEADER_LEN..]);
}

#[test]
fn truncated_packets_are_rejected() {
    let codec = unsigned();
    let bytes = codec.encode(&packet(PacketBody::Shutdown)).unwrap();
    assert_eq!(codec.decode(&[]), Err(PacketError::Truncated(0)));
    assert_eq!(codec.decode(&bytes[..2]), Err(PacketError::Truncated(2)));
    assert_eq!(
        codec.decode(&bytes[..HEADER_LEN - 1]),
        Err(PacketError::Truncated(HEADER_LEN - 1))
    );
    // A header with a cut body fails in the body decoder.
    for cut in HEADER_LEN..bytes.len() {
        assert!(
            matches!(codec.decode(&bytes[..cut]), Err(PacketError::Body(_))),
            "cut at {cut}"
        );
    }
    // A signed packet shorter than header + MAC.
    let keyed = signed(b"k");
    let mut short = MAGIC.to_vec();
    short.push(FLAG_SIGNED);
    short.extend_from_slice(&[0; 10]);
    assert_eq!(
        keyed.decode(&short),
        Err(PacketError::Truncated(short.len()))
    );
    // A signed packet that lost bytes at the end no longer verifies.
    let sig = keyed.encode(&packet(PacketBody::Shutdown)).unwrap();
    assert_eq!(
        keyed.decode(&sig[..sig.len() - 1]),
        Err(PacketError::BadMac)
    );
}

#[test]
fn garbage_is_rejected() {
    let codec = unsigned();
    assert_eq!(codec.decode(b"hello, world"), Err(PacketError::BadMagic));
    assert_eq!(codec.decode(b"x"), Err(PacketError::BadMagic));
    let mut rng_state = 0x9e37_79b9_u32;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 17;
                rng_state ^= rng_state << 5;
                rng_state as u8
            })
            .collect();
        // Must not panic, and random bytes are essentially never a packet.
        assert!(codec.decode(&bytes).is_err());
        assert!(signed(b"k").decode(&bytes).is_err());
    }
    // Right header, garbage body.
    let mut bad_body = MAGIC.to_vec();
    bad_body.push(0);
    bad_body.extend_from_slice(&[0xff; 40]);
    assert!(matches!(codec.decode(&bad_body), Err(PacketError::Body(_))));
    // Trailing junk after a valid body.
    let mut trailing = codec.encode(&packet(PacketBody::Rejoin)).unwrap();
    trailing.push(0);
    assert!(matches!(codec.decode(&trailing), Err(PacketError::Body(_))));
}

#[test]
fn oversized_packets_are_rejected_both_ways() {
    let codec = unsigned();
    let mut big = codec.encode(&packet(PacketBody::Handshake)).unwrap();
    big.resize(DEFAULT_MAX_PACKET + 1, 0);
    assert_eq!(
        codec.decode(&big),
        Err(PacketError::TooLarge {
            len: DEFAULT_MAX_PACKET + 1,
            max: DEFAULT_MAX_PACKET
        })
    );
    let members = (0..1000)
        .map(|i| WireMember {
            id: id(i, u64::from(i)),
            load: LoadReport::default(),
        })
        .collect();
    let huge = packet(PacketBody::Welcome {
        epoch: 1,
        view: 1,
        params: ProtocolParams {
            heartbeat_interval_ms: 1,
            missed_heartbeats: 1,
        },
        members,
    });
    assert!(matches!(
        codec.encode(&huge),
        Err(PacketError::TooLarge {
            max: DEFAULT_MAX_PACKET,
            ..
        })
    ));
}

#[test]
fn wrong_version_and_flags_are_rejected() {
    let codec = unsigned();
    let mut bytes = codec.encode(&packet(PacketBody::Handshake)).unwrap();
    bytes[3] = VERSION + 1;
    assert_eq!(
        codec.decode(&bytes),
        Err(PacketError::UnsupportedVersion(VERSION + 1))
    );
    bytes[3] = VERSION;
    bytes[4] = 0x80;
    assert_eq!(codec.decode(&bytes), Err(PacketError::UnknownFlags(0x80)));
}

#[test]
fn keys_must_match() {
    let p = packet(PacketBody::Heartbeat {
        epoch: 1,
        load: LoadReport::default(),
        view: 1,
        ack: 0,
    });
    let a = signed(b"key a");
    let b = signed(b"key b");
    let none = unsigned();

    let by_a = a.encode(&p).unwrap();
    assert_eq!(b.decode(&by_a), Err(PacketError::BadMac));
    assert_eq!(none.decode(&by_a), Err(PacketError::UnexpectedMac));

    let by_none = none.encode(&p).unwrap();
    assert_eq!(a.decode(&by_none), Err(PacketError::MissingMac));

    // Clearing the flag to strip the MAC is caught.
    let mut stripped = by_a.clone();
    stripped[4] = 0;
    stripped.truncate(stripped.len() - MAC_LEN);
    assert_eq!(a.decode(&stripped), Err(PacketError::MissingMac));

    // Any altered byte breaks the MAC.
    for i in HEADER_LEN..by_a.len() {
        let mut tampered = by_a.clone();
        tampered[i] ^= 1;
        assert_eq!(a.decode(&tampered), Err(PacketError::BadMac), "byte {i}");
    }
}

#[test]
fn codec_settings_are_validated() {
    assert_eq!(
        PacketCodec::new(Some(b""), DEFAULT_MAX_PACKET).unwrap_err(),
        PacketError::EmptyKey
    );
    assert_eq!(
        PacketCodec::new(None, 10).unwrap_err(),
        PacketError::BadMaxPacket(10)
    );
    assert_eq!(
        PacketCodec::new(None, MAX_MAX_PACKET + 1).unwrap_err(),
        PacketError::BadMaxPacket(MAX_MAX_PACKET + 1)
    );
    // Debug never shows the key.
    let dbg = format!("{:?}", signed(b"super secret"));
    assert!(!dbg.contains("secret"), "{dbg}");
}

#[test]
fn silo_id_identity() {
    let a = id(1000, 1);
    let restarted = SiloId { generation: 2, ..a };
    assert_ne!(a, restarted);
    assert!(a.same_address(&restarted));
    assert!(!a.same_address(&id(2000, 1)));
    assert!(a < restarted);
    assert_eq!(a.to_string(), "127.0.0.1:1000/udp:127.0.0.1:1001#1");
    assert!(SiloId::generation_now() > 1_600_000_000_000);
    let params = ProtocolParams {
        heartbeat_interval_ms: 250,
        missed_heartbeats: 4,
    };
    assert_eq!(params.lease(), Duration::from_secs(1));
}

#[test]
fn auth_rejections_round_trip_and_are_never_packets() {
    let codec = PacketCodec::new(Some(b"k"), DEFAULT_MAX_PACKET).unwrap();
    for reason in [
        AuthRejection::WrongKey,
        AuthRejection::KeyRequired,
        AuthRejection::NoKeyExpected,
    ] {
        let bytes = PacketCodec::encode_rejection(reason);
        assert_eq!(codec.decode(&bytes), Err(PacketError::Rejected(reason)));
    }
    // A rejection with a trailing byte or an unknown reason is not one.
    let mut long = PacketCodec::encode_rejection(AuthRejection::WrongKey).to_vec();
    long.push(0);
    assert_eq!(
        codec.decode(&long),
        Err(PacketError::UnknownFlags(FLAG_AUTH_REJECTED))
    );
    let mut unknown = PacketCodec::encode_rejection(AuthRejection::WrongKey);
    unknown[HEADER_LEN] = 9;
    assert_eq!(
        codec.decode(&unknown),
        Err(PacketError::UnknownFlags(FLAG_AUTH_REJECTED))
    );
    assert_eq!(
        PacketError::BadMac.auth_rejection(),
        Some(AuthRejection::WrongKey)
    );
    assert_eq!(PacketError::BadMagic.auth_rejection(), None);
}
