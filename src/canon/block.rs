//! Blocks and logs as the chain supervisor keeps them: the few fields it reasons with (number,
//! hash, parent, timestamp, transaction hashes, a log's address and topics) read once, and the
//! node's JSON kept beside them so that what clients get is what the node sent.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::scan::go_name_eq;

/// A 32-byte hash (block or transaction hash, log topic).
pub type Hash = [u8; 32];
/// A 20-byte account address.
pub type Address = [u8; 20];

/// Why a node's block or log could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a JSON object")]
    NotObject,
    #[error("member {0} is missing or malformed")]
    Member(&'static str),
}

/// One block of the chain: its identity, and the node's header object.
pub struct Block {
    pub number: u64,
    pub hash: Hash,
    pub parent: Hash,
    /// Unix seconds.
    pub timestamp: u64,
    /// The header object as a node sends it in a `newHeads` notification (a full block's
    /// `transactions`, `uncles`, `withdrawals`, `size` and `totalDifficulty` left out).
    pub header: Box<str>,
    txs: OnceLock<Box<[Hash]>>,
    logs: OnceLock<Arc<[Log]>>,
    /// When livechain first heard of the block (head delivery time is measured from here).
    pub seen: Instant,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({} {})", self.number, hex(&self.hash[..4]))
    }
}

/// Members of a full block object that a `newHeads` header does not have.
const BODY_MEMBERS: &[&str] = &[
    "transactions",
    "uncles",
    "withdrawals",
    "size",
    "totalDifficulty",
];

impl Block {
    /// Reads a header (a `newHeads` result) or a block object (`eth_getBlockBy*`, with
    /// transaction hashes or objects; their hashes are kept).
    pub fn parse(json: &str) -> Result<Block, ParseError> {
        let members = Members::read(json)?;
        let quantity = |name: &'static str| {
            members
                .get(name)
                .and_then(|v| str_value(v))
                .and_then(parse_quantity)
                .ok_or(ParseError::Member(name))
        };
        let hash = |name: &'static str| {
            members
                .get(name)
                .and_then(|v| str_value(v))
                .and_then(parse_hash)
                .ok_or(ParseError::Member(name))
        };
        let block = Block {
            number: quantity("number")?,
            hash: hash("hash")?,
            parent: hash("parentHash")?,
            timestamp: quantity("timestamp")?,
            header: members.render(|name| !BODY_MEMBERS.contains(&name), None),
            txs: OnceLock::new(),
            logs: OnceLock::new(),
            seen: Instant::now(),
        };
        if let Some(list) = members.get("transactions") {
            let txs = tx_hashes(list).ok_or(ParseError::Member("transactions"))?;
            let _ = block.txs.set(txs);
        }
        Ok(block)
    }

    /// A block with nothing but its identity, for tests and synthetic chains.
    pub fn bare(number: u64, hash: Hash, parent: Hash, timestamp: u64) -> Block {
        let header = format!(
            r#"{{"number":"{number:#x}","hash":"0x{}","parentHash":"0x{}","timestamp":"{timestamp:#x}"}}"#,
            hex(&hash),
            hex(&parent)
        );
        Block {
            number,
            hash,
            parent,
            timestamp,
            header: header.into(),
            txs: OnceLock::new(),
            logs: OnceLock::new(),
            seen: Instant::now(),
        }
    }

    /// Its transaction hashes, once its body is known.
    pub fn txs(&self) -> Option<&[Hash]> {
        self.txs.get().map(|t| &**t)
    }

    /// Takes the transaction hashes of another reading of the same block (first one wins).
    pub fn set_txs(&self, txs: Box<[Hash]>) {
        let _ = self.txs.set(txs);
    }

    /// Its logs, once fetched.
    pub fn logs(&self) -> Option<&Arc<[Log]>> {
        self.logs.get()
    }

    pub fn set_logs(&self, logs: Arc<[Log]>) {
        let _ = self.logs.set(logs);
    }

    /// `0x`-prefixed hash.
    pub fn hash_hex(&self) -> String {
        format!("0x{}", hex(&self.hash))
    }
}

