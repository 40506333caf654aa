//! Raw transactions: the hash a node gives an `eth_sendRawTransaction`, so livechain can answer
//! with it when an upstream reports a transaction it already knows.

use tiny_keccak::{Hasher, Keccak};

/// Keccak-256 of the bytes of a `0x`-prefixed hex transaction; `None` if it is not valid hex.
pub fn raw_tx_hash(raw_hex: &str) -> Option<[u8; 32]> {
    let digits = raw_hex.strip_prefix("0x")?.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let mut k = Keccak::v256();
    let mut buf = [0u8; 512];
    for block in digits.chunks(buf.len() * 2) {
        let n = block.len() / 2;
        for (i, pair) in block.chunks(2).enumerate() {
            buf[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        k.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    k.finalize(&mut out);
    Some(out)
}

/// The hash as a JSON string value, `"0x…"`.
pub fn raw_tx_hash_json(raw_hex: &str) -> Option<String> {
    let h = raw_tx_hash(raw_hex)?;
    let mut s = String::with_capacity(68);
    s.push_str("\"0x");
    for b in h {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s.push('"');
    Some(s)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_of_decoded_bytes() {
        // keccak256("") and keccak256(0x01), well-known values.
        assert_eq!(
            raw_tx_hash_json("0x").unwrap(),
            "\"0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470\""
        );
        assert_eq!(
            raw_tx_hash_json("0x01").unwrap(),
            "\"0x5fe7f977e71dba2ea1a68e21057beebb9be2ac30c6410aa38d4f3fbe41dcffd2\""
        );
        assert!(raw_tx_hash("0x0").is_none());
        assert!(raw_tx_hash("0xzz").is_none());
        assert!(raw_tx_hash("01").is_none());
        // Longer than one buffer.
        let long = format!("0x{}", "ab".repeat(2000));
        assert!(raw_tx_hash(&long).is_some());
    }
}
