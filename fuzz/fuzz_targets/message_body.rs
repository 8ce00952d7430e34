//! Message bodies as a silo decodes them: for every message of every grain type
//! registered here (the example grains), the bytes are decoded as that message (what
//! the activation does with a remote call's body) and as its reply through the
//! registry's vtable (what a caller does with the answer). Never a panic; a decoded
//! message encodes and decodes back to itself.
#![no_main]

use granary_example::{Add, AddFollower, Follow, Followers, Following, Get, Hello};
use granary_proto::codec;
use granary_runtime::registry::registry;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<M: Serialize + DeserializeOwned>(bytes: &[u8]) {
    if let Ok(message) = codec::decode::<M>(bytes) {
        let again = codec::encode(&message).expect("a decoded message encodes");
        let back: M = codec::decode(&again).expect("and decodes again");
        assert_eq!(codec::encode(&back).unwrap(), again);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let types = registry().grain_types();
    assert!(!types.is_empty(), "the example grains are linked");
    let messages: Vec<_> = types.iter().flat_map(|t| t.messages.iter()).collect();
    let vt = messages[pick as usize % messages.len()];
    let _ = (vt.decode_reply)(body);
    match pick as usize % 7 {
        0 => round_trip::<Hello>(body),
        1 => round_trip::<Add>(body),
        2 => round_trip::<Get>(body),
        3 => round_trip::<Follow>(body),
        4 => round_trip::<AddFollower>(body),
        5 => round_trip::<Followers>(body),
        _ => round_trip::<Following>(body),
    }
});
