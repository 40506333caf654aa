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

// Real transactions, made once with foundry's `cast mktx` 1.7.1 and anvil's first dev key
// 0xac09…ff80; each hash is what `cast decode-transaction` reports (and, but for the blob
// wrappers, `cast keccak` of the bytes).

/// anvil's first dev account, the signer of every `cast` vector.
const ANVIL_0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

/// `cast mktx --chain 31337 --nonce 7 --gas-limit 21000 --gas-price 1000000000 --legacy 0x7099…79C8`
const LEGACY_155: &str = "0xf86507843b9aca008252089470997970c51812dc3a010c7d01b50e0d17dc79c8808082f4f5a008a2e5c8eaed960075695b8eaf3a65589f20b258371343745b38ac74b7da2c58a03c97fbde5fa21941f828a95a3b11a42da4d3d24d1f05dcab0ccbc62efe017457";
const LEGACY_155_HASH: &str = "0xd95fd5670dde2ff2d6c8b1be022ae205591335d810aba5832a5302874c8b90c0";

/// `cast mktx --chain 1 --nonce 300 --gas-limit 60000 --gas-price 30000000000 --legacy
/// --value 1000000000000000000 0x7099…79C8 'transfer(address,uint256)' 0x7099…79C8 5`: v = 38.
const LEGACY_155_MAINNET: &str = "0xf8b382012c8506fc23ac0082ea609470997970c51812dc3a010c7d01b50e0d17dc79c8880de0b6b3a7640000b844a9059cbb00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8000000000000000000000000000000000000000000000000000000000000000526a0e1a0c6c0eda3ff148282d4373aac5e78ba6403e637f664aef947f377cbe1cf09a019474b70cee16711949e380f37d45856f2003393b3d7c151dedc333982c33ca9";
const LEGACY_155_MAINNET_HASH: &str =
    "0xf680c774df22a2ddd11a6f2d9d3aaeed1d80fa9734b89f9877c0e0db2d4bfab1";

/// `cast mktx --chain 31337 --nonce 9 --gas-limit 50000 --gas-price 1000000000 --legacy
/// --access-list '[{"address":"0x5FbD…0aa3","storageKeys":["0x00…01"]}]' 0x7099…79C8`
const EIP2930: &str = "0x01f8a0827a6909843b9aca0082c3509470997970c51812dc3a010c7d01b50e0d17dc79c88080f838f7945fbdb2315678afecb367f032d93f642f64180aa3e1a0000000000000000000000000000000000000000000000000000000000000000101a078cf7c6a4cc2a63294841a1c85bca43cbbee4bd4beff2759ee6800bface6969ea026ffdae0a72288b506d876bb4f47feaaf30d27dac166cfc1122a9768a323be42";
const EIP2930_HASH: &str = "0xf12c664c11529fd36d7974fb5322dabab0b4968f5949a2a5c3ecf3fa332733cc";

/// `cast mktx --chain 31337 --nonce 8 --gas-limit 50000 --gas-price 2000000000
/// --priority-gas-price 1000000000 --value 12345 0x7099…79C8`
const EIP1559: &str = "0x02f86e827a6908843b9aca00847735940082c3509470997970c51812dc3a010c7d01b50e0d17dc79c882303980c080a054b8d09d85039fee2717b67b2edbe142892f7845f736685617eb1b5da4d73469a042fe25779e12314d2d9055589cc40719e8d51c567845a14ef0052700b9fb2f34";
const EIP1559_HASH: &str = "0x401e098a982c9b621665e09d8bcbd14c2cc6ebf79c31608c49acc7fc27411657";

