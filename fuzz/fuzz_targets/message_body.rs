//! Message bodies as a silo decodes them: for every message of every grain type in this
//! binary's registry (`Shapes`, with the message shapes of the example grains), the
//! bytes are decoded as that message (what the activation does with a remote call's
//! body), as its reply through the registry's vtable (what a caller does with the
//! answer), and as the grain's stored state (what activation does with the store's
//! record). Never a panic; a decoded message encodes and decodes back to itself.
#![no_main]

use granary_fuzz::{Mixed, Number, ShapesState, Text, Unit};
use granary_proto::codec;
use granary_runtime::registry::registry;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = codec::decode::<M>(bytes) {
        let again = codec::encode(&message).expect("a decoded message encodes");
        assert_eq!(
            codec::decode::<M>(&again).expect("and decodes again"),
            message
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let types = registry().grain_types();
    assert!(!types.is_empty(), "the fuzz grains are registered");
    let messages: Vec<_> = types.iter().flat_map(|t| t.messages.iter()).collect();
    let vt = messages[pick as usize % messages.len()];
    let _ = (vt.decode_reply)(body);
    match pick % 5 {
        0 => round_trip::<Text>(body),
        1 => round_trip::<Number>(body),
        2 => round_trip::<Unit>(body),
        3 => round_trip::<Mixed>(body),
        _ => {
            let _ = codec::decode::<ShapesState>(body);
        }
    }
});
