//! The TCP runtime's frame layer: arbitrary bytes, cut into arbitrary chunks, fed to a
//! `FrameDecoder` the way a connection's reads are; frames are pulled after every chunk until
//! the decoder needs more bytes or reports an error (where the runtime closes the connection),
//! and `finish` is called at end of stream.
//!
//! Input layout: byte 0 picks the cap (the real 16 MiB one, or a small one that the fuzzer can
//! reach) and how many chunk sizes follow; then the chunk sizes (1..=64 each, used in turn);
//! the rest is the stream.
#![no_main]

use groups::codec::Postcard;
use groups::frame::{encode, FrameDecoder, FrameError, FRAME_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

const CLUSTER: u64 = 5;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let max = if head & 0x80 != 0 {
        256
    } else {
        FRAME_BYTES_MAX
    };
    let n_sizes = usize::from(head & 0x07) + 1;
    let (sizes, stream) = rest.split_at(n_sizes.min(rest.len()));
    let sizes: Vec<usize> = if sizes.is_empty() {
        vec![stream.len().max(1)]
    } else {
        sizes.iter().map(|&b| usize::from(b % 64) + 1).collect()
    };

    let mut d = FrameDecoder::with_max(Postcard, CLUSTER, max);
    let (mut at, mut i) = (0, 0);
    while at < stream.len() {
        let end = (at + sizes[i % sizes.len()]).min(stream.len());
        d.extend(&stream[at..end]);
        at = end;
        i += 1;
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    // A decoded frame must encode again (the runtime forwards some of them).
                    let mut out = Vec::new();
                    let _ = encode(&Postcard, CLUSTER, &frame, &mut out);
                }
                Ok(None) => break,
                Err(e) => {
                    if let FrameError::Oversized { len, max: m } = e {
                        assert!(len > m && m == max);
                    }
                    return;
                }
            }
        }
    }
    let _ = d.finish();
});