/// `cast mktx --chain 31337 --nonce 10 --gas-limit 100000 --gas-price 2000000000
/// --priority-gas-price 1000000000 --auth 0x5FbD…0aa3 0x7099…79C8` (cast signs the authorization
/// with the same key).
const EIP7702: &str = "0x04f8cd827a690a843b9aca008477359400830186a09470997970c51812dc3a010c7d01b50e0d17dc79c88080c0f85ef85c827a69945fbdb2315678afecb367f032d93f642f64180aa30b01a0eb23bd046416ea925d0e0c51878ce32df6c490d1206b2c906359ab21a0a35991a0014f3f84892a429296238cd58a26d635f1971c90de3fb94f2f5d499e4251432780a09cd26243843c1028a77e588e0673d4dfda2821face307589a6b54dba7f000cd8a0362e798a1f2113a2d1aeae45d7b81832a3e5b2c1d18682f8674c9de618ecd698";
const EIP7702_HASH: &str = "0xe26bb568f98b05404caeb3bf6144125fe283d5cb77b236315cb6f96484070b0f";

/// `cast mktx --chain 31337 --nonce 11 --gas-limit 100000 --gas-price 2000000000
/// --priority-gas-price 1000000000 --blob-gas-price 3000000000 --blob --eip4844 --path blob.txt
/// 0x7099…79C8` (blob.txt: "livechain blob vector"): the network form `[tx, blobs, commitments,
/// proofs]`. See `blob_vector` for the file's layout.
const EIP4844_WRAPPER: &str = include_str!("testdata/blob_4844.txt");
const EIP4844_HASH: &str = "0x457cca068cc091046a24f4fb5b9713b0ccb4424227ec95f3925f614e74a9d353";
/// `cast keccak` of all its bytes: proves the file rebuilds what cast printed.
const EIP4844_WRAPPER_KECCAK: &str =
    "0xd8488180bab75f1083b2f78e0e101ed4bf6d0521f319a1b664ae396ef2457782";

/// The same with `--nonce 12` and without `--eip4844`: the EIP-7594 form `[tx, 1, blobs,
/// commitments, cell_proofs]`.
const EIP7594_WRAPPER: &str = include_str!("testdata/blob_7594.txt");
const EIP7594_HASH: &str = "0xb820acbbefb5e05a8282e88db84e347eef862843e419e8877c99e738f06cd6e8";
const EIP7594_WRAPPER_KECCAK: &str =
    "0xbfe0fe1dda2907239b942c5c4addfd80175ba09d2924ae83bbd7f091973c978e";

/// Pre-EIP-155 (v = 27, no chain id): the deterministic-deployment proxy's Nick's-method
/// transaction, signed by no one's key (r = s = 0x22…22), so its sender 0x3fab…5362 is whoever
/// recovery says; it is the same on every chain. Hash and sender checked with
/// `cast decode-transaction`.
const NICK: &str = "0xf8a58085174876e800830186a08080b853604580600e600039806000f350fe7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f58015156039578182fd5b8082525050506014600cf31ba02222222222222222222222222222222222222222222222222222222222222222a02222222222222222222222222222222222222222222222222222222222222222";
const NICK_SENDER: &str = "0x3fab184622dc19b6109349b94811493bf2a45362";
const NICK_HASH: &str = "0xeddf9e61fb9d8f5111840daef55e5fde0041f5702856532cdbb5a02998033d26";

fn bytes(hex: &str) -> Vec<u8> {
    unhex(hex).expect("test hex")
}

fn h32(hex: &str) -> [u8; 32] {
    bytes(hex).try_into().expect("32 bytes")
}

fn addr(hex: &str) -> [u8; 20] {
    bytes(hex).try_into().expect("20 bytes")
}

/// A blob transaction's network form from its test file. A blob is 128 KiB, nearly all zeros
/// here, so the file holds three lines: the hex up to the zeros, how many zero bytes follow, and
/// the hex after them.
fn blob_vector(file: &str) -> Vec<u8> {
    let mut lines = file.lines();
    let mut raw = bytes(lines.next().expect("head"));
    let zeros: usize = lines.next().expect("zeros").parse().expect("count");
    raw.resize(raw.len() + zeros, 0);
    raw.extend(bytes(&format!("0x{}", lines.next().expect("tail"))));
    raw
}

