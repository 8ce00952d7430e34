//! Hostile input to the real binaries: bad membership datagrams and bad TCP frames leave
//! every silo serving, and a slave with the wrong cluster key never joins. Helpers:
//! [`support`]; the raw frame and packet helpers are here.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use granary_client::{Client, ClientConfig, ConnectError};
use granary_example::{Add, Counter};
use granary_net::transport::{handshake, ClusterKey};
use granary_proto::frame::{Frame, FrameCodec, Request, Response, FRAME_VERSION};
use granary_proto::packet::{
    Packet, PacketBody, PacketCodec, PacketError, SiloId, DEFAULT_MAX_PACKET, FLAG_SIGNED, MAGIC,
};
use granary_proto::CallError;
use support::{bounded, connect, free_ports, Procs, KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// Hostile datagrams and frames
// ---------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A frame with a correct length prefix around `version` and `body`.
fn raw_frame(version: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 1).unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.push(version);
    frame.extend_from_slice(body);
    frame
}

/// A raw connection to `addr` that has passed the cluster-key handshake.
async fn authenticated(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let key = ClusterKey::new(KEY.as_bytes()).unwrap();
    handshake::respond(&mut stream, &key)
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    stream
}

/// Sends `bytes` on a new authenticated connection to `addr` and expects the silo to
/// close it.
async fn expect_rejected(addr: SocketAddr, what: &str, bytes: &[u8]) {
    let mut stream = authenticated(addr).await;
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{addr} kept the connection open after {what}"
    );
}

/// A PING frame over a connection that skips the handshake is never answered: the
/// silo challenges, gets no valid answer, and closes.
async fn expect_unauthenticated_refused(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let ping = FrameCodec::default()
        .encode_to_vec(&Frame::Request {
            id: 7,
            body: Request::Ping,
        })
        .unwrap();
    stream.write_all(&ping).await.unwrap();
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{addr} kept an unauthenticated connection open"
    );
    assert!(
        seen.starts_with(&handshake::CHALLENGE_MAGIC),
        "{addr} sent no challenge"
    );
    // Only the challenge (and, if the silo read a full bad answer, its DENY): no PONG.
    let challenge_len = handshake::CHALLENGE_MAGIC.len() + handshake::NONCE_LEN;
    assert!(
        seen.len() == challenge_len || seen[challenge_len..] == handshake::DENY_MAGIC,
        "{addr} answered an unauthenticated request: {seen:?}"
    );
}

/// A PING frame over an authenticated raw connection must be answered with PONG.
async fn raw_ping(addr: SocketAddr) {
    let mut stream = authenticated(addr).await;
    let request = Frame::Request {
        id: 42,
        body: Request::Ping,
    };
    stream
        .write_all(&FrameCodec::default().encode_to_vec(&request).unwrap())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(body[0], FRAME_VERSION);
        granary_proto::codec::decode::<Frame>(&body[1..]).unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("{addr} did not answer a raw PING"));
    assert_eq!(
        answer,
        Frame::Response {
            id: 42,
            body: Response::Pong
        }
    );
}

