//! Parsing a JSON-RPC 2.0 request body (single call or batch) without copying it.
//!
//! Every body is parsed before an upstream is chosen: the result records *where* each id,
//! method and params sit in the body, so the exact bytes received can be forwarded and ids
//! echoed verbatim in any error we answer ourselves.
//!
//! What is forwarded is what the node will run, so a request is only taken when every node
//! reads it the same way we do. A member named `jsonrpc`, `id`, `method` or `params` in
//! another case (`METHOD`, `Params`, `ſ` for `s`: Go's `encoding/json`, which geth and Erigon
//! use, binds those to the same field, the last one winning) or given twice is refused with
//! -32600, never passed on: `{"method":"eth_blockNumber","METHOD":"admin_addPeer"}` would get
//! past the deny list as `eth_blockNumber` and run on geth as `admin_addPeer`. Nesting is
//! bounded (`server.max_json_depth`).

use std::borrow::Cow;
use std::ops::Range;

use super::error::RpcError;
use super::scan;

/// A parsed request body. Ranges index into the body it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Single(Call),
    /// Never empty: an empty batch is an invalid request.
    Batch(Vec<Item>),
}

/// One element of a batch: a valid call, or what we answer for an invalid one.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Call(Call),
    Invalid(Invalid),
}

/// An element that is not a valid JSON-RPC 2.0 request: answered by us, never forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The element's raw id, when it had a usable one (the answer then carries it).
    pub id: Option<Range<usize>>,
    pub error: RpcError,
}

/// A valid request object.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The whole object, as received.
    pub span: Range<usize>,
    /// The raw id (number, string or null); `None` for a notification.
    pub id: Option<Range<usize>>,
    method: Method,
    /// The raw params (array or object), if present.
    pub params: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Method {
    /// The method string's content between its quotes (no escapes in it).
    Span(Range<usize>),
    /// A method written with JSON escapes, decoded.
    Decoded(Box<str>),
}

impl Call {
    /// The method name.
    pub fn method<'b>(&'b self, body: &'b [u8]) -> &'b str {
        match &self.method {
            // The span was checked to be valid UTF-8 without escapes when parsed.
            Method::Span(r) => std::str::from_utf8(&body[r.clone()]).unwrap_or_default(),
            Method::Decoded(s) => s,
        }
    }

    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }
}

impl Request {
    /// The number of calls that expect an answer (valid calls with an id, and invalid elements).
    pub fn expected_answers(&self) -> usize {
        match self {
            Request::Single(c) => usize::from(!c.is_notification()),
            Request::Batch(items) => items
                .iter()
                .filter(|i| match i {
                    Item::Call(c) => !c.is_notification(),
                    Item::Invalid(_) => true,
                })
                .count(),
        }
    }
}

/// Why a body could not be parsed at all; answered with a single error object.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Not JSON (-32700).
    Parse(String),
    /// JSON, but not a request or batch (-32600); carries the id when one could be read.
    Invalid(Invalid),
    /// More calls in a batch than allowed (-32600).
    BatchTooLarge { len: usize, max: usize },
    /// Nested deeper than allowed (-32600).
    TooDeep { max: usize },
}

/// Bounds on what a body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most calls in a batch.
    pub max_batch: usize,
    /// Deepest nesting of arrays and objects (the body's own brackets count: a call is 1 deep).
    pub max_depth: usize,
}

impl Bounds {
    /// `server.max_json_depth`'s default.
    pub const DEFAULT_DEPTH: usize = 128;

    pub fn new(max_batch: usize) -> Bounds {
        Bounds {
            max_batch,
            max_depth: Bounds::DEFAULT_DEPTH,
        }
    }
}

/// The raw text of the members of a request object that matter, borrowed from the body.
struct Fields<'a> {
    jsonrpc: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    method: Option<&'a [u8]>,
    params: Option<&'a [u8]>,
    /// Why the object must be refused whatever its members say: a name given twice or in
    /// another spelling, and whether the id is one of them (it is then not echoed).
    ambiguous: Option<(String, bool)>,
}

/// Parses `body` into a [`Request`] within `bounds`.
pub fn parse(body: &[u8], bounds: Bounds) -> Result<Request, BodyError> {
    match scanned(body, bounds) {
        Some(parsed) => parsed,
        None => Err(not_a_request(body)),
    }
}