fn check(raw: &[u8], kind: u8, chain_id: Option<u64>, nonce: u64, sender: &str, hash: &str) {
    let tx = decode_raw_tx(raw).expect("decodes");
    assert_eq!(
        tx,
        SignedTx {
            kind,
            chain_id,
            nonce,
            sender: addr(sender),
            hash: h32(hash),
        }
    );
}

#[test]
fn decodes_real_transactions_of_every_type() {
    let cases = [
        (LEGACY_155, 0, Some(31337), 7, ANVIL_0, LEGACY_155_HASH),
        (
            LEGACY_155_MAINNET,
            0,
            Some(1),
            300,
            ANVIL_0,
            LEGACY_155_MAINNET_HASH,
        ),
        (NICK, 0, None, 0, NICK_SENDER, NICK_HASH),
        (EIP2930, 1, Some(31337), 9, ANVIL_0, EIP2930_HASH),
        (EIP1559, 2, Some(31337), 8, ANVIL_0, EIP1559_HASH),
        (EIP7702, 4, Some(31337), 10, ANVIL_0, EIP7702_HASH),
    ];
    for (hex, kind, chain_id, nonce, sender, hash) in cases {
        check(&bytes(hex), kind, chain_id, nonce, sender, hash);
        assert_eq!(decode_raw_tx_hex(hex), decode_raw_tx(&bytes(hex)));
        // Outside a blob wrapper the hash is that of the bytes, as `raw_tx_hash` has it.
        assert_eq!(raw_tx_hash(hex), Some(h32(hash)));
    }
    // Upper-case digits are hex too.
    let upper = format!("0x{}", EIP1559[2..].to_uppercase());
    assert_eq!(decode_raw_tx_hex(&upper), decode_raw_tx_hex(EIP1559));
}

#[test]
fn decodes_blob_transactions_with_and_without_their_blobs() {
    for (file, nonce, hash, whole) in [
        (EIP4844_WRAPPER, 11, EIP4844_HASH, EIP4844_WRAPPER_KECCAK),
        (EIP7594_WRAPPER, 12, EIP7594_HASH, EIP7594_WRAPPER_KECCAK),
    ] {
        let raw = blob_vector(file);
        assert_eq!(keccak(&[&raw]), h32(whole), "the file is what cast printed");
        check(&raw, 3, Some(31337), nonce, ANVIL_0, hash);
        // The canonical form, `0x03 || rlp(tx)`, is the wrapper's first item: same transaction,
        // and its hash is that of its bytes.
        let outer = rlp::single(&raw[1..]).unwrap();
        let (tx, _) = rlp::next(outer.payload).unwrap();
        let mut canonical = vec![3u8];
        canonical.extend_from_slice(tx.raw);
        check(&canonical, 3, Some(31337), nonce, ANVIL_0, hash);
        assert_eq!(keccak(&[&canonical]), h32(hash));
        // How many blobs there are is the pool's business: an empty sidecar decodes too.
        for version in [&[][..], &[0x01]] {
            let empty = [
                &[3u8][..],
                &list(&[
                    tx.raw.to_vec(),
                    version.to_vec(),
                    vec![0xc0],
                    vec![0xc0],
                    vec![0xc0],
                ]),
            ]
            .concat();
            check(&empty, 3, Some(31337), nonce, ANVIL_0, hash);
        }
    }
}

// ---- Refusals. The helpers below rebuild a transaction with one field changed; the signature
// no longer matches, but each refusal comes from the structure, before recovery.

/// The encoded items of a list.
fn items(list: &[u8]) -> Vec<Vec<u8>> {
    let list = rlp::single(list).unwrap();
    let mut items = rlp::Items::new(list.payload);
    let mut out = Vec::new();
    while let Some(item) = items.next_item().unwrap() {
        out.push(item.raw.to_vec());
    }
    out
}

