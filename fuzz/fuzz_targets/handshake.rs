//! The cluster-key handshake, both sides, against whatever the peer sends: the client
//! side (`respond`) reading a fuzzed challenge and verdict, the server side
//! (`challenge`) reading a fuzzed answer. Never a panic, never success without the key.
#![no_main]

use granary_fuzz::{run_ready, Script, KEY};
use granary_net::transport::handshake::{self, ClusterKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::new(KEY).unwrap();
    // Client side: a server that sent `data`. It may accept (a fuzzed "GRNOKAY1" after
    // a well-formed challenge), and then it must have answered with the right MAC.
    let mut peer = Script {
        input: data,
        written: Vec::new(),
    };
    if run_ready(handshake::respond(&mut peer, &key)).is_ok() {
        assert!(data.starts_with(&handshake::CHALLENGE_MAGIC));
        assert_eq!(
            &peer.written[..handshake::AUTH_MAGIC.len()],
            &handshake::AUTH_MAGIC
        );
    }
    // Server side: a client that sent `data` as its answer to a random nonce. Without
    // the key it cannot be accepted.
    let mut peer = Script {
        input: data,
        written: Vec::new(),
    };
    let accepted = run_ready(handshake::challenge(&mut peer, &key)).is_ok();
    assert!(!accepted, "accepted an answer made without the key");
    assert!(peer.written.starts_with(&handshake::CHALLENGE_MAGIC));
});
