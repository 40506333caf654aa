//! Raw transactions: the hash a node gives an `eth_sendRawTransaction`, so livechain can answer
//! with it when an upstream reports a transaction it already knows, and the decoding of a signed
//! transaction (`decode_raw_tx`) into what the transaction queue keys on: its sender, nonce,
//! chain id and hash, read the way a node reads them, so that what livechain accepts and what it
//! refuses is what a node would.

mod rlp;

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::Message;
use tiny_keccak::{Hasher, Keccak};

use rlp::{Item, Items, Kind};

/// A signed transaction as a node would decode it from `eth_sendRawTransaction`'s parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// 0 legacy, 1 EIP-2930, 2 EIP-1559, 3 EIP-4844, 4 EIP-7702.
    pub kind: u8,
    /// `None` for a legacy transaction signed without a chain id (before EIP-155).
    pub chain_id: Option<u64>,
    pub nonce: u64,
    /// Recovered from the signature.
    pub sender: [u8; 20],
    /// What the node answers: keccak-256 of the canonical encoding. For an EIP-4844 transaction
    /// sent with its blobs (`[tx, blobs, commitments, proofs]`, or the EIP-7594 form with a
    /// version and cell proofs), the hash of `0x03 || rlp(tx)` without them.
    pub hash: [u8; 32],
}

