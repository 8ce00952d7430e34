//! Property tests of the wire codecs (proptest): every packet and frame encodes and
//! decodes back to itself (also when a frame arrives in two pieces), and arbitrary
//! bytes never make a decoder panic or hold room for more than one maximal frame. The
//! cargo-fuzz targets in `fuzz/` push the same decoders through millions of inputs;
//! these run in every `cargo test`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::BytesMut;
use granary_proto::frame::{
    Frame, FrameCodec, GrainCall, Request, Response, SiloAddr, TraceContext,
};
use granary_proto::packet::{
    DepartureReason, LoadReport, Packet, PacketBody, PacketCodec, ProtocolParams, SiloId,
    WireMember, DEFAULT_MAX_PACKET, MAGIC,
};
use granary_proto::replication::{CopyKind, CopySet, GrainReplyAt, ReplicaCall, SetVersion};
use granary_proto::{codec, CallError, GrainId};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
}

fn silo_id() -> impl Strategy<Value = SiloId> {
    (addr(), addr(), any::<u64>())
        .prop_map(|(tcp, udp, generation)| SiloId::new(tcp, udp, generation))
}

fn load() -> impl Strategy<Value = LoadReport> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(activations, queue_depth, suspended)| {
        LoadReport {
            activations,
            queue_depth,
            suspended,
        }
    })
}

fn body() -> impl Strategy<Value = PacketBody> {
    prop_oneof![
        Just(PacketBody::Handshake),
        (
            any::<u64>(),
            1..10_000u64,
            1..10u32,
            prop::collection::vec((silo_id(), load()), 0..8),
            any::<u64>()
        )
            .prop_map(|(view, ms, missed, members, epoch)| PacketBody::Welcome {
                epoch,
                view,
                params: ProtocolParams {
                    heartbeat_interval_ms: ms,
                    missed_heartbeats: missed,
                },
                members: members
                    .into_iter()
                    .map(|(id, load)| WireMember { id, load })
                    .collect(),
            }),
        (load(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(load, view, epoch, ack)| {
            PacketBody::Heartbeat {
                epoch,
                load,
                view,
                ack,
            }
        }),
        (any::<u64>(), prop::option::of(silo_id()))
            .prop_map(|(epoch, leader)| PacketBody::NotLeader { epoch, leader }),
        Just(PacketBody::Shutdown),
        (silo_id(), any::<u64>())
            .prop_map(|(member, view)| PacketBody::SlaveConnect { member, view }),
        (silo_id(), any::<bool>(), any::<u64>()).prop_map(|(member, dead, view)| {
            PacketBody::SlaveDisconnect {
                member,
                reason: if dead {
                    DepartureReason::Dead
                } else {
                    DepartureReason::Left
                },
                view,
            }
        }),
        Just(PacketBody::Rejoin),
    ]
}

fn grain_id() -> impl Strategy<Value = GrainId> {
    ("[a-z.]{1,12}/v[0-9]", ".{0,40}").prop_map(|(t, k)| GrainId::from_parts(t, k))
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        (
            grain_id(),
            "[A-Za-z]{1,10}",
            prop::collection::vec(any::<u8>(), 0..64),
            any::<u32>(),
            any::<u8>(),
            any::<bool>(),
            prop::option::of(any::<u32>()),
            prop::option::of((any::<u128>(), any::<u64>())),
            prop::option::of((
                any::<u64>(),
                prop::option::of((any::<u64>(), any::<u64>())),
                any::<bool>()
            ))
        )
            .prop_map(
                |(target, message, payload, timeout_ms, hops, one_way, stream, trace, replica)| {
                    Request::Grain(GrainCall {
                        target,
                        message,
                        payload,
                        timeout_ms,
                        hops,
                        one_way,
                        stream,
                        trace: trace.map(|(trace_id, parent_span_id)| TraceContext {
                            trace_id,
                            parent_span_id,
                        }),
                        replica: replica.map(|(min_version, seen, primary)| ReplicaCall {
                            min_version,
                            copies_seen: seen.map(|(epoch, seq)| SetVersion { epoch, seq }),
                            primary,
                        }),
                    })
                }
            ),
        (grain_id(), prop::option::of((addr(), any::<u64>()))).prop_map(|(grain, from)| {
            Request::DirectoryResolve {
                grain,
                from: from.map(|(a, g)| SiloAddr::new(a, g)),
            }
        }),
        (
            grain_id(),
            prop::collection::vec(any::<u8>(), 0..64),
            prop::option::of(".{0,8}")
        )
            .prop_map(|(grain, data, expected)| Request::StorageWrite {
                grain,
                data,
                expected
            }),
        grain_id().prop_map(|grain| Request::StorageRead { grain }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Pong),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Response::Grain(Ok(b))),
        ".{0,20}".prop_map(|why| Response::Grain(Err(CallError::Lost(why)))),
        Just(Response::Grain(Err(CallError::Timeout))),
        Just(Response::Grain(Err(CallError::Cancelled))),
        (addr(), any::<u64>()).prop_map(|(a, g)| Response::Moved(SiloAddr::new(a, g))),
        (
            prop::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
            prop::option::of((addr(), any::<u64>(), any::<u64>()))
        )
            .prop_map(|(reply, version, copies)| {
                Response::GrainAt(Box::new(GrainReplyAt {
                    reply: Ok(reply),
                    version,
                    copies: copies.map(|(a, g, seq)| CopySet {
                        version: SetVersion { epoch: g, seq },
                        kind: CopyKind::ReadReplicas,
                        home: SiloAddr::new(a, g),
                        members: vec![SiloAddr::new(a, g.wrapping_add(1))],
                    }),
                }))
            }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u64>(), request()).prop_map(|(id, body)| Frame::Request { id, body }),
        (any::<u64>(), response()).prop_map(|(id, body)| Frame::Response { id, body }),
        request().prop_map(Frame::OneWay),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(id, item)| Frame::StreamItem { id, item }),
        (any::<u64>(), any::<u32>()).prop_map(|(id, credit)| Frame::StreamCredit { id, credit }),
        any::<u64>().prop_map(|id| Frame::Cancel { id }),
    ]
}