/// One log of a block, as the node sent it.
pub struct Log {
    pub address: Address,
    pub topics: Box<[Hash]>,
    pub json: Box<str>,
    /// The same object with `"removed": true`, made when a reorg first needs it.
    removed: OnceLock<Box<str>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.json)
    }
}

impl Log {
    pub fn parse(json: &str) -> Result<Log, ParseError> {
        let members = Members::read(json)?;
        let address = members
            .get("address")
            .and_then(|v| str_value(v))
            .and_then(parse_address)
            .ok_or(ParseError::Member("address"))?;
        let topics: Vec<String> = members
            .get("topics")
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .ok_or(ParseError::Member("topics"))?;
        let topics = topics
            .iter()
            .map(|t| parse_hash(t))
            .collect::<Option<Box<[Hash]>>>()
            .ok_or(ParseError::Member("topics"))?;
        Ok(Log {
            address,
            topics,
            json: json.into(),
            removed: OnceLock::new(),
        })
    }

    /// The log as sent to subscribers when its block has been replaced by a reorg.
    pub fn removed_json(&self) -> &str {
        self.removed.get_or_init(|| {
            Members::read(&self.json)
                .map(|m| m.render(|_| true, Some(("removed", "true"))))
                .unwrap_or_else(|_| self.json.clone())
        })
    }
}

/// Reads the result of `eth_getLogs`.
pub fn parse_logs(json: &str) -> Result<Vec<Log>, ParseError> {
    let list: Vec<&RawValue> = serde_json::from_str(json).map_err(|_| ParseError::NotObject)?;
    list.into_iter().map(|l| Log::parse(l.get())).collect()
}

/// A `logs` subscription's filter, read as geth reads it: `address` one address or a list,
/// `topics` up to four positions, each `null` (any), a topic, or a list of topics (any of
/// them; a `null` in the list makes the position match anything). Member names match as Go
/// matches them (`Address`, `TOPICS`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    pub addresses: Vec<Address>,
    /// Empty inner list: any topic at that position.
    pub topics: Vec<Vec<Hash>>,
}

/// geth refuses filters with more topic positions than a log can have.
const MAX_TOPICS: usize = 4;

