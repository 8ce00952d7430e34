//! Frame codec tests against in-memory buffers.

use super::*;
use crate::replication::{CopyKind, CopySet, GrainLoad, SetVersion};

fn silo(port: u16, generation: u64) -> SiloAddr {
    SiloAddr::new(SocketAddr::from(([127, 0, 0, 1], port)), generation)
}

fn grain() -> GrainId {
    GrainId::new("example.counter/v1", "alice")
}

fn copy_set() -> CopySet {
    CopySet {
        version: SetVersion { epoch: 1, seq: 2 },
        kind: CopyKind::ReadReplicas,
        home: silo(7000, 1),
        members: vec![silo(7001, 1), silo(7002, 5)],
    }
}

fn every_frame() -> Vec<Frame> {
    let requests = vec![
        Request::Grain(GrainCall {
            target: grain(),
            message: "example.add/v1".into(),
            payload: vec![1, 2, 3, 255],
            timeout_ms: 2_000,
            hops: 1,
            one_way: true,
            stream: None,
            trace: None,
            replica: None,
        }),
        Request::Grain(GrainCall {
            target: grain(),
            message: "example.add/v1".into(),
            payload: vec![],
            timeout_ms: 0,
            hops: 0,
            one_way: false,
            stream: Some(u32::MAX),
            trace: Some(TraceContext {
                trace_id: u128::MAX - 7,
                parent_span_id: u64::MAX,
            }),
            replica: Some(ReplicaCall {
                min_version: u64::MAX,
                copies_seen: Some(SetVersion { epoch: 7, seq: 9 }),
                primary: true,
            }),
        }),
        Request::DirectoryResolve {
            grain: grain(),
            from: None,
        },
        Request::DirectoryResolve {
            grain: grain(),
            from: Some(silo(7000, 3)),
        },
        Request::DirectoryUnregister {
            grain: grain(),
            silo: silo(7000, 3),
        },
        Request::DirectoryReport {
            epoch: 7,
            silo: silo(7000, 3),
            grains: vec![grain(), GrainId::new("example.account/v1", "")],
        },
        Request::StoreAppend {
            epoch: 7,
            prev: StorePosition::new(6, 40),
            next: StorePosition::new(7, 1),
            changes: vec![
                StoreChange::Put {
                    id: "18:example.counter/v1:alice".into(),
                    record: vec![1, 3, b'a', b'b', b'c', 42],
                },
                StoreChange::Delete { id: "x".into() },
            ],
        },
        Request::StoreSnapshot {
            epoch: 7,
            start: true,
            records: vec![("a".into(), vec![1]), ("b".into(), vec![])],
            done: Some(StorePosition::new(7, 3)),
        },
        Request::StorageRead { grain: grain() },
        Request::StorageWrite {
            grain: grain(),
            data: vec![0; 300],
            expected: Some("etag-1".into()),
        },
        Request::StorageClear {
            grain: grain(),
            expected: None,
        },
        Request::Ping,
        Request::Replica(ReplicaRequest::Copies {
            grain: grain(),
            set: copy_set(),
        }),
        Request::Replica(ReplicaRequest::Sync {
            grain: grain(),
            from: silo(7001, 1),
            activation: Some(17),
            have: 3,
            wait_ms: 250,
        }),
        Request::Replica(ReplicaRequest::Report {
            from: silo(7001, 1),
            grains: vec![GrainLoad {
                grain: grain(),
                copies: 2,
                rate_milli: 1_500_000,
                queue_milli: 12_500,
                busy_milli: 1_900,
            }],
        }),
    ];
    let responses = vec![
        Response::Grain(Ok(vec![9, 8, 7])),
        Response::Grain(Err(CallError::UnknownMessage {
            grain_type: "t".into(),
            message: "m".into(),
        })),
        Response::Directory {
            epoch: 3,
            result: Ok(Some(silo(7000, 2))),
        },
        Response::Directory {
            epoch: 0,
            result: Ok(None),
        },
        Response::Directory {
            epoch: u64::MAX,
            result: Err(CallError::ShuttingDown),
        },
        Response::Grain(Err(CallError::Cancelled)),
        Response::DirectoryReport(ReportOutcome::Accepted {
            rejected: vec![grain()],
        }),
        Response::DirectoryReport(ReportOutcome::NotMember),
        Response::DirectoryReport(ReportOutcome::NotLeader { epoch: 9 }),
        Response::StoreReplica(Ok(StorePosition::new(7, 2))),
        Response::StoreReplica(Err(ReplicaError::Diverged {
            position: StorePosition::new(5, 1),
        })),
        Response::StoreReplica(Err(ReplicaError::StaleEpoch { current: 8 })),
        Response::StorageWrite(Err(WireStorageError::NotLeader("standby".into()))),
        Response::StorageRead(Ok(Some((vec![1, 2], "e1".into())))),
        Response::StorageRead(Ok(None)),
        Response::StorageRead(Err(WireStorageError::Corrupt("bad".into()))),
        Response::StorageWrite(Ok("e2".into())),
        Response::StorageWrite(Err(WireStorageError::Conflict {
            expected: Some("e1".into()),
            found: None,
        })),
        Response::StorageWrite(Err(WireStorageError::TooLarge { size: 10, max: 5 })),
        Response::StorageClear(Ok(())),
        Response::StorageClear(Err(WireStorageError::Unavailable("down".into()))),
        Response::StorageClear(Err(WireStorageError::Failed("disk".into()))),
        Response::Pong,
        Response::Moved(SiloAddr::new("[::1]:7000".parse().unwrap(), u64::MAX)),
        Response::GrainAt(Box::new(GrainReplyAt {
            reply: Ok(vec![1]),
            version: 42,
            copies: Some(copy_set()),
        })),
        Response::GrainAt(Box::new(GrainReplyAt {
            reply: Err(CallError::Timeout),
            version: 0,
            copies: None,
        })),
        Response::Replica(ReplicaResponse::Applied),
        Response::Replica(ReplicaResponse::Failed(CallError::ShuttingDown)),
        Response::Replica(ReplicaResponse::Synced {
            activation: 17,
            version: 4,
            state: Some(vec![5, 6]),
            lease_ms: 1_000,
        }),
        Response::Replica(ReplicaResponse::NotPrimary),
    ];
    let mut frames = Vec::new();
    for (i, request) in requests.into_iter().enumerate() {
        frames.push(Frame::Request {
            id: i as u64 * 1_000_003,
            body: request.clone(),
        });
        frames.push(Frame::OneWay(request));
    }
    for (i, response) in responses.into_iter().enumerate() {
        frames.push(Frame::Response {
            id: u64::MAX - i as u64,
            body: response,
        });
    }
    frames.extend([
        Frame::StreamItem {
            id: 7,
            item: vec![0, 1, 255],
        },
        Frame::StreamItem {
            id: u64::MAX,
            item: Vec::new(),
        },
        Frame::StreamCredit { id: 7, credit: 16 },
        Frame::StreamCredit {
            id: 0,
            credit: u32::MAX,
        },
        Frame::Cancel { id: 7 },
        Frame::Cancel { id: u64::MAX },
    ]);
    frames
}