/// Datagrams the silo must drop, each with what it is.
fn bad_datagrams(fake: SiloId) -> Vec<(&'static str, Vec<u8>)> {
    let wrong = PacketCodec::new(Some(b"wrong"), DEFAULT_MAX_PACKET).unwrap();
    let unsigned = PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap();
    let right = PacketCodec::new(Some(KEY.as_bytes()), DEFAULT_MAX_PACKET).unwrap();
    let handshake = |seq| Packet {
        from: fake,
        seq,
        body: PacketBody::Handshake,
    };
    let mut tampered = right.encode(&handshake(10)).unwrap();
    tampered[MAGIC.len() + 3] ^= 0x01;
    let mut other_version = right.encode(&handshake(11)).unwrap();
    other_version[3] = MAGIC[3].wrapping_add(1);
    let mut unknown_flags = right.encode(&handshake(12)).unwrap();
    unknown_flags[MAGIC.len()] = FLAG_SIGNED | 0x80;
    let mut magic_then_noise = MAGIC.to_vec();
    magic_then_noise.push(FLAG_SIGNED);
    magic_then_noise.extend(noise(3, 100));
    vec![
        ("random garbage", noise(1, 300)),
        ("an empty datagram", Vec::new()),
        ("a 20 KiB datagram", noise(2, 20 * 1024)),
        (
            "a HANDSHAKE signed with the wrong key",
            wrong.encode(&handshake(1)).unwrap(),
        ),
        (
            "an unsigned HANDSHAKE",
            unsigned.encode(&handshake(2)).unwrap(),
        ),
        ("a HANDSHAKE with a flipped body bit", tampered),
        ("a HANDSHAKE of another version", other_version),
        ("a HANDSHAKE with unknown flags", unknown_flags),
        ("the magic followed by noise", magic_then_noise),
        (
            "a truncated signed HANDSHAKE",
            right.encode(&handshake(13)).unwrap()[..20].to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_and_frames_leave_the_silo_serving() {
    let mut procs = Procs::new("bad-input");
    bounded(Duration::from_secs(60), bad_input(&mut procs)).await;
}

async fn bad_input(procs: &mut Procs) {
    let mut cluster = procs.start_cluster("", 1, Some(KEY)).await;
    let master = procs.ports(cluster.master);
    let slave = procs.ports(cluster.slaves[0]);

    // --- UDP, from a fake silo whose addresses the test holds.
    let fake_udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = SiloId::new(
        fake_tcp.local_addr().unwrap(),
        fake_udp.local_addr().unwrap(),
        SiloId::generation_now(),
    );
    for (what, datagram) in bad_datagrams(fake) {
        for target in [master.udp, slave.udp] {
            fake_udp
                .send_to(&datagram, target)
                .await
                .unwrap_or_else(|e| panic!("sending {what}: {e}"));
        }
    }
    // A master admits a HANDSHAKE with a WELCOME at once: nothing may come back but
    // the unsigned auth rejections a silo sends for packets that fail the key check.
    let mut buf = vec![0u8; 65_536];
    let codec = PacketCodec::new(Some(KEY.as_bytes()), DEFAULT_MAX_PACKET).unwrap();
    while let Ok(Ok((len, from))) =
        tokio::time::timeout(Duration::from_secs(1), fake_udp.recv_from(&mut buf)).await
    {
        match codec.decode(&buf[..len]) {
            Err(PacketError::Rejected(_)) => {}
            other => panic!("a bad datagram was answered by {from} with {len} bytes: {other:?}"),
        }
    }

    for i in [cluster.master, cluster.slaves[0]] {
        assert!(
            procs.log(i).contains("dropped a membership packet from"),
            "{} logged no dropped datagram: did the packets arrive?",
            procs.name(i)
        );
    }

    // --- TCP, against the master and the slave.
    let mut hanging = Vec::new();
    for addr in [master.tcp, slave.tcp] {
        expect_unauthenticated_refused(addr).await;
        raw_ping(addr).await;
        expect_rejected(addr, "a u32::MAX length prefix", &u32::MAX.to_be_bytes()).await;
        expect_rejected(addr, "a zero length prefix", &0u32.to_be_bytes()).await;
        expect_rejected(
            addr,
            "a frame of another version",
            &raw_frame(FRAME_VERSION + 1, b"hello"),
        )
        .await;
        expect_rejected(
            addr,
            "an undecodable frame body",
            &raw_frame(FRAME_VERSION, &noise(4, 64)),
        )
        .await;
        // Garbage whose first four bytes make a prefix above the 8 MiB cap.
        let mut garbage = noise(5, 512);
        garbage[0] = 0xff;
        expect_rejected(addr, "garbage", &garbage).await;
        // Half a frame, then silence: the connection just waits, and must not hold up
        // anyone else.
        let mut half = authenticated(addr).await;
        let frame = FrameCodec::default()
            .encode_to_vec(&Frame::Request {
                id: 1,
                body: Request::Ping,
            })
            .unwrap();
        half.write_all(&frame[..frame.len() / 2]).await.unwrap();
        let mut declared_large = authenticated(addr).await;
        declared_large
            .write_all(&(1u32 << 20).to_be_bytes())
            .await
            .unwrap();
        declared_large.write_all(&[FRAME_VERSION]).await.unwrap();
        hanging.push(half);
        hanging.push(declared_large);
        raw_ping(addr).await;
    }

    // --- The cluster still serves, through both gateways.
    assert!(procs.alive(cluster.master), "the master died");
    assert!(procs.alive(cluster.slaves[0]), "the slave died");
    for gateway in [master.tcp, slave.tcp] {
        let client = connect(&[gateway]).await;
        for i in 0..10 {
            let value = client
                .grain::<Counter>(format!("after-{i}"))
                .ask(Add(1))
                .timeout(Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("call through {gateway} failed: {e}"));
            assert!(value >= 1);
        }
        client.close().await;
    }
    // And a new slave can still join.
    let newcomer = procs.add_slave(&mut cluster, "slave-late", Some(KEY)).await;
    assert!(procs.alive(newcomer));

    // Control: the same HANDSHAKE correctly signed is answered with a WELCOME, so the
    // packets above were dropped for what was wrong with them, not for being malformed.
    let right = PacketCodec::new(Some(KEY.as_bytes()), DEFAULT_MAX_PACKET).unwrap();
    let handshake = Packet {
        from: fake,
        seq: 100,
        body: PacketBody::Handshake,
    };
    fake_udp
        .send_to(&right.encode(&handshake).unwrap(), master.udp)
        .await
        .unwrap();
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), fake_udp.recv_from(&mut buf))
        .await
        .expect("no WELCOME for a correctly signed HANDSHAKE")
        .unwrap();
    assert_eq!(from, master.udp);
    let welcome = right.decode(&buf[..len]).unwrap();
    match welcome.body {
        PacketBody::Welcome { members, .. } => {
            assert!(
                members.iter().any(|m| m.id == fake),
                "the WELCOME does not list the newcomer"
            );
        }
        other => panic!("expected a WELCOME, got {}", other.name()),
    }
    // The fake leaves at once, before anything is placed on it.
    let bye = Packet {
        from: fake,
        seq: 101,
        body: PacketBody::Shutdown,
    };
    fake_udp
        .send_to(&right.encode(&bye).unwrap(), master.udp)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs.logged_slave(cluster.master, fake.tcp, "left") {
        assert!(
            Instant::now() < deadline,
            "the master did not see the fake silo leave"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(procs.alive(cluster.master));
    drop(hanging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_with_the_wrong_cluster_key_never_joins() {
    let mut procs = Procs::new("wrong-key");
    bounded(Duration::from_secs(60), wrong_key(&mut procs)).await;
}

async fn wrong_key(procs: &mut Procs) {
    let mut cluster = procs.start_cluster("", 0, Some(KEY)).await;
    let master = procs.ports(cluster.master);
    let intruder = procs.spawn(procs.spec(
        "slave-wrong-key",
        free_ports(),
        Some(master),
        Some("not-the-key"),
    ));
    let client = connect(&[master.tcp]).await;
    // Over three heartbeat intervals (three HANDSHAKEs), the master never has a slave to
    // place a grain on: every call fails (the router retries "no live slave" until the
    // call's deadline, then reports it).
    let window = Instant::now() + Duration::from_secs(3);
    let mut calls = 0;
    while Instant::now() < window {
        let started = Instant::now();
        match client
            .grain::<Counter>(format!("w-{calls}"))
            .ask(Add(1))
            .timeout(Duration::from_millis(500))
            .await
        {
            Err(CallError::Unreachable(_) | CallError::Timeout) => {}
            other => panic!("a call with no live slave returned {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the call overran its timeout: {:?}",
            started.elapsed()
        );
        procs
            .check_alive(intruder)
            .unwrap_or_else(|e| panic!("{e}"));
        calls += 1;
    }
    // The intruder's own TCP port refuses the cluster's key (it holds another one).
    let via_intruder = Client::connect(
        ClientConfig::new([procs.ports(intruder).tcp])
            .with_connect_timeout(Duration::from_secs(1))
            .with_cluster_key(KEY.as_bytes()),
    )
    .await;
    assert!(
        matches!(via_intruder, Err(ConnectError::Unreachable(ref why)) if why.contains("wrong cluster key")),
        "{via_intruder:?}"
    );

    // Control: a slave with the right key joins and takes every grain.
    let good = procs
        .add_slave(&mut cluster, "slave-right-key", Some(KEY))
        .await;
    for i in 0..10 {
        client
            .grain::<Counter>(format!("w-{i}"))
            .ask(Add(1))
            .await
            .unwrap();
    }
    assert!(procs.activated::<Counter>(intruder).is_empty());
    assert!((0..10).all(|i| procs.activated::<Counter>(good).contains(&format!("w-{i}"))));
    let intruder_tcp = procs.ports(intruder).tcp;
    let intruder_udp = procs.ports(intruder).udp;
    assert!(
        procs
            .log(cluster.master)
            .lines()
            .any(|line| line.contains(&format!("from {intruder_udp}:"))
                && line.contains("MAC does not verify")),
        "the master logged no rejected HANDSHAKE from the intruder"
    );
    assert!(
        !procs.logged_slave(cluster.master, intruder_tcp, "joined"),
        "the master admitted the slave with the wrong key"
    );
    assert!(procs.alive(intruder));
    client.close().await;
}
