//! The UDP membership packet decoder: any datagram is refused with an error or decoded,
//! never a panic; a decoded packet encodes and decodes back to itself.
//!
//! The first byte picks what the rest is: `0` a raw datagram for the unsigned codec,
//! `1` a raw datagram for the signed codec (mostly refused at the MAC), `2` a body
//! that the target frames and signs with the right key, so the fuzzer reaches the
//! body decoder behind the MAC check.
#![no_main]

use granary_proto::packet::{PacketCodec, DEFAULT_MAX_PACKET, FLAG_SIGNED, MAGIC};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

fn signed_datagram(body: &[u8]) -> Vec<u8> {
    let mut datagram = MAGIC.to_vec();
    datagram.push(FLAG_SIGNED);
    datagram.extend_from_slice(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(granary_fuzz::KEY).unwrap();
    mac.update(&datagram);
    datagram.extend_from_slice(&mac.finalize().into_bytes());
    datagram
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let unsigned = PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap();
    let signed = PacketCodec::new(Some(granary_fuzz::KEY), DEFAULT_MAX_PACKET).unwrap();
    let (codec, datagram) = match mode % 3 {
        0 => (&unsigned, rest.to_vec()),
        1 => (&signed, rest.to_vec()),
        _ => (&signed, signed_datagram(rest)),
    };
    if let Ok(packet) = codec.decode(&datagram) {
        // An encoding may exceed the cap only if the decoded one did too (it did not).
        let again = codec.encode(&packet).expect("a decoded packet encodes");
        assert_eq!(codec.decode(&again).expect("and decodes again"), packet);
    }
    // Whatever the flags say, the other codec refuses or decodes, never panics.
    let other = if std::ptr::eq(codec, &unsigned) {
        &signed
    } else {
        &unsigned
    };
    let _ = other.decode(&datagram);
});