fn encoded(frame: &Frame) -> Vec<u8> {
    FrameCodec::default().encode_to_vec(frame).unwrap()
}

#[test]
fn every_variant_round_trips() {
    let mut codec = FrameCodec::default();
    for frame in every_frame() {
        let mut buf = BytesMut::new();
        codec.encode(frame.clone(), &mut buf).unwrap();
        assert_eq!(buf[LENGTH_PREFIX], FRAME_VERSION);
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len + LENGTH_PREFIX, buf.len());
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
        assert!(buf.is_empty());
    }
}

#[test]
fn many_frames_in_one_buffer_decode_in_order() {
    let mut codec = FrameCodec::default();
    let frames = every_frame();
    let mut buf = BytesMut::new();
    for frame in &frames {
        codec.encode(frame.clone(), &mut buf).unwrap();
    }
    for frame in frames {
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn partial_frames_wait_for_more_input() {
    let mut codec = FrameCodec::default();
    let frame = Frame::Request {
        id: 42,
        body: Request::StorageWrite {
            grain: grain(),
            data: vec![7; 100],
            expected: None,
        },
    };
    let bytes = encoded(&frame);
    let mut buf = BytesMut::new();
    // Feed one byte at a time: every prefix but the whole is incomplete.
    for (i, byte) in bytes.iter().enumerate() {
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "after {i} bytes");
        buf.extend_from_slice(&[*byte]);
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
}

#[test]
fn incomplete_body_reserves_at_most_the_declared_length() {
    let mut codec = FrameCodec::default();
    let bytes = encoded(&Frame::OneWay(Request::Ping));
    let mut buf = BytesMut::from(&bytes[..LENGTH_PREFIX]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
}

#[test]
fn oversize_length_prefix_is_rejected_without_allocating() {
    let mut codec = FrameCodec::new(1024);
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&u32::MAX.to_be_bytes());
    buf.extend_from_slice(&[FRAME_VERSION, 0, 0]);
    let capacity = buf.capacity();
    match codec.decode(&mut buf) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, 1024);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), capacity, "nothing was reserved");
    // Exactly the cap is accepted (here: incomplete, so it waits).
    let mut ok = BytesMut::new();
    ok.extend_from_slice(&1024u32.to_be_bytes());
    assert_eq!(codec.decode(&mut ok).unwrap(), None);
}

