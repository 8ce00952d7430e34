//! Cluster-key authentication of TCP connections: one challenge and response before any
//! frame is exchanged.
//!
//! When a cluster key is configured, the server opens every accepted connection by
//! sending [`CHALLENGE_MAGIC`] and a fresh 32-byte random nonce. The client answers
//! [`AUTH_MAGIC`] and HMAC-SHA256(key, `"granary tcp auth v1"` ‖ nonce). The server
//! replies [`ACCEPT_MAGIC`], or [`DENY_MAGIC`] and closes a connection whose answer is
//! missing, late or wrong without reading a single frame, so nobody without the key can
//! call grains or touch the store the master serves.
//!
//! This authenticates the client to the server; it does not encrypt the traffic or
//! authenticate the server (a man in the middle who can rewrite TCP could still relay).
//! Use a private network, or TLS in front, where that matters.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes a server sends on a connection that needs authentication.
pub const CHALLENGE_MAGIC: [u8; 8] = *b"GRNCHAL1";
/// First bytes of the client's answer.
pub const AUTH_MAGIC: [u8; 8] = *b"GRNAUTH1";
/// The server's verdict on a good answer; frames follow.
pub const ACCEPT_MAGIC: [u8; 8] = *b"GRNOKAY1";
/// The server's verdict on a bad answer, just before it closes the connection.
pub const DENY_MAGIC: [u8; 8] = *b"GRNDENY1";
/// Length of the server's random nonce.
pub const NONCE_LEN: usize = 32;
/// Length of the client's HMAC-SHA256 answer.
pub const MAC_LEN: usize = 32;
/// Binds the MAC to this use, so a MAC from another protocol cannot be replayed here.
const DOMAIN: &[u8] = b"granary tcp auth v1";

/// The cluster's shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    /// A key from its bytes (must not be empty).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Self> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then(|| ClusterKey(bytes.into()))
    }

    fn mac(&self, nonce: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        mac.update(nonce);
        mac
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Why a handshake failed. The connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Reading or writing the socket failed (including the peer closing it).
    #[error("handshake i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server's first bytes are not a challenge: it probably runs without a key.
    #[error(
        "the silo runs without a cluster key but we have one (give both the same --cluster-key, or neither)"
    )]
    NoChallenge,
    /// The client's answer does not start with [`AUTH_MAGIC`]: it probably has no key.
    #[error("the peer sent no authentication (it has no cluster key, or is not a Granary silo or client)")]
    NoAnswer,
    /// The answer's MAC is wrong: the peer uses another key.
    #[error("wrong cluster key")]
    BadMac,
    /// The server refused our answer: we use another key than the cluster.
    #[error("wrong cluster key: the silo refused ours; check --cluster-key / GRANARY_CLUSTER_KEY")]
    Denied,
    /// The operating system gave no random bytes for the nonce.
    #[error("no randomness for the nonce: {0}")]
    Random(String),
}

/// Server side: challenges the peer and verifies its answer.
pub async fn challenge<S>(stream: &mut S, key: &ClusterKey) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; CHALLENGE_MAGIC.len() + NONCE_LEN];
    hello[..CHALLENGE_MAGIC.len()].copy_from_slice(&CHALLENGE_MAGIC);
    getrandom::fill(&mut hello[CHALLENGE_MAGIC.len()..])
        .map_err(|e| HandshakeError::Random(e.to_string()))?;
    stream.write_all(&hello).await?;
    stream.flush().await?;
    let mut answer = [0u8; AUTH_MAGIC.len() + MAC_LEN];
    stream.read_exact(&mut answer).await?;
    let verdict = if answer[..AUTH_MAGIC.len()] != AUTH_MAGIC {
        Err(HandshakeError::NoAnswer)
    } else {
        key.mac(&hello[CHALLENGE_MAGIC.len()..])
            .verify_slice(&answer[AUTH_MAGIC.len()..])
            .map_err(|_| HandshakeError::BadMac)
    };
    let reply = if verdict.is_ok() {
        ACCEPT_MAGIC
    } else {
        DENY_MAGIC
    };
    // Best effort: the verdict only makes the peer's error clearer.
    let _ = stream.write_all(&reply).await;
    let _ = stream.flush().await;
    verdict
}

/// Client side: answers the server's challenge.
pub async fn respond<S>(stream: &mut S, key: &ClusterKey) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; CHALLENGE_MAGIC.len() + NONCE_LEN];
    stream.read_exact(&mut hello).await?;
    if hello[..CHALLENGE_MAGIC.len()] != CHALLENGE_MAGIC {
        return Err(HandshakeError::NoChallenge);
    }
    let mac = key
        .mac(&hello[CHALLENGE_MAGIC.len()..])
        .finalize()
        .into_bytes();
    let mut answer = [0u8; AUTH_MAGIC.len() + MAC_LEN];
    answer[..AUTH_MAGIC.len()].copy_from_slice(&AUTH_MAGIC);
    answer[AUTH_MAGIC.len()..].copy_from_slice(&mac);
    stream.write_all(&answer).await?;
    stream.flush().await?;
    let mut verdict = [0u8; ACCEPT_MAGIC.len()];
    stream.read_exact(&mut verdict).await?;
    match verdict {
        ACCEPT_MAGIC => Ok(()),
        DENY_MAGIC => Err(HandshakeError::Denied),
        _ => Err(HandshakeError::NoChallenge),
    }
}

/// True if `len`, read as a frame's length prefix, is really the start of a challenge:
/// a client without a key is talking to a silo that requires one.
pub fn is_challenge_prefix(len: usize) -> bool {
    len == u32::from_be_bytes([
        CHALLENGE_MAGIC[0],
        CHALLENGE_MAGIC[1],
        CHALLENGE_MAGIC[2],
        CHALLENGE_MAGIC[3],
    ]) as usize
}

#[cfg(test)]
mod tests;
