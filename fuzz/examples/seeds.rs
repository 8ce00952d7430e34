//! Writes valid inputs to `corpus/<target>/seed-*` as the fuzzers' starting points:
//! every packet kind (unsigned, and as a body to sign), frames of every common kind,
//! a well-formed handshake, and encoded example messages.
//!   cargo run --manifest-path fuzz/Cargo.toml --example seeds

use std::net::SocketAddr;
use std::path::Path;

use granary_fuzz::{Mixed, Number, Text};
use granary_net::transport::handshake;
use granary_proto::codec;
use granary_proto::frame::{Frame, FrameCodec, GrainCall, Request, Response, SiloAddr};
use granary_proto::packet::{
    DepartureReason, LoadReport, Packet, PacketBody, PacketCodec, ProtocolParams, SiloId,
    WireMember, DEFAULT_MAX_PACKET,
};
use granary_proto::GrainId;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    let addr: SocketAddr = "10.77.0.10:7100".parse().unwrap();
    let udp: SocketAddr = "10.77.0.10:7101".parse().unwrap();
    let me = SiloId::new(addr, udp, 1_700_000_000_000);
    let load = LoadReport {
        activations: 3,
        queue_depth: 1,
        suspended: false,
    };
    let bodies = [
        ("handshake", PacketBody::Handshake),
        (
            "welcome",
            PacketBody::Welcome {
                epoch: 2,
                view: 4,
                params: ProtocolParams {
                    heartbeat_interval_ms: 1000,
                    missed_heartbeats: 3,
                },
                members: vec![WireMember { id: me, load }],
            },
        ),
        (
            "heartbeat",
            PacketBody::Heartbeat {
                epoch: 2,
                load,
                view: 4,
                ack: 7,
            },
        ),
        ("shutdown", PacketBody::Shutdown),
        (
            "connect",
            PacketBody::SlaveConnect {
                member: me,
                view: 5,
            },
        ),
        (
            "disconnect",
            PacketBody::SlaveDisconnect {
                member: me,
                reason: DepartureReason::Dead,
                view: 6,
            },
        ),
        ("rejoin", PacketBody::Rejoin),
    ];
    let unsigned = PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap();
    for (name, body) in bodies {
        let packet = Packet {
            from: me,
            seq: 9,
            body,
        };
        let mut raw = vec![0u8];
        raw.extend(unsigned.encode(&packet).unwrap());
        write("packet", &format!("{name}-unsigned"), &raw);
        let mut to_sign = vec![2u8];
        to_sign.extend(codec::encode(&packet).unwrap());
        write("packet", &format!("{name}-body"), &to_sign);
    }

    let grain = GrainId::new("example.counter/v1", "alice");
    let frames = [
        (
            "ping",
            Frame::Request {
                id: 1,
                body: Request::Ping,
            },
        ),
        (
            "grain",
            Frame::Request {
                id: 2,
                body: Request::Grain(GrainCall {
                    target: grain.clone(),
                    message: "Add".into(),
                    payload: codec::encode(&Number(1)).unwrap(),
                    timeout_ms: 2000,
                    hops: 0,
                    one_way: false,
                    stream: None,
                    trace: None,
                }),
            },
        ),
        (
            "resolve",
            Frame::Request {
                id: 3,
                body: Request::DirectoryResolve {
                    grain: grain.clone(),
                    from: Some(SiloAddr::new(addr, 1)),
                },
            },
        ),
        (
            "write",
            Frame::Request {
                id: 4,
                body: Request::StorageWrite {
                    grain: grain.clone(),
                    data: vec![1, 2, 3],
                    expected: Some("e1".into()),
                },
            },
        ),
        (
            "read",
            Frame::Request {
                id: 5,
                body: Request::StorageRead { grain },
            },
        ),
        (
            "pong",
            Frame::Response {
                id: 1,
                body: Response::Pong,
            },
        ),
        (
            "reply",
            Frame::Response {
                id: 2,
                body: Response::Grain(Ok(codec::encode(&5i64).unwrap())),
            },
        ),
    ];
    let frame_codec = FrameCodec::default();
    let mut stream = vec![128u8];
    for (name, frame) in frames {
        let bytes = frame_codec.encode_to_vec(&frame).unwrap();
        let mut one = vec![100u8];
        one.extend(&bytes);
        write("frame", name, &one);
        stream.extend(bytes);
    }
    write("frame", "stream", &stream);

    let mut hs = handshake::CHALLENGE_MAGIC.to_vec();
    hs.extend([7u8; handshake::NONCE_LEN]);
    hs.extend(handshake::ACCEPT_MAGIC);
    write("handshake", "accept", &hs);
    let mut answer = handshake::AUTH_MAGIC.to_vec();
    answer.extend([0u8; handshake::MAC_LEN]);
    write("handshake", "answer", &answer);

    for (pick, name, bytes) in [
        (0u8, "text", codec::encode(&Text("bob".into())).unwrap()),
        (1, "number", codec::encode(&Number(-3)).unwrap()),
        (
            3,
            "mixed",
            codec::encode(&Mixed(vec!["a".into(), "b".into()], Some(7))).unwrap(),
        ),
        (
            4,
            "state",
            codec::encode(&(5i64, vec!["alice".to_string()])).unwrap(),
        ),
    ] {
        let mut input = vec![pick];
        input.extend(bytes);
        write("message_body", name, &input);
    }
    println!("seeds written");
}