impl LogFilter {
    /// Parses a filter object; the error is the message a client gets.
    pub fn parse(json: &str) -> Result<LogFilter, String> {
        let members = Members::read(json).map_err(|_| "filter must be an object".to_owned())?;
        let mut filter = LogFilter::default();
        for (name, value) in &members.0 {
            let value = value.get();
            if go_name_eq(name, "address") {
                filter.addresses = parse_addresses(value)?;
            } else if go_name_eq(name, "topics") {
                filter.topics = parse_topics(value)?;
            } else if go_name_eq(name, "fromblock")
                || go_name_eq(name, "toblock")
                || go_name_eq(name, "blockhash")
            {
                // Live logs only: a range or a block hash is a historical query.
                if value != "null" && value != "\"latest\"" && value != "\"pending\"" {
                    return Err(format!(
                        "{name} is not supported in a logs subscription (live logs only; use eth_getLogs)"
                    ));
                }
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, log: &Log) -> bool {
        if !self.addresses.is_empty() && !self.addresses.contains(&log.address) {
            return false;
        }
        // geth: a filter with more topic positions than the log has never matches it.
        if self.topics.len() > log.topics.len() {
            return false;
        }
        self.topics
            .iter()
            .zip(log.topics.iter())
            .all(|(want, have)| want.is_empty() || want.contains(have))
    }
}

fn parse_addresses(value: &str) -> Result<Vec<Address>, String> {
    let bad = || "invalid address in filter".to_owned();
    match serde_json::from_str::<serde_json::Value>(value).map_err(|_| bad())? {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::String(s) => Ok(vec![parse_address(&s).ok_or_else(bad)?]),
        serde_json::Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().and_then(parse_address).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

fn parse_topics(value: &str) -> Result<Vec<Vec<Hash>>, String> {
    let bad = || "invalid topic in filter".to_owned();
    let list = match serde_json::from_str::<serde_json::Value>(value).map_err(|_| bad())? {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Array(list) => list,
        _ => return Err(bad()),
    };
    if list.len() > MAX_TOPICS {
        return Err(format!("too many topic positions (at most {MAX_TOPICS})"));
    }
    list.iter()
        .map(|position| match position {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::String(s) => Ok(vec![parse_hash(s).ok_or_else(bad)?]),
            serde_json::Value::Array(any) => {
                let mut set = Vec::with_capacity(any.len());
                for t in any {
                    match t {
                        // A null among the alternatives matches anything.
                        serde_json::Value::Null => return Ok(Vec::new()),
                        serde_json::Value::String(s) => set.push(parse_hash(s).ok_or_else(bad)?),
                        _ => return Err(bad()),
                    }
                }
                Ok(set)
            }
            _ => Err(bad()),
        })
        .collect()
}

/// An object's members in order, values unparsed.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    fn read(json: &'a str) -> Result<Members<'a>, ParseError> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(24));
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let members = (&mut de)
            .deserialize_map(V)
            .map_err(|_| ParseError::NotObject)?;
        de.end().map_err(|_| ParseError::NotObject)?;
        Ok(members)
    }

    /// The last member of that exact name (a node's answer has each once).
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// The object again with the members `keep` accepts, and `set` replacing (or appended as)
    /// one member's value.
    fn render(&self, keep: impl Fn(&str) -> bool, set: Option<(&str, &str)>) -> Box<str> {
        let mut out = String::with_capacity(1024);
        out.push('{');
        let mut put = |k: &str, v: &str| {
            if out.len() > 1 {
                out.push(',');
            }
            // A key that was a JSON string re-encodes to a valid one.
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v);
        };
        let mut replaced = false;
        for (k, v) in &self.0 {
            if !keep(k) {
                continue;
            }
            match set {
                Some((name, value)) if name == k => {
                    replaced = true;
                    put(k, value);
                }
                _ => put(k, v.get()),
            }
        }
        if let (Some((name, value)), false) = (set, replaced) {
            put(name, value);
        }
        out.push('}');
        out.into_boxed_str()
    }
}

fn str_value(v: &RawValue) -> Option<&str> {
    let s = v.get();
    // Hex strings have no escapes; anything else is not a value we read.
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A `0x` hex quantity (at most 64 bits).
pub fn parse_quantity(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn parse_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi << 4 | lo) as u8;
    }
    Some(out)
}

pub fn parse_hash(s: &str) -> Option<Hash> {
    parse_fixed::<32>(s)
}

pub fn parse_address(s: &str) -> Option<Address> {
    parse_fixed::<20>(s)
}