#[test]
fn encoder_refuses_frames_above_the_cap() {
    let codec = FrameCodec::new(64);
    let big = Frame::OneWay(Request::StorageWrite {
        grain: grain(),
        data: vec![0; 100],
        expected: None,
    });
    assert!(matches!(
        codec.encode_to_vec(&big),
        Err(FrameError::TooLarge { max: 64, .. })
    ));
    let mut dst = BytesMut::new();
    assert!(FrameCodec::new(64).encode(big, &mut dst).is_err());
    assert!(dst.is_empty());
}

#[test]
fn garbage_body_is_a_decode_error() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let body = [FRAME_VERSION, 0xff, 0xfe, 0xfd, 0xfc, 0xfb];
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    assert!(matches!(codec.decode(&mut buf), Err(FrameError::Decode(_))));
    assert!(buf.is_empty(), "the bad frame was consumed");
}

#[test]
fn trailing_bytes_inside_a_frame_are_a_decode_error() {
    let mut codec = FrameCodec::default();
    let mut bytes = encoded(&Frame::OneWay(Request::Ping));
    bytes.push(0);
    let len = (bytes.len() - LENGTH_PREFIX) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::Decode(CodecError::Trailing(1)))
    ));
}

#[test]
fn wrong_version_is_rejected() {
    let mut codec = FrameCodec::default();
    let mut bytes = encoded(&Frame::OneWay(Request::Ping));
    bytes[LENGTH_PREFIX] = FRAME_VERSION + 1;
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::BadVersion { found }) if found == FRAME_VERSION + 1
    ));
}

#[test]
fn empty_frame_is_rejected() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert!(matches!(codec.decode(&mut buf), Err(FrameError::Empty)));
}

#[test]
fn silo_addr_displays_and_orders() {
    let a = silo(7000, 1);
    let b = silo(7000, 2);
    assert_eq!(a.to_string(), "127.0.0.1:7000#1");
    assert!(a < b);
    assert_ne!(a, b);
}

/// Byte fields travel as one byte string, but the bytes on the wire are those of the
/// plain derived `Vec<u8>` form (so FRAME_VERSION did not change).
#[test]
fn byte_fields_encode_as_the_derived_vec_form() {
    #[derive(serde::Serialize)]
    enum PlainResponse {
        Grain(Result<Vec<u8>, CallError>),
    }
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    for reply in [Ok(payload.clone()), Err(CallError::Timeout)] {
        let ours = codec::encode(&Response::Grain(reply.clone())).unwrap();
        assert_eq!(
            ours,
            codec::encode(&PlainResponse::Grain(reply.clone())).unwrap()
        );
        assert_eq!(
            codec::decode::<Response>(&ours).unwrap(),
            Response::Grain(reply)
        );
    }
}
