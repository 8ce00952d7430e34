use super::*;

fn key(s: &str) -> ClusterKey {
    ClusterKey::new(s.as_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn the_right_key_passes() {
    let (mut server, mut client) = tokio::io::duplex(256);
    let k = key("secret");
    let (s, c) = tokio::join!(challenge(&mut server, &k), respond(&mut client, &k));
    s.unwrap();
    c.unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let (mut server, mut client) = tokio::io::duplex(256);
    let (right, wrong) = (key("secret"), key("guess"));
    let (s, c) = tokio::join!(challenge(&mut server, &right), respond(&mut client, &wrong));
    assert!(matches!(s, Err(HandshakeError::BadMac)));
    assert!(matches!(c, Err(HandshakeError::Denied)), "{c:?}");
}

#[tokio::test]
async fn a_client_without_a_key_is_refused() {
    let (mut server, mut client) = tokio::io::duplex(256);
    let k = key("secret");
    // A client without a key sends a frame straight away.
    let frame = [0u8; 40];
    let (s, _) = tokio::join!(challenge(&mut server, &k), client.write_all(&frame));
    assert!(matches!(s, Err(HandshakeError::NoAnswer)));
    // What it then reads looks like a huge frame; the prefix is recognised.
    let mut prefix = [0u8; 4];
    client.read_exact(&mut prefix).await.unwrap();
    assert!(is_challenge_prefix(u32::from_be_bytes(prefix) as usize));
}

#[tokio::test]
async fn a_server_without_a_key_is_detected() {
    let (mut server, mut client) = tokio::io::duplex(256);
    server.write_all(&[0u8; 40]).await.unwrap();
    assert!(matches!(
        respond(&mut client, &key("secret")).await,
        Err(HandshakeError::NoChallenge)
    ));
}

#[test]
fn keys_are_never_printed_and_never_empty() {
    assert_eq!(format!("{:?}", key("secret")), "ClusterKey(<redacted>)");
    assert!(ClusterKey::new(Vec::new()).is_none());
}