/// The members of a request object that matter.
const CALL_KEYS: [&str; 4] = ["jsonrpc", "id", "method", "params"];
const ID: usize = 1;

/// The one-pass road ([`scan`]): `None` when the body is not JSON, or not a request or batch
/// at all, and serde_json must say what it is.
fn scanned(body: &[u8], bounds: Bounds) -> Option<Result<Request, BodyError>> {
    let fields = |o: &scan::Object<4>| {
        let [jsonrpc, id, method, params] = o.fields.clone().map(|r| r.map(|r| &body[r]));
        Fields {
            jsonrpc,
            id,
            method,
            params,
            ambiguous: ambiguity(body, o),
        }
    };
    match scan::document(body, CALL_KEYS, bounds.max_depth) {
        Ok(scan::Document::Object(o)) => Some(
            check_call(body, fields(&o), o.span.clone())
                .map(Request::Single)
                .map_err(BodyError::Invalid),
        ),
        Ok(scan::Document::Array(elements)) => {
            if let Some(e) = batch_size_error(elements.len(), bounds.max_batch) {
                return Some(Err(e));
            }
            let items = elements
                .iter()
                .map(|el| match el {
                    scan::Element::Object(o) => check_call(body, fields(o), o.span.clone())
                        .map_or_else(Item::Invalid, Item::Call),
                    scan::Element::Other(_) => Item::Invalid(Invalid {
                        id: None,
                        error: RpcError::invalid_request(NOT_AN_OBJECT),
                    }),
                })
                .collect();
            Some(Ok(Request::Batch(items)))
        }
        Ok(scan::Document::Scalar) | Err(scan::Refused::NotJson) => None,
        Err(scan::Refused::TooDeep) => Some(Err(BodyError::TooDeep {
            max: bounds.max_depth,
        })),
    }
}

/// Why a request object is ambiguous (a member that matters given twice, or in a spelling
/// some node reads as it), and whether its id is part of it.
fn ambiguity(body: &[u8], o: &scan::Object<4>) -> Option<(String, bool)> {
    if o.is_plain() {
        return None;
    }
    if o.bad_name() {
        return Some((
            "a member name is not valid Unicode (a lone surrogate escape)".into(),
            true,
        ));
    }
    let id_too = o.repeated(ID) || o.variant(ID).is_some();
    let (k, variant) = (0..CALL_KEYS.len()).find_map(|k| {
        if let Some(v) = o.variant(k) {
            Some((k, Some(v)))
        } else {
            o.repeated(k).then_some((k, None))
        }
    })?;
    let name = CALL_KEYS[k];
    let msg = match variant {
        Some(v) => {
            let key = String::from_utf8_lossy(&body[v.key.clone()]);
            format!(
                "member \"{}\" is \"{name}\" spelled another way, which some nodes read as \"{name}\"",
                super::error::quote(&key)
            )
        }
        None => format!("member \"{name}\" appears more than once"),
    };
    Some((msg, id_too))
}

const NOT_AN_OBJECT: &str = "expected a request object";

fn batch_size_error(len: usize, max_batch: usize) -> Option<BodyError> {
    if len == 0 {
        return Some(BodyError::Invalid(Invalid {
            id: None,
            error: RpcError::invalid_request("empty batch"),
        }));
    }
    (len > max_batch).then_some(BodyError::BatchTooLarge {
        len,
        max: max_batch,
    })
}

/// What is wrong with a body the scanner did not take: it is not JSON (serde_json's message
/// says where), or JSON that is neither an object nor an array. serde_json never decides what
/// a request means: a second reading of the same bytes is what the scanner exists to avoid.
fn not_a_request(body: &[u8]) -> BodyError {
    if body.iter().all(u8::is_ascii_whitespace) {
        return BodyError::Parse("empty request body".into());
    }
    // serde_json does not check the UTF-8 of what it skips.
    if let Err(e) = std::str::from_utf8(body) {
        return BodyError::Parse(format!("invalid UTF-8 at byte {}", e.valid_up_to()));
    }
    // serde_json skips values without recursing, whatever their depth.
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => BodyError::Parse(e.to_string()),
        Ok(_) => BodyError::Invalid(Invalid {
            id: None,
            error: RpcError::invalid_request("expected a request object or a batch array"),
        }),
    }
}