/// The encoded fields of a transaction, typed or legacy.
fn fields_of(hex: &str) -> Vec<Vec<u8>> {
    let raw = bytes(hex);
    items(if raw[0] < 0x80 { &raw[1..] } else { &raw })
}

fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let payload = items.concat();
    let mut header = [0u8; 9];
    let n = rlp::list_header(payload.len(), &mut header);
    [&header[..n], &payload[..]].concat()
}

/// An RLP string of the bytes `b`, as it would be encoded by anyone, canonical or not.
fn string(b: &[u8]) -> Vec<u8> {
    assert!(b.len() < 56);
    [&[0x80 + b.len() as u8][..], b].concat()
}

/// `hex` (typed or legacy) with field `i` replaced by `item` (or removed if `None`), or with
/// `item` appended if `i` is past the end.
fn with_field(hex: &str, i: usize, item: Option<Vec<u8>>) -> Vec<u8> {
    let raw = bytes(hex);
    let prefix = if raw[0] < 0x80 { &raw[..1] } else { &raw[..0] };
    let mut fields = fields_of(hex);
    match item {
        Some(item) if i >= fields.len() => fields.push(item),
        Some(item) => fields[i] = item,
        None => {
            fields.remove(i);
        }
    }
    [prefix, &list(&fields)[..]].concat()
}

fn field_error(field: &'static str, problem: &'static str) -> Result<SignedTx, TxError> {
    Err(TxError::Field { field, problem })
}

#[test]
fn refuses_empty_and_non_hex_input() {
    assert_eq!(decode_raw_tx(&[]), Err(TxError::Empty));
    assert_eq!(decode_raw_tx_hex("0x"), Err(TxError::Empty));
    for bad in ["", "0x0", "0xzz", "02f8", "0X02", " 0x02"] {
        assert_eq!(decode_raw_tx_hex(bad), Err(TxError::NotHex), "{bad:?}");
    }
}

#[test]
fn refuses_unknown_types() {
    for t in (0x05..=0x7f).chain([0x00]) {
        let mut raw = bytes(EIP1559);
        raw[0] = t;
        assert_eq!(decode_raw_tx(&raw), Err(TxError::UnknownType(t)));
    }
    assert_eq!(
        TxError::UnknownType(0x7e).to_string(),
        "unknown transaction type 0x7e"
    );
}

#[test]
fn refuses_every_truncation_and_trailing_bytes() {
    for hex in [LEGACY_155, NICK, EIP2930, EIP1559, EIP7702] {
        let raw = bytes(hex);
        for n in 0..raw.len() {
            assert!(decode_raw_tx(&raw[..n]).is_err(), "{hex} cut at {n}");
        }
        for extra in [&[0x00][..], &[0x80], &[0xc0], &[0x01, 0x02]] {
            let long = [&raw[..], extra].concat();
            assert_eq!(
                decode_raw_tx(&long),
                Err(TxError::Rlp("trailing bytes after the transaction")),
                "{hex} + {extra:?}"
            );
        }
    }
    let wrapper = blob_vector(EIP4844_WRAPPER);
    for n in [0, 1, 5, 300, wrapper.len() / 2, wrapper.len() - 1] {
        assert!(decode_raw_tx(&wrapper[..n]).is_err(), "cut at {n}");
    }
}