/// Lower-case hex without a prefix.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The hashes of a block's `transactions`: hash strings, or objects with a `hash`.
fn tx_hashes(list: &RawValue) -> Option<Box<[Hash]>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tx<'a> {
        Hash(&'a str),
        Object {
            #[serde(borrow)]
            hash: &'a str,
        },
    }
    let txs: Vec<Tx> = serde_json::from_str(list.get()).ok()?;
    txs.iter()
        .map(|t| match t {
            Tx::Hash(h) | Tx::Object { hash: h } => parse_hash(h),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = r#"{"baseFeePerGas":"0x7","hash":"0x1111111111111111111111111111111111111111111111111111111111111111","number":"0x10","parentHash":"0x2222222222222222222222222222222222222222222222222222222222222222","size":"0x220","timestamp":"0x5f5e100","transactions":["0x3333333333333333333333333333333333333333333333333333333333333333"],"uncles":[],"withdrawals":[]}"#;

    #[test]
    fn a_full_block_reads_as_a_header_with_its_transaction_hashes() {
        let b = Block::parse(BLOCK).unwrap();
        assert_eq!(b.number, 16);
        assert_eq!(b.hash, [0x11; 32]);
        assert_eq!(b.parent, [0x22; 32]);
        assert_eq!(b.timestamp, 100_000_000);
        assert_eq!(b.txs().unwrap(), &[[0x33; 32]]);
        let header: serde_json::Value = serde_json::from_str(&b.header).unwrap();
        for gone in BODY_MEMBERS {
            assert!(header.get(gone).is_none(), "{gone} in {header}");
        }
        assert_eq!(header["baseFeePerGas"], "0x7");
        // Members keep the node's order.
        assert!(b.header.starts_with(r#"{"baseFeePerGas":"0x7","hash":"#));
    }

    #[test]
    fn transaction_objects_give_their_hashes_and_bad_blocks_are_refused() {
        let full = BLOCK.replace(
            r#"["0x3333333333333333333333333333333333333333333333333333333333333333"]"#,
            r#"[{"hash":"0x3333333333333333333333333333333333333333333333333333333333333333","nonce":"0x1"}]"#,
        );
        assert_eq!(Block::parse(&full).unwrap().txs().unwrap(), &[[0x33; 32]]);
        assert_eq!(
            Block::parse(&BLOCK.replace(r#""number":"0x10","#, "")).unwrap_err(),
            ParseError::Member("number")
        );
        assert_eq!(Block::parse("[1]").unwrap_err(), ParseError::NotObject);
        assert_eq!(Block::parse("null").unwrap_err(), ParseError::NotObject);
        assert!(Block::parse(&BLOCK.replace("0x10", "0xzz")).is_err());
        assert!(Block::parse(&BLOCK.replace("0x1111", "0x11")).is_err());
    }

    const LOG: &str = r#"{"address":"0x00000000000000000000000000000000000000aa","topics":["0x0101010101010101010101010101010101010101010101010101010101010101","0x0202020202020202020202020202020202020202020202020202020202020202"],"data":"0x","blockNumber":"0x10","removed":false}"#;

    #[test]
    fn a_removed_log_is_the_same_object_with_removed_true() {
        let log = Log::parse(LOG).unwrap();
        assert_eq!(log.address[19], 0xaa);
        assert_eq!(log.topics.len(), 2);
        assert_eq!(&*log.json, LOG);
        let removed: serde_json::Value = serde_json::from_str(log.removed_json()).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(LOG).unwrap();
        want["removed"] = serde_json::Value::Bool(true);
        assert_eq!(removed, want);
        let without = Log::parse(&LOG.replace(r#","removed":false"#, "")).unwrap();
        assert!(without.removed_json().ends_with(r#","removed":true}"#));
    }

    #[test]
    fn filters_match_as_geth_matches() {
        let log = Log::parse(LOG).unwrap();
        let t1 = format!("0x{}", "01".repeat(32));
        let t2 = format!("0x{}", "02".repeat(32));
        let other = format!("0x{}", "09".repeat(32));
        let aa = "0x00000000000000000000000000000000000000aa";
        let bb = "0x00000000000000000000000000000000000000bb";
        let cases = [
            ("{}".to_owned(), true),
            (format!(r#"{{"address":"{aa}"}}"#), true),
            (format!(r#"{{"ADDRESS":["{bb}","{aa}"]}}"#), true),
            (format!(r#"{{"address":"{bb}"}}"#), false),
            (format!(r#"{{"topics":["{t1}"]}}"#), true),
            (format!(r#"{{"topics":[null,"{t2}"]}}"#), true),
            (format!(r#"{{"topics":[["{other}","{t1}"]]}}"#), true),
            (format!(r#"{{"topics":[["{other}"]]}}"#), false),
            (format!(r#"{{"topics":[["{other}",null]]}}"#), true),
            (r#"{"topics":[[]]}"#.to_owned(), true),
            // More positions than the log has topics: no match, even for wildcards.
            (r#"{"topics":[null,null,null]}"#.to_owned(), false),
            (format!(r#"{{"Topics":["{t2}"]}}"#), false),
        ];
        for (json, want) in cases {
            let f = LogFilter::parse(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(f.matches(&log), want, "{json}");
        }
        for bad in [
            r#"{"address":"0x12"}"#,
            r#"{"address":7}"#,
            r#"{"topics":["0x12"]}"#,
            r#"{"topics":[null,null,null,null,null]}"#,
            r#"{"topics":"x"}"#,
            r#"{"fromBlock":"0x1"}"#,
            r#"{"blockHash":"0x1111111111111111111111111111111111111111111111111111111111111111"}"#,
            "[]",
        ] {
            assert!(LogFilter::parse(bad).is_err(), "{bad}");
        }
        assert!(LogFilter::parse(r#"{"fromBlock":"latest"}"#).is_ok());
    }
}