/// Every frame in `chunks`, fed in order; `Err` if the stream is refused.
fn decode_stream(codec: &mut FrameCodec, chunks: &[&[u8]]) -> Result<Vec<Frame>, String> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
            frames.push(frame);
        }
        // Never holds room for more than one maximal frame beyond what it was given.
        assert!(buf.capacity() <= 2 * (codec.max_frame() + 4) + chunk.len());
    }
    Ok(frames)
}

proptest! {
    #[test]
    fn packets_round_trip_signed_and_unsigned(from in silo_id(), seq in any::<u64>(), body in body()) {
        let packet = Packet { from, seq, body };
        for key in [None, Some(&b"cluster key"[..])] {
            let codec = PacketCodec::new(key, DEFAULT_MAX_PACKET).unwrap();
            let bytes = codec.encode(&packet).unwrap();
            prop_assert_eq!(codec.decode(&bytes).unwrap(), packet.clone());
        }
    }

    #[test]
    fn a_flipped_bit_in_a_signed_packet_is_refused(
        from in silo_id(),
        body in body(),
        bit in any::<prop::sample::Index>(),
    ) {
        let codec = PacketCodec::new(Some(b"k"), DEFAULT_MAX_PACKET).unwrap();
        let mut bytes = codec.encode(&Packet { from, seq: 1, body }).unwrap();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        prop_assert!(codec.decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for key in [None, Some(&b"k"[..])] {
            let _ = PacketCodec::new(key, 512).unwrap().decode(&bytes);
        }
        // With the real magic and version in front, the body decoder is reached.
        let mut framed = MAGIC.to_vec();
        framed.push(0);
        framed.extend(&bytes);
        let _ = PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap().decode(&framed);
    }

    #[test]
    fn frames_round_trip_whole_and_split(
        frames in prop::collection::vec(frame(), 1..5),
        split in any::<prop::sample::Index>(),
    ) {
        let mut codec = FrameCodec::new(64 * 1024);
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend(codec.encode_to_vec(frame).unwrap());
        }
        prop_assert_eq!(&decode_stream(&mut codec, &[&stream]).unwrap(), &frames);
        let (a, b) = stream.split_at(split.index(stream.len() + 1));
        prop_assert_eq!(&decode_stream(&mut codec, &[a, b]).unwrap(), &frames);
    }

    #[test]
    fn arbitrary_streams_never_panic_or_overallocate(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        split in any::<prop::sample::Index>(),
    ) {
        let mut codec = FrameCodec::new(1024);
        let whole = decode_stream(&mut codec, &[&bytes]);
        let (a, b) = bytes.split_at(split.index(bytes.len() + 1));
        prop_assert_eq!(whole, decode_stream(&mut codec, &[a, b]));
    }

    #[test]
    fn arbitrary_bodies_never_panic_the_codec(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec::decode::<Frame>(&bytes);
        let _ = codec::decode::<Packet>(&bytes);
        let _ = codec::decode::<GrainId>(&bytes);
        let _ = codec::decode::<CallError>(&bytes);
        let _ = codec::decode::<(String, Vec<u8>, Option<u64>)>(&bytes);
    }
}