#[test]
fn refuses_non_canonical_encodings() {
    // EIP-1559 nonce (field 1) is 8: as 0x81 0x08, as 0x82 0x00 0x08, and zero as 0x00.
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 1, Some(vec![0x81, 0x08]))),
        Err(TxError::Rlp(
            "single byte below 0x80 wrapped in a string header"
        ))
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 1, Some(string(&[0, 8])))),
        field_error("nonce", "integer with leading zero bytes")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 1, Some(vec![0x00]))),
        field_error("nonce", "integer with leading zero bytes")
    );
    // A leading zero in r or value, too.
    assert_eq!(
        decode_raw_tx(&with_field(LEGACY_155, 7, Some(string(&[0, 1, 2])))),
        field_error("r", "integer with leading zero bytes")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 6, Some(string(&[0, 1])))),
        field_error("value", "integer with leading zero bytes")
    );
    // A list header in long form for a short list.
    assert_eq!(
        decode_raw_tx(&[&[0x02, 0xf8, 0x10][..], &[0x80; 0x10]].concat()),
        Err(TxError::Rlp("long length header for a length under 56"))
    );
}

#[test]
fn refuses_integers_too_large_for_their_field() {
    let nine = string(&[1; 9]);
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 1, Some(nine.clone()))),
        field_error("nonce", "integer over 64 bits")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 0, Some(nine.clone()))),
        field_error("chainId", "integer over 64 bits")
    );
    assert_eq!(
        decode_raw_tx(&with_field(LEGACY_155, 0, Some(nine))),
        field_error("nonce", "integer over 64 bits")
    );
    let mut v33 = vec![0xa1];
    v33.extend([1; 33]);
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 6, Some(v33.clone()))),
        field_error("value", "integer over 256 bits")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 11, Some(v33))),
        Err(TxError::BadSignature("r or s longer than 32 bytes"))
    );
    // A legacy v whose EIP-155 chain id needs more than 64 bits: (2^64) * 2 + 35.
    let v = ((1u128 << 64) * 2 + 35).to_be_bytes();
    let v = &v[v.iter().take_while(|&&d| d == 0).count()..];
    assert_eq!(
        decode_raw_tx(&with_field(LEGACY_155, 6, Some(string(v)))),
        field_error("v", "chain id over 64 bits")
    );
}

#[test]
fn refuses_items_of_the_wrong_kind_or_size() {
    // Legacy: a string where the transaction list belongs.
    assert_eq!(
        decode_raw_tx(&string(b"abc")),
        field_error("transaction", "a string where a list belongs")
    );
    assert_eq!(
        decode_raw_tx(&[0x02, 0x83, 1, 2, 3]),
        field_error("transaction", "a string where a list belongs")
    );
    // A list for the nonce, the data, r; a string for the access list.
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 1, Some(vec![0xc0]))),
        field_error("nonce", "a list where a string belongs")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP2930, 6, Some(vec![0xc1, 0x01]))),
        field_error("data", "a list where a string belongs")
    );
    assert_eq!(
        decode_raw_tx(&with_field(LEGACY_155, 7, Some(vec![0xc0]))),
        field_error("r", "a list where a string belongs")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 8, Some(vec![0x80]))),
        field_error("accessList", "a string where a list belongs")
    );
    // Access list entries: a string, a short address, a short storage key, an extra field.
    let addr20 = string(&[0x11; 20]);
    let key = [&[0xa0][..], &[0x22; 32]].concat();
    for (entry, err) in [
        (
            vec![0x80],
            field_error("accessList entry", "a string where a list belongs"),
        ),
        (
            list(&[string(&[0x11; 19]), list(&[])]),
            field_error("accessList address", "not a 20-byte address"),
        ),
        (
            list(&[addr20.clone(), list(&[string(&[0x22; 31])])]),
            field_error("accessList storageKeys", "not 32 bytes"),
        ),
        (
            list(&[addr20.clone(), list(std::slice::from_ref(&key)), vec![0x80]]),
            field_error("accessList entry", "more fields than its type has"),
        ),
        (
            list(std::slice::from_ref(&addr20)),
            field_error("accessList storageKeys", "missing"),
        ),
    ] {
        assert_eq!(
            decode_raw_tx(&with_field(EIP2930, 7, Some(list(&[entry])))),
            err
        );
    }
    // A well-formed entry decodes (to another sender: the signed payload changed).
    let entry = list(&[addr20, list(&[key])]);
    let tx = decode_raw_tx(&with_field(EIP2930, 7, Some(list(&[entry])))).unwrap();
    assert_ne!(tx.sender, addr(ANVIL_0));
    // `to`: 19 bytes anywhere; empty (a creation) is fine for 1559 but not for 7702.
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 5, Some(string(&[0x11; 19])))),
        field_error("to", "neither empty nor a 20-byte address")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP7702, 5, Some(vec![0x80]))),
        field_error("to", "not a 20-byte address")
    );
    let creation = decode_raw_tx(&with_field(EIP1559, 5, Some(vec![0x80]))).unwrap();
    assert_ne!(creation.sender, addr(ANVIL_0));
    // An authorization with a list for its address.
    let auth = list(&[
        vec![0x01],
        vec![0xc0],
        vec![0x80],
        vec![0x80],
        vec![0x01],
        vec![0x01],
    ]);
    assert_eq!(
        decode_raw_tx(&with_field(EIP7702, 9, Some(list(&[auth])))),
        field_error("authorization address", "a list where a string belongs")
    );
    // Missing and extra fields.
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 11, None)),
        field_error("s", "missing")
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 12, Some(vec![0x80]))),
        field_error("transaction", "more fields than its type has")
    );
    assert_eq!(
        decode_raw_tx(&with_field(NICK, 8, None)),
        field_error("s", "missing")
    );
}

