//! Encoding helpers shared by the chain and the handlers: deterministic mixing (so every block,
//! transaction and balance is a pure function of its inputs), Ethereum hex quantities/data, and a
//! tiny JSON object writer. Responses are written straight into byte buffers instead of going
//! through `serde_json::Value`, because the mock must never be a benchmark's bottleneck.

use std::io::Write;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// SplitMix64's finaliser: cheap, and good enough that neighbouring inputs look unrelated.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes three words; `salt` separates the different things derived from the same inputs.
pub fn mix(a: u64, b: u64, salt: u64) -> u64 {
    splitmix64(a ^ splitmix64(b ^ splitmix64(salt)))
}

/// Fills `N` bytes from a seed, 8 bytes per mixing step.
pub fn fill<const N: usize>(seed: u64) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let w = splitmix64(seed ^ splitmix64(i as u64)).to_be_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    out
}

/// A 64-bit digest of arbitrary bytes (length included so prefixes do not collide trivially).
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = splitmix64(seed ^ bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = splitmix64(h ^ u64::from_le_bytes(w));
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    splitmix64(h ^ u64::from_le_bytes(last) ^ 0xA5)
}

/// The hash the mock gives a raw transaction: `"0x"` + 64 hex digits, a digest of `raw` exactly
/// as sent (the JSON string's text, `0x` prefix and letter case included). Not keccak.
pub fn tx_hash(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(66);
    push_data(&mut out, &tx_hash_bytes(raw));
    String::from_utf8(out).unwrap_or_default()
}

/// Keccak-256 of the decoded transaction bytes, as a real node computes it (the proxy computes
/// the same hash when it answers for a transaction an upstream already knows).
pub fn tx_hash_bytes(raw: &[u8]) -> [u8; 32] {
    std::str::from_utf8(raw)
        .ok()
        .and_then(crate::jsonrpc::tx::raw_tx_hash)
        .unwrap_or_else(|| {
            let mut out = [0u8; 32];
            for (i, chunk) in out.chunks_mut(8).enumerate() {
                let seed = 0x7478_6861_7368_0000 | i as u64;
                chunk.copy_from_slice(&hash_bytes(seed, raw).to_be_bytes());
            }
            out
        })
}

/// Appends `0x` + lower-case hex of `bytes` (unquoted).
pub fn push_data(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(2 + bytes.len() * 2);
    out.extend_from_slice(b"0x");
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Appends a quoted hex quantity without leading zeros (`"0x0"` for zero), as the spec requires.
pub fn push_qty(out: &mut Vec<u8>, v: u64) {
    let _ = write!(out, "\"0x{v:x}\"");
}

pub fn qty_string(v: u64) -> String {
    format!("\"0x{v:x}\"")
}

/// Appends `s` as a JSON string literal, escaped.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and serde_json escapes exactly as JSON requires.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Parses a hex quantity (`0x` + 1..=16 hex digits; leading zeros tolerated).
pub fn parse_qty(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Parses `0x`-prefixed hex data of even length into bytes.
pub fn parse_data(s: &str) -> Option<Vec<u8>> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))?
        .as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Parses exactly `N` bytes of `0x`-prefixed hex (addresses, hashes).
pub fn parse_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let v = parse_data(s)?;
    v.try_into().ok()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Writes one JSON object field by field, handling the commas.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Starts field `k` and hands back the buffer for its value.
    pub fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn qty(&mut self, k: &str, v: u64) -> &mut Self {
        push_qty(self.key(k), v);
        self
    }

    pub fn data(&mut self, k: &str, bytes: &[u8]) -> &mut Self {
        let out = self.key(k);
        out.push(b'"');
        push_data(out, bytes);
        out.push(b'"');
        self
    }

    /// A field whose value is already JSON text.
    pub fn raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.key(k).extend_from_slice(json.as_bytes());
        self
    }

    pub fn end(&mut self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_data_round_trip() {
        let mut out = Vec::new();
        push_qty(&mut out, 0);
        push_qty(&mut out, 0x1a2b);
        assert_eq!(out, b"\"0x0\"\"0x1a2b\"");
        assert_eq!(parse_qty("0x1a2b"), Some(0x1a2b));
        assert_eq!(parse_qty("0x"), None);
        assert_eq!(parse_qty("12"), None);
        assert_eq!(parse_data("0xdeadBEEF"), Some(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(parse_data("0xabc"), None);
        assert_eq!(parse_data("0xzz"), None);
        let h = tx_hash(b"0x01");
        assert_eq!(h.len(), 66);
        assert_eq!(h, tx_hash(b"0x01"));
        assert_ne!(h, tx_hash(b"0x02"));
    }
}
