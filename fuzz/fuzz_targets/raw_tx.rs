//! Signed raw transaction decoding on any bytes: never a panic; what decodes decodes the same
//! again, from its bytes or from its hex; and its hash is the keccak of its bytes (what
//! `raw_tx_hash` answers), except for a blob transaction sent with its blobs, whose hash is that
//! of the transaction without them, which decodes alone to the same transaction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livechain::jsonrpc::tx::{decode_raw_tx, decode_raw_tx_hex, raw_tx_hash};

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for d in b {
        s.push(char::from(b"0123456789abcdef"[usize::from(d >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(d & 15)]));
    }
    s
}

/// The length of an RLP header and of the payload after it. Only for input the decoder has
/// accepted, so no checks; kept apart from the decoder's own reader to check it.
fn header(b: &[u8]) -> (usize, usize) {
    let long = |n: usize| {
        let len = b[1..=n].iter().fold(0usize, |l, &d| (l << 8) | usize::from(d));
        (1 + n, len)
    };
    match b[0] {
        0x00..=0x7f => (0, 1),
        0x80..=0xb7 => (1, usize::from(b[0] - 0x80)),
        0xb8..=0xbf => long(usize::from(b[0] - 0xb7)),
        0xc0..=0xf7 => (1, usize::from(b[0] - 0xc0)),
        0xf8..=0xff => long(usize::from(b[0] - 0xf7)),
    }
}

fuzz_target!(|data: &[u8]| {
    let decoded = decode_raw_tx(data);
    let h = hex(data);
    assert_eq!(decode_raw_tx_hex(&h), decoded);
    let Ok(tx) = decoded else {
        return;
    };
    assert_eq!(decode_raw_tx(data).as_ref(), Ok(&tx));
    assert!(tx.kind <= 4, "{tx:?}");
    assert!(tx.chain_id.is_some() || tx.kind == 0, "{tx:?}");
    assert_eq!(tx.kind, if data[0] < 0x80 { data[0] } else { 0 });
    if Some(tx.hash) == raw_tx_hash(&h) {
        return;
    }
    // Only a blob transaction's network form, `0x03 || rlp([tx, …])`, hashes other than its bytes.
    assert_eq!(tx.kind, 3, "{tx:?}");
    let (outer, _) = header(&data[1..]);
    let list = &data[1 + outer..];
    let (inner, len) = header(list);
    let canonical = [&[3u8][..], &list[..inner + len]].concat();
    assert_eq!(raw_tx_hash(&hex(&canonical)), Some(tx.hash));
    assert_eq!(decode_raw_tx(&canonical), Ok(tx));
});