#[test]
fn refuses_bad_blob_wrappers() {
    let raw = blob_vector(EIP4844_WRAPPER);
    let outer = items(&raw[1..]);
    let rebuild = |fields: &[Vec<u8>]| [&[3u8][..], &list(fields)].concat();
    // A version other than 1 before the blobs.
    let mut fields = outer.clone();
    fields.insert(1, vec![0x02]);
    assert_eq!(
        decode_raw_tx(&rebuild(&fields)),
        field_error(
            "wrapper version",
            "unknown version (1, cell proofs, is the only one)"
        )
    );
    // A short commitment, a missing proofs list, an extra item.
    let mut fields = outer.clone();
    fields[2] = list(&[string(&[0x33; 47])]);
    assert_eq!(
        decode_raw_tx(&rebuild(&fields)),
        field_error("commitments", "not 48 bytes")
    );
    assert_eq!(
        decode_raw_tx(&rebuild(&outer[..3])),
        field_error("proofs", "missing")
    );
    let mut fields = outer.clone();
    fields.push(list(&[]));
    assert_eq!(
        decode_raw_tx(&rebuild(&fields)),
        field_error("blob transaction wrapper", "more fields than its type has")
    );
    // A short blob.
    let mut fields = outer.clone();
    fields[1] = list(&[string(&[0; 3])]);
    assert_eq!(
        decode_raw_tx(&rebuild(&fields)),
        field_error("blobs", "not 131072 bytes")
    );
    // Only type 3 has a wrapper: the same shape under type 2 has a list for its chain id.
    let mut typed2 = raw.clone();
    typed2[0] = 2;
    assert_eq!(
        decode_raw_tx(&typed2),
        field_error("chainId", "a list where a string belongs")
    );
    // The canonical form of a blob transaction needs an address in `to`.
    let (tx, _) = rlp::next(rlp::single(&raw[1..]).unwrap().payload).unwrap();
    let canonical = to_hex(&[&[3u8][..], tx.raw].concat());
    assert_eq!(
        decode_raw_tx(&with_field(&canonical, 5, Some(vec![0x80]))),
        field_error("to", "not a 20-byte address")
    );
}

