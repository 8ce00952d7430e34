use super::*;
use crate::{CallError, GrainId};

#[test]
fn round_trips_ids_and_errors() {
    let id = GrainId::new("example.counter/v1", "alice");
    assert_eq!(decode::<GrainId>(&encode(&id).unwrap()).unwrap(), id);
    let err = CallError::UnknownMessage {
        grain_type: "t".into(),
        message: "m".into(),
    };
    assert_eq!(decode::<CallError>(&encode(&err).unwrap()).unwrap(), err);
}

#[test]
fn rejects_truncated_and_trailing_input() {
    let bytes = encode(&("hello".to_string(), 42u64)).unwrap();
    assert!(matches!(
        decode::<(String, u64)>(&bytes[..bytes.len() - 1]),
        Err(CodecError::Decode(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        decode::<(String, u64)>(&longer),
        Err(CodecError::Trailing(1))
    );
}

#[test]
fn hostile_length_prefix_does_not_allocate() {
    // A Vec<u8> claiming u64::MAX elements: varint 0xFF marker then 8 bytes.
    let mut bytes = vec![0xFF];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode::<Vec<u8>>(&bytes).is_err());
}

#[test]
fn encode_into_appends() {
    let mut buf = vec![1, 2, 3];
    let n = encode_into(&7u32, &mut buf).unwrap();
    assert_eq!(buf.len(), 3 + n);
    assert_eq!(decode::<u32>(&buf[3..]).unwrap(), 7);
}