/// Checks a request object's members, returning the call or the error to answer.
fn check_call(body: &[u8], raw: Fields<'_>, span: Range<usize>) -> Result<Call, Invalid> {
    if let Some((msg, id_too)) = &raw.ambiguous {
        // An id given twice, or spelled twice, is not one to echo.
        let id = raw
            .id
            .filter(|_| !id_too)
            .filter(|id| matches!(id.first(), Some(b'"' | b'-' | b'0'..=b'9' | b'n')))
            .map(|id| offset_of(body, id));
        return Err(Invalid {
            id,
            error: RpcError::invalid_request(msg),
        });
    }
    let id = match raw.id {
        None => None,
        Some(id) => match id.first() {
            Some(b'"' | b'-' | b'0'..=b'9' | b'n') => Some(offset_of(body, id)),
            _ => {
                return Err(Invalid {
                    id: None,
                    error: RpcError::invalid_request("id must be a string, a number or null"),
                })
            }
        },
    };
    let invalid = |msg: &str| Invalid {
        id: id.clone(),
        error: RpcError::invalid_request(msg),
    };
    if raw.jsonrpc != Some(b"\"2.0\"") {
        return Err(invalid(r#"jsonrpc must be "2.0""#));
    }
    let method = match raw.method {
        None => return Err(invalid("missing method")),
        Some(m) => method_of(body, m).ok_or_else(|| invalid("method must be a string"))?,
    };
    if matches!(&method, Method::Span(r) if r.is_empty())
        || matches!(&method, Method::Decoded(s) if s.is_empty())
    {
        return Err(invalid("method must not be empty"));
    }
    let params = match raw.params {
        None => None,
        Some(p) => match p.first() {
            Some(b'[' | b'{') => Some(offset_of(body, p)),
            _ => return Err(invalid("params must be an array or an object")),
        },
    };
    Ok(Call {
        span,
        id,
        method,
        params,
    })
}

fn method_of(body: &[u8], text: &[u8]) -> Option<Method> {
    if text.first() != Some(&b'"') {
        return None;
    }
    if !text.contains(&b'\\') {
        let r = offset_of(body, text);
        return Some(Method::Span(r.start + 1..r.end - 1));
    }
    let decoded: Cow<'_, str> = serde_json::from_slice(text).ok()?;
    Some(Method::Decoded(decoded.into()))
}

/// Where `part`, a slice borrowed from `body`, sits in it.
fn offset_of(body: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - body.as_ptr() as usize;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{code, reference};

    fn single(body: &str) -> Call {
        match parse(body.as_bytes(), Bounds::new(100)) {
            Ok(Request::Single(c)) => c,
            other => panic!("expected a single call, got {other:?}"),
        }
    }

    fn slice(body: &str, r: &Range<usize>) -> String {
        body[r.clone()].to_owned()
    }

    #[test]
    fn single_call_keeps_raw_id_method_and_params() {
        let body =
            r#" {"jsonrpc":"2.0","id":1.50,"method":"eth_getBalance","params":["0xab","latest"]} "#;
        let c = single(body);
        assert_eq!(slice(body, c.id.as_ref().unwrap()), "1.50");
        assert_eq!(c.method(body.as_bytes()), "eth_getBalance");
        assert_eq!(
            slice(body, c.params.as_ref().unwrap()),
            r#"["0xab","latest"]"#
        );
        assert_eq!(slice(body, &c.span), body.trim());
    }

    #[test]
    fn ids_of_every_kind_are_kept_verbatim() {
        for id in [r#""abc""#, "-7", "1e3", "null", r#""\u0041""#] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            let c = single(&body);
            assert_eq!(slice(&body, c.id.as_ref().unwrap()), id);
        }
    }

    #[test]
    fn missing_id_is_a_notification_but_null_id_is_not() {
        assert!(single(r#"{"jsonrpc":"2.0","method":"m"}"#).is_notification());
        assert!(!single(r#"{"jsonrpc":"2.0","method":"m","id":null}"#).is_notification());
    }

    #[test]
    fn escaped_method_is_decoded() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_\u0063hainId"}"#;
        assert_eq!(single(body).method(body.as_bytes()), "eth_chainId");
    }

    #[test]
    fn invalid_json_is_a_parse_error() {
        for body in ["", "   ", "{", r#"{"jsonrpc":"2.0",}"#, "[1,", "nope"] {
            assert!(
                matches!(
                    parse(body.as_bytes(), Bounds::new(10)),
                    Err(BodyError::Parse(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn valid_json_that_is_not_a_request_is_invalid_request() {
        for body in [
            "1",
            r#""x""#,
            "null",
            r#"{"jsonrpc":"1.0","id":1,"method":"m"}"#,
            r#"{"id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":""}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#,
        ] {
            let got = parse(body.as_bytes(), Bounds::new(10));
            assert!(matches!(got, Err(BodyError::Invalid(_))), "{body}: {got:?}");
        }
    }

    #[test]
    fn invalid_request_keeps_a_usable_id() {
        let body = r#"{"jsonrpc":"2.0","id":"k","method":7}"#;
        match parse(body.as_bytes(), Bounds::new(10)) {
            Err(BodyError::Invalid(inv)) => assert_eq!(slice(body, &inv.id.unwrap()), r#""k""#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_batch_is_invalid() {
        assert!(matches!(
            parse(b" [ ] ", Bounds::new(10)),
            Err(BodyError::Invalid(_))
        ));
    }

    #[test]
    fn batch_keeps_order_and_marks_bad_elements() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 1, {"jsonrpc":"2.0","method":"n"},
                      {"jsonrpc":"2.0","id":"x","method":"b","params":{}}, {"foo":"bar"}]"#;
        let Ok(Request::Batch(items)) = parse(body.as_bytes(), Bounds::new(10)) else {
            panic!("not a batch")
        };
        assert_eq!(items.len(), 5);
        assert!(matches!(&items[0], Item::Call(c) if c.method(body.as_bytes()) == "a"));
        assert!(matches!(&items[1], Item::Invalid(i) if i.id.is_none()));
        assert!(matches!(&items[2], Item::Call(c) if c.is_notification()));
        assert!(
            matches!(&items[3], Item::Call(c) if slice(body, c.id.as_ref().unwrap()) == r#""x""#)
        );
        assert!(matches!(&items[4], Item::Invalid(_)));
        assert_eq!(Request::Batch(items).expected_answers(), 4);
    }

    #[test]
    fn batch_limit_is_enforced() {
        let body = format!(
            "[{}]",
            [r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#; 11].join(",")
        );
        assert!(matches!(
            parse(body.as_bytes(), Bounds::new(10)),
            Err(BodyError::BatchTooLarge { len: 11, max: 10 })
        ));
    }

    #[test]
    fn batch_with_broken_json_is_a_parse_error() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","#;
        assert!(matches!(
            parse(body.as_bytes(), Bounds::new(10)),
            Err(BodyError::Parse(_))
        ));
    }

    /// Bodies of every shape the proxy sees; the scanner must take all of them.
    const CORPUS: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":"a-b","method":"eth_getBalance","params":["0x742d35cc6634c0532925a3b844bc454e4438f44e","latest"]}"#,
        r#" { "method" : "eth_call" , "params" : [ { "to" : "0x1" , "data" : "0x70a08231" } , { "blockNumber" : "0x10" } ] , "id" : -1.5e3 , "jsonrpc" : "2.0" } "#,
        r#"{"jsonrpc":"2.0","id":null,"method":"eth_chainId"}"#,
        r#"{"jsonrpc":"2.0","method":"eth_subscribe","params":{"a":[1,2,{"b":null}],"c":true,"d":false}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_\u0063hainId","extra":"\u00e9\n\"x\"","params":[]}"#,
        r#"{"jsonrpc":"1.0","id":3,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":{"no":1},"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":5}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":""}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"m","params":"p"}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"m\",\"params\":[\"caf\u{e9} \u{1F600}\"]}\n",
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":2,"method":"eth_getBalance","params":["0xabc","0x10"]}]"#,
        r#"[{"jsonrpc":"2.0","method":"n"}, 1, "s", [], {"jsonrpc":"2.0","id":"x","method":"m"}, {"id":9}, null]"#,
        r#"[]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"},{"jsonrpc":"2.0","id":3,"method":"c"},{"jsonrpc":"2.0","id":4,"method":"d"},{"jsonrpc":"2.0","id":5,"method":"e"},{"jsonrpc":"2.0","id":6,"method":"f"}]"#,
        r#"{"jsonrpc":"2.0","id":0,"method":"eth_getLogs","params":[{"fromBlock":"0x1","toBlock":"latest","topics":[null,["0xab","0xcd"]],"n":[0,-0,0.25,1E+2,3e-4]}]}"#,
    ];

    /// A fixed-seed xorshift: the same mutations on every run.
    fn rng(mut x: u64) -> impl FnMut() -> usize {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as usize
        }
    }

    fn agree(body: &[u8]) {
        if let Err(e) = reference::check(body, Bounds::new(5)) {
            panic!("{e}");
        }
    }

    #[test]
    fn the_scanner_takes_every_corpus_body_and_agrees_with_the_reference() {
        for body in CORPUS.iter().chain(AMBIGUOUS) {
            assert!(
                !matches!(
                    parse(body.as_bytes(), Bounds::new(5)),
                    Err(BodyError::Parse(_))
                ),
                "{body}"
            );
            agree(body.as_bytes());
        }
    }

    /// Requests whose members some node reads otherwise than a case-sensitive decoder.
    const AMBIGUOUS: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","METHOD":"admin_addPeer","params":["enode://x"]}"#,
        r#"{"jsonrpc":"2.0","id":2,"Method":"admin_addPeer","method":"eth_blockNumber"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_call","mEtHoD":"admin_addPeer"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_getBalance","params":["0x1","latest"],"PARAMS":["0x1","0x1"]}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"eth_getBalance\",\"param\u{17f}\":[]}",
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","\u004dethod":"admin_addPeer"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","method":"admin_addPeer"}"#,
        r#"{"jsonrpc":"2.0","id":2,"ID":3,"method":"eth_blockNumber"}"#,
        r#"{"jsonrpc":"2.0","JSONRPC":"1.0","id":2,"method":"eth_blockNumber"}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","METHOD":"admin_addPeer"}]"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","\ud800":1}"#,
    ];

    #[test]
    fn other_spellings_and_repeats_of_members_are_refused_with_the_id_kept() {
        for body in AMBIGUOUS.iter().filter(|b| b.starts_with('{')) {
            match parse(body.as_bytes(), Bounds::new(5)) {
                Err(BodyError::Invalid(inv)) => {
                    let id = inv.id.map(|r| &body[r]);
                    let expected =
                        (!body.contains(r#""ID""#) && !body.contains(r#"\ud800"#)).then_some("2");
                    assert_eq!(id, expected, "{body}");
                    assert_eq!(inv.error.code, code::INVALID_REQUEST);
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // In a batch only the ambiguous call is refused, with its id.
        let batch = AMBIGUOUS[9];
        let Ok(Request::Batch(items)) = parse(batch.as_bytes(), Bounds::new(5)) else {
            panic!("a batch");
        };
        assert!(matches!(&items[0], Item::Call(_)));
        assert!(
            matches!(&items[1], Item::Invalid(i) if i.id.clone().map(|r| &batch[r]) == Some("2"))
        );
    }

    #[test]
    fn nesting_deeper_than_the_bound_is_refused() {
        let deep = |n: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let bounds = Bounds {
            max_batch: 5,
            max_depth: 8,
        };
        // The call object is one level, its params a second.
        assert!(parse(deep(7).as_bytes(), bounds).is_ok());
        assert_eq!(
            parse(deep(8).as_bytes(), bounds),
            Err(BodyError::TooDeep { max: 8 })
        );
    }

    #[test]
    fn the_scanner_and_the_reference_agree_on_mutated_bodies() {
        let alphabet: &[u8] =
            b"{}[]\",:\\ \t\n0123456789-+.eEtrufalsn\x01\x1f\x7f\xc3\xa9\xc5\xbfidmethodparamsMETHODIDPARAMSu";
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        let (mut tried, mut taken) = (0, 0);
        for body in CORPUS.iter().chain(AMBIGUOUS) {
            for _ in 0..600 {
                let mut b = body.as_bytes().to_vec();
                for _ in 0..1 + next() % 3 {
                    let pos = next() % (b.len() + 1);
                    let byte = alphabet[next() % alphabet.len()];
                    match next() % 3 {
                        0 if pos < b.len() => drop(b.remove(pos)),
                        1 if pos < b.len() => b[pos] = byte,
                        _ => b.insert(pos, byte),
                    }
                }
                tried += 1;
                if !matches!(parse(&b, Bounds::new(5)), Err(BodyError::Parse(_))) {
                    taken += 1;
                }
                agree(&b);
            }
        }
        // Mutations mostly break the JSON, but plenty must still be read.
        assert!(taken > tried / 20, "read {taken} of {tried}");
    }
}