#[test]
fn refuses_bad_signatures() {
    // yParity 2, and 0x00 for 0.
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 9, Some(vec![0x02]))),
        Err(TxError::BadSignature("yParity is neither 0 nor 1"))
    );
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 9, Some(vec![0x00]))),
        field_error("yParity", "integer with leading zero bytes")
    );
    // Legacy v that is neither 27/28 nor EIP-155.
    for v in [0u8, 1, 26, 29, 34] {
        let enc = if v == 0 { vec![0x80] } else { vec![v] };
        assert_eq!(
            decode_raw_tx(&with_field(NICK, 6, Some(enc))),
            Err(TxError::BadSignature(
                "legacy v is neither 27, 28 nor 35 and above"
            )),
            "v = {v}"
        );
    }
    // r or s zero, r at the curve order.
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 10, Some(vec![0x80]))),
        Err(TxError::BadSignature("r or s is zero"))
    );
    assert_eq!(
        decode_raw_tx(&with_field(LEGACY_155, 8, Some(vec![0x80]))),
        Err(TxError::BadSignature("r or s is zero"))
    );
    let n = [&[0xa0][..], &SECP256K1_N].concat();
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 10, Some(n))),
        Err(TxError::BadSignature("r is not below the curve order"))
    );
    // The same signature with s replaced by n - s (and the parity flipped) is a valid ECDSA
    // signature by the same key; EIP-2 refuses it so a transaction has one hash.
    for (hex, parity_at, s_at) in [(EIP1559, 9, 11), (LEGACY_155, 6, 8)] {
        let fields = fields_of(hex);
        let flipped = match rlp::single(&fields[parity_at]).unwrap().payload {
            [] => vec![0x01],
            [1] => vec![0x80],
            // An EIP-155 v: its low bit is the parity.
            v => {
                let mut v = v.to_vec();
                *v.last_mut().unwrap() ^= 1;
                string(&v)
            }
        };
        let s = rlp::single(&fields[s_at]).unwrap().payload;
        let mut padded = [0u8; 32];
        padded[32 - s.len()..].copy_from_slice(s);
        let high = [&[0xa0][..], &sub(&SECP256K1_N, &padded)].concat();
        let raw = with_field(hex, parity_at, Some(flipped));
        let raw = with_field(&to_hex(&raw), s_at, Some(high));
        assert_eq!(
            decode_raw_tx(&raw),
            Err(TxError::BadSignature(
                "s is above half the curve order (EIP-2)"
            ))
        );
    }
    // r is not the x of any point: no key recovers (x = 5: 5^3 + 7 = 132 is not a square mod p).
    let r5 = vec![0x05];
    assert_eq!(
        decode_raw_tx(&with_field(EIP1559, 10, Some(r5))),
        Err(TxError::BadSignature("no public key recovers from it"))
    );
    // Another valid r gives another sender, not an error: recovery depends on every field.
    let tx = decode_raw_tx(&with_field(EIP1559, 6, Some(vec![0x01]))).unwrap();
    assert_ne!(tx.sender, addr(ANVIL_0));
}

/// `a - b` for 32-byte big-endian numbers, `a >= b`.
fn sub(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    out
}

fn to_hex(raw: &[u8]) -> String {
    format!(
        "0x{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn errors_read_clearly() {
    assert_eq!(
        field_error("nonce", "integer over 64 bits")
            .unwrap_err()
            .to_string(),
        "invalid transaction field nonce: integer over 64 bits"
    );
    assert_eq!(
        TxError::BadSignature("r or s is zero").to_string(),
        "invalid signature: r or s is zero"
    );
    assert_eq!(
        TxError::Rlp("trailing bytes after the transaction").to_string(),
        "invalid RLP: trailing bytes after the transaction"
    );
}

#[test]
fn hex_digits_decode() {
    assert_eq!(unhex("0x00ff10"), Some(vec![0, 255, 16]));
    assert_eq!(unhex("0x0"), None);
    assert_eq!(unhex("0xzz"), None);
    assert_eq!(unhex("0x"), Some(vec![]));
    assert_eq!(unhex("00ff"), None);
}