/// Why a raw transaction does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction is not 0x-prefixed hex")]
    NotHex,
    #[error("transaction is empty")]
    Empty,
    #[error("unknown transaction type 0x{0:02x}")]
    UnknownType(u8),
    /// The bytes are not canonical RLP (truncated, trailing bytes, non-minimal lengths).
    #[error("invalid RLP: {0}")]
    Rlp(&'static str),
    /// Canonical RLP, but an item that does not fit its place in the transaction.
    #[error("invalid transaction field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
    #[error("invalid signature: {0}")]
    BadSignature(&'static str),
}

/// Decodes a signed transaction from its bytes, as `eth_sendRawTransaction` receives them: a
/// legacy RLP list, or a type byte (1 to 4) followed by one RLP list.
pub fn decode_raw_tx(raw: &[u8]) -> Result<SignedTx, TxError> {
    let (&first, body) = raw.split_first().ok_or(TxError::Empty)?;
    match first {
        // A legacy transaction is an RLP list, whose first byte is at least 0xc0; geth reads any
        // byte above 0x7f as the start of one, and a string there is then the wrong kind.
        0x80..=0xff => legacy(raw),
        1..=4 => typed(first, body),
        t => Err(TxError::UnknownType(t)),
    }
}

/// `decode_raw_tx` of a `0x`-prefixed hex string, the form of the JSON-RPC parameter.
pub fn decode_raw_tx_hex(hex: &str) -> Result<SignedTx, TxError> {
    decode_raw_tx(&unhex(hex).ok_or(TxError::NotHex)?)
}

/// `[nonce, gasPrice, gas, to, value, data, v, r, s]`.
fn legacy(raw: &[u8]) -> Result<SignedTx, TxError> {
    let list = rlp::single(raw).map_err(TxError::Rlp)?;
    let mut f = Fields::new(list, "transaction")?;
    let nonce = f.u64("nonce")?;
    f.u256("gasPrice")?;
    f.u64("gas")?;
    f.to(true)?;
    f.u256("value")?;
    f.bytes("data")?;
    let unsigned = f.read_so_far();
    let v = f.v()?;
    let (r, s) = f.r_s()?;
    f.end()?;

    let (chain_id, parity) = match v {
        27 | 28 => (None, (v - 27) as u8),
        // EIP-155: v = chain_id * 2 + 35 + parity.
        35.. => {
            let chain_id = u64::try_from((v - 35) / 2).map_err(|_| TxError::Field {
                field: "v",
                problem: "chain id over 64 bits",
            })?;
            (Some(chain_id), ((v - 35) % 2) as u8)
        }
        _ => {
            return Err(TxError::BadSignature(
                "legacy v is neither 27, 28 nor 35 and above",
            ))
        }
    };
    // The signed payload is the unsigned fields, followed by [chainId, 0, 0] under EIP-155. The
    // input is canonical, so its field bytes are their encoding: only the list header and the
    // EIP-155 suffix are written here.
    let mut suffix = [0u8; 11];
    let mut n = 0;
    if let Some(id) = chain_id {
        let mut enc = [0u8; 9];
        let k = rlp::uint(id, &mut enc);
        suffix[..k].copy_from_slice(&enc[..k]);
        suffix[k..k + 2].copy_from_slice(&[0x80, 0x80]);
        n = k + 2;
    }
    let mut header = [0u8; 9];
    let h = rlp::list_header(unsigned.len() + n, &mut header);
    let sighash = keccak(&[&header[..h], unsigned, &suffix[..n]]);
    Ok(SignedTx {
        kind: 0,
        chain_id,
        nonce,
        sender: recover(sighash, &r, &s, parity)?,
        hash: keccak(&[raw]),
    })
}

/// `type || rlp([chainId, nonce, …, yParity, r, s])`; for type 3 also the network form with the
/// blobs, `0x03 || rlp([[chainId, …], (version,) blobs, commitments, proofs])`.
fn typed(kind: u8, body: &[u8]) -> Result<SignedTx, TxError> {
    let outer = rlp::single(body).map_err(TxError::Rlp)?;
    // The canonical form starts with the chain id, an integer; the network form with the
    // transaction, a list (geth tells them apart the same way).
    let list = if kind == 3
        && outer.kind == Kind::List
        && Items::new(outer.payload).peek_kind() == Some(Kind::List)
    {
        blob_wrapper(outer)?
    } else {
        outer
    };
    let mut f = Fields::new(list, "transaction")?;
    let chain_id = f.u64("chainId")?;
    let nonce = f.u64("nonce")?;
    match kind {
        1 => {
            f.u256("gasPrice")?;
        }
        _ => {
            f.u256("maxPriorityFeePerGas")?;
            f.u256("maxFeePerGas")?;
        }
    }
    f.u64("gas")?;
    // A blob or set-code transaction cannot create a contract: `to` is an address.
    f.to(kind <= 2)?;
    f.u256("value")?;
    f.bytes("data")?;
    f.access_list()?;
    match kind {
        3 => {
            f.u256("maxFeePerBlobGas")?;
            f.list_of("blobVersionedHashes", 32, "not 32 bytes")?;
        }
        4 => f.authorization_list()?,
        _ => {}
    }
    let unsigned = f.read_so_far();
    let parity = f.y_parity()?;
    let (r, s) = f.r_s()?;
    f.end()?;

    let mut header = [0u8; 9];
    let h = rlp::list_header(unsigned.len(), &mut header);
    let sighash = keccak(&[&[kind], &header[..h], unsigned]);
    Ok(SignedTx {
        kind,
        chain_id: Some(chain_id),
        nonce,
        sender: recover(sighash, &r, &s, parity)?,
        // The whole input for the canonical form; without the blobs for the network form.
        hash: keccak(&[&[kind], list.raw]),
    })
}

/// Size of one blob (EIP-4844: 4096 field elements of 32 bytes), and of a KZG commitment or proof.
const BLOB_LEN: usize = 131_072;
const KZG_LEN: usize = 48;

/// The transaction inside a blob transaction's network form, after checking the sidecar's shape:
/// `[tx, blobs, commitments, proofs]` (EIP-4844), or `[tx, 1, blobs, commitments, cell_proofs]`
/// (EIP-7594). Blobs, commitments and proofs are fixed-size in geth's decoding, so their sizes
/// are checked here too; how many there are is the pool's business, not decoding's.
fn blob_wrapper(outer: Item<'_>) -> Result<Item<'_>, TxError> {
    let mut w = Fields::new(outer, "blob transaction wrapper")?;
    let tx = w.item("blob transaction")?;
    if w.items.peek_kind() == Some(Kind::Str) && w.u64("wrapper version")? != 1 {
        return Err(TxError::Field {
            field: "wrapper version",
            problem: "unknown version (1, cell proofs, is the only one)",
        });
    }
    w.list_of("blobs", BLOB_LEN, "not 131072 bytes")?;
    w.list_of("commitments", KZG_LEN, "not 48 bytes")?;
    w.list_of("proofs", KZG_LEN, "not 48 bytes")?;
    w.end()?;
    // A list: the caller looked before calling.
    Ok(tx)
}

/// secp256k1's order n, and n / 2: geth (EIP-2) refuses an s above the half, since (r, n - s)
/// is the same signature and would give the transaction a second hash.
const SECP256K1_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
const SECP256K1_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// The address whose key signed `sighash` with (r, s, parity): the last 20 bytes of the
/// keccak-256 of the uncompressed public key without its 0x04 prefix.
fn recover(sighash: [u8; 32], r: &[u8; 32], s: &[u8; 32], parity: u8) -> Result<[u8; 20], TxError> {
    // Big-endian arrays of equal length compare as the numbers they hold.
    if *r == [0; 32] || *s == [0; 32] {
        return Err(TxError::BadSignature("r or s is zero"));
    }
    if *r >= SECP256K1_N {
        return Err(TxError::BadSignature("r is not below the curve order"));
    }
    if *s > SECP256K1_HALF_N {
        return Err(TxError::BadSignature(
            "s is above half the curve order (EIP-2)",
        ));
    }
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(r);
    compact[32..].copy_from_slice(s);
    let sig = RecoverableSignature::from_compact(&compact, RecoveryId::from_u8_masked(parity))
        .map_err(|_| TxError::BadSignature("r or s out of range"))?;
    let key = sig
        .recover_ecdsa(Message::from_digest(sighash))
        .map_err(|_| TxError::BadSignature("no public key recovers from it"))?;
    let digest = keccak(&[&key.serialize_uncompressed()[1..]]);
    let mut sender = [0u8; 20];
    sender.copy_from_slice(&digest[12..]);
    Ok(sender)
}

fn keccak(parts: &[&[u8]]) -> [u8; 32] {
    let mut k = Keccak::v256();
    for p in parts {
        k.update(p);
    }
    let mut out = [0u8; 32];
    k.finalize(&mut out);
    out
}

fn wrong_kind(field: &'static str, want: Kind) -> TxError {
    TxError::Field {
        field,
        problem: match want {
            Kind::List => "a string where a list belongs",
            Kind::Str => "a list where a string belongs",
        },
    }
}

/// Reads the fields of one list in order, each checked for the shape its place requires.
struct Fields<'a> {
    payload: &'a [u8],
    items: Items<'a>,
    name: &'static str,
}

impl<'a> Fields<'a> {
    fn new(list: Item<'a>, name: &'static str) -> Result<Self, TxError> {
        if list.kind != Kind::List {
            return Err(wrong_kind(name, Kind::List));
        }
        Ok(Fields {
            payload: list.payload,
            items: Items::new(list.payload),
            name,
        })
    }

    fn item(&mut self, field: &'static str) -> Result<Item<'a>, TxError> {
        self.items
            .next_item()
            .map_err(TxError::Rlp)?
            .ok_or(TxError::Field {
                field,
                problem: "missing",
            })
    }

    /// The encoded fields read so far.
    fn read_so_far(&self) -> &'a [u8] {
        &self.payload[..self.payload.len() - self.items.rest().len()]
    }

    fn end(&mut self) -> Result<(), TxError> {
        match self.items.next_item().map_err(TxError::Rlp)? {
            None => Ok(()),
            Some(_) => Err(TxError::Field {
                field: self.name,
                problem: "more fields than its type has",
            }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<&'a [u8], TxError> {
        let item = self.item(field)?;
        if item.kind != Kind::Str {
            return Err(wrong_kind(field, Kind::Str));
        }
        Ok(item.payload)
    }

    fn list(&mut self, field: &'static str) -> Result<Items<'a>, TxError> {
        let item = self.item(field)?;
        if item.kind != Kind::List {
            return Err(wrong_kind(field, Kind::List));
        }
        Ok(Items::new(item.payload))
    }

    /// An unsigned integer of at most `max` bytes, big-endian without leading zeros (zero is the
    /// empty string), as geth requires of every integer.
    fn uint(
        &mut self,
        field: &'static str,
        max: usize,
        too_big: &'static str,
    ) -> Result<&'a [u8], TxError> {
        uint(self.string(field)?, field, max, too_big)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, TxError> {
        Ok(be_u128(self.uint(field, 8, "integer over 64 bits")?) as u64)
    }

    fn u256(&mut self, field: &'static str) -> Result<(), TxError> {
        self.uint(field, 32, "integer over 256 bits").map(drop)
    }

    fn bytes(&mut self, field: &'static str) -> Result<(), TxError> {
        self.string(field).map(drop)
    }

    /// The recipient: a 20-byte address, or empty (contract creation) where `may_create`.
    fn to(&mut self, may_create: bool) -> Result<(), TxError> {
        match self.string("to")?.len() {
            20 => Ok(()),
            0 if may_create => Ok(()),
            _ => Err(TxError::Field {
                field: "to",
                problem: if may_create {
                    "neither empty nor a 20-byte address"
                } else {
                    "not a 20-byte address"
                },
            }),
        }
    }

    /// A list of strings of exactly `len` bytes each.
    fn list_of(
        &mut self,
        field: &'static str,
        len: usize,
        problem: &'static str,
    ) -> Result<(), TxError> {
        let mut items = self.list(field)?;
        while let Some(item) = items.next_item().map_err(TxError::Rlp)? {
            if item.kind != Kind::Str {
                return Err(wrong_kind(field, Kind::Str));
            }
            if item.payload.len() != len {
                return Err(TxError::Field { field, problem });
            }
        }
        Ok(())
    }

    /// `[[address, [storageKey, …]], …]`.
    fn access_list(&mut self) -> Result<(), TxError> {
        let mut entries = self.list("accessList")?;
        while let Some(entry) = entries.next_item().map_err(TxError::Rlp)? {
            let mut e = Fields::new(entry, "accessList entry")?;
            if e.string("accessList address")?.len() != 20 {
                return Err(TxError::Field {
                    field: "accessList address",
                    problem: "not a 20-byte address",
                });
            }
            e.list_of("accessList storageKeys", 32, "not 32 bytes")?;
            e.end()?;
        }
        Ok(())
    }

    /// EIP-7702: `[[chainId, address, nonce, yParity, r, s], …]`. The authorizations' own
    /// signatures are not checked: a bad one is skipped when the transaction runs, it does not
    /// make the transaction invalid.
    fn authorization_list(&mut self) -> Result<(), TxError> {
        let mut entries = self.list("authorizationList")?;
        while let Some(entry) = entries.next_item().map_err(TxError::Rlp)? {
            let mut a = Fields::new(entry, "authorization")?;
            a.u256("authorization chainId")?;
            if a.string("authorization address")?.len() != 20 {
                return Err(TxError::Field {
                    field: "authorization address",
                    problem: "not a 20-byte address",
                });
            }
            a.u64("authorization nonce")?;
            a.uint("authorization yParity", 1, "integer over 8 bits")?;
            a.u256("authorization r")?;
            a.u256("authorization s")?;
            a.end()?;
        }
        Ok(())
    }

    /// A legacy transaction's v. Up to 128 bits: enough for any 64-bit chain id under EIP-155.
    fn v(&mut self) -> Result<u128, TxError> {
        Ok(be_u128(self.uint("v", 16, "chain id over 64 bits")?))
    }

    fn y_parity(&mut self) -> Result<u8, TxError> {
        match self.uint("yParity", 1, "integer over 8 bits")? {
            [] => Ok(0),
            [1] => Ok(1),
            _ => Err(TxError::BadSignature("yParity is neither 0 nor 1")),
        }
    }

    /// r and s, left-padded to 32 bytes.
    fn r_s(&mut self) -> Result<([u8; 32], [u8; 32]), TxError> {
        let mut out = [[0u8; 32]; 2];
        for (field, word) in ["r", "s"].into_iter().zip(&mut out) {
            let b = canonical(self.string(field)?, field)?;
            if b.len() > 32 {
                return Err(TxError::BadSignature("r or s longer than 32 bytes"));
            }
            word[32 - b.len()..].copy_from_slice(b);
        }
        Ok((out[0], out[1]))
    }
}

/// `b` if it is a canonical integer: no leading zero bytes (zero is the empty string, so even a
/// lone 0x00 is refused, as geth does).
fn canonical<'a>(b: &'a [u8], field: &'static str) -> Result<&'a [u8], TxError> {
    if b.first() == Some(&0) {
        return Err(TxError::Field {
            field,
            problem: "integer with leading zero bytes",
        });
    }
    Ok(b)
}

fn uint<'a>(
    b: &'a [u8],
    field: &'static str,
    max: usize,
    too_big: &'static str,
) -> Result<&'a [u8], TxError> {
    let b = canonical(b, field)?;
    if b.len() > max {
        return Err(TxError::Field {
            field,
            problem: too_big,
        });
    }
    Ok(b)
}

/// At most 16 big-endian bytes as a number.
fn be_u128(b: &[u8]) -> u128 {
    b.iter().fold(0, |n, &d| (n << 8) | u128::from(d))
}

/// The bytes of `0x`-prefixed hex; `None` if it is not that.
pub fn unhex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.strip_prefix("0x")?.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

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
mod tests;
