//! The TCP frame decoder: a byte stream is decoded frame by frame until it needs more
//! bytes or fails, never panicking or allocating past the cap; feeding the same bytes
//! in two pieces (split where the first byte says) yields the same frames; every
//! decoded frame encodes and decodes back to itself.
#![no_main]

use bytes::BytesMut;
use granary_proto::frame::{Frame, FrameCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Frames decoded from `chunks` fed one after the other, and whether it ended in an error.
fn decode_all(codec: &mut FrameCodec, chunks: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut codec = FrameCodec::new(64 * 1024);
    let (whole, failed) = decode_all(&mut codec, &[stream]);
    let at = (split as usize * stream.len()) / 255;
    let (a, b) = stream.split_at(at.min(stream.len()));
    let (pieces, failed_too) = decode_all(&mut codec, &[a, b]);
    assert_eq!(
        whole, pieces,
        "splitting the stream changed what it decodes to"
    );
    assert_eq!(failed, failed_too);
    for frame in whole {
        let bytes = codec
            .encode_to_vec(&frame)
            .expect("a decoded frame encodes");
        let (again, failed) = decode_all(&mut codec, &[&bytes]);
        assert!(!failed);
        assert_eq!(again, vec![frame]);
    }
});
