//! A second, slow reading of request bodies, written apart from the scanner, that the scanner
//! is tested against (unit tests, `fuzz/`, and the node stand-in of the integration tests).
//! Nothing on the request path uses it.
//!
//! - [`go_members`]: which members Go's `encoding/json` binds to geth's request fields
//!   (`jsonrpc`, `id`, `method`, `params`): the last member whose decoded name equals the
//!   field's under Unicode simple case folding. This is what geth and Erigon run.
//! - [`parse`]: livechain's rules applied to serde_json's decoding of the body, as a summary
//!   ([`Summary`]) that [`summarize`] also makes of the scanner's result.
//! - [`check`]: the two compared, and every call taken compared with what geth reads.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::parse::{parse as scan_parse, BodyError, Bounds, Call, Item, Request};

/// The members geth's decoder binds, as raw JSON text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GoMembers {
    pub jsonrpc: Option<String>,
    pub id: Option<String>,
    pub method: Option<String>,
    pub params: Option<String>,
}

impl GoMembers {
    /// The method as geth reads it (a JSON string, decoded).
    pub fn method_name(&self) -> Option<String> {
        serde_json::from_str::<String>(self.method.as_deref()?).ok()
    }
}

/// The members of one object in order: names decoded, values raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Go's fold of one character onto the representative of its case-folding orbit, for the
/// orbits that hold ASCII letters (the only ones a field name of geth's has): `a`–`z` and `A`–
/// `Z` onto upper case, `ſ` (U+017F) onto `S`, the Kelvin sign (U+212A) onto `K`.
fn fold(c: char) -> char {
    match c {
        'a'..='z' => c.to_ascii_uppercase(),
        '\u{17F}' => 'S',
        '\u{212A}' => 'K',
        c => c,
    }
}

fn fold_eq(a: &str, b: &str) -> bool {
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// How Go's `encoding/json` fills geth's request struct from the object `text`: each member
/// whose name matches a field exactly, or failing that under case folding, sets it; the last
/// one wins. `None` when `text` is not a JSON object.
pub fn go_members(text: &str) -> Option<GoMembers> {
    let members: Members = serde_json::from_str(text).ok()?;
    let mut out = GoMembers::default();
    for (name, value) in members.0 {
        let slot = ["jsonrpc", "id", "method", "params"]
            .iter()
            .position(|field| name == *field)
            .or_else(|| {
                ["jsonrpc", "id", "method", "params"]
                    .iter()
                    .position(|field| fold_eq(&name, field))
            });
        let value = Some(value.get().to_owned());
        match slot {
            Some(0) => out.jsonrpc = value,
            Some(1) => out.id = value,
            Some(2) => out.method = value,
            Some(3) => out.params = value,
            _ => {}
        }
    }
    Some(out)
}

/// A request as a comparable summary.
#[derive(Debug, Clone, PartialEq)]
pub enum Summary {
    /// Not JSON.
    Parse,
    /// JSON, but refused as a whole (not a request, an empty or oversized batch).
    Invalid,
    Single(Entry),
    Batch(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A call: raw id (`None` for a notification), decoded method, raw params.
    Call {
        id: Option<String>,
        method: String,
        params: Option<String>,
    },
    /// Refused; the raw id echoed with the error, if any.
    Invalid { id: Option<String> },
}

/// The summary of the scanner's (the proxy's) result.
pub fn summarize(body: &[u8], parsed: &Result<Request, BodyError>) -> Summary {
    let text = |r: &std::ops::Range<usize>| String::from_utf8_lossy(&body[r.clone()]).into_owned();
    let entry = |item: &Item| match item {
        Item::Call(c) => Entry::Call {
            id: c.id.as_ref().map(text),
            method: c.method(body).to_owned(),
            params: c.params.as_ref().map(text),
        },
        Item::Invalid(inv) => Entry::Invalid {
            id: inv.id.as_ref().map(text),
        },
    };
    match parsed {
        Ok(Request::Single(c)) => Summary::Single(entry(&Item::Call(c.clone()))),
        Ok(Request::Batch(items)) => Summary::Batch(items.iter().map(entry).collect()),
        Err(BodyError::Parse(_)) => Summary::Parse,
        Err(BodyError::Invalid(inv)) if body.trim_ascii_start().starts_with(b"{") => {
            Summary::Single(entry(&Item::Invalid(inv.clone())))
        }
        Err(_) => Summary::Invalid,
    }
}

/// livechain's rules over serde_json's decoding of `body` (nesting within `bounds` is the
/// caller's to ensure: serde_json has no such limit here).
pub fn parse(body: &[u8], bounds: Bounds) -> Summary {
    let Ok(text) = std::str::from_utf8(body) else {
        return Summary::Parse;
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return Summary::Parse;
    }
    match text.trim_start().as_bytes().first() {
        Some(b'{') => Summary::Single(entry(text)),
        Some(b'[') => {
            let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(text) else {
                return Summary::Parse;
            };
            if list.is_empty() || list.len() > bounds.max_batch {
                return Summary::Invalid;
            }
            Summary::Batch(list.iter().map(|el| entry(el.get())).collect())
        }
        _ => Summary::Invalid,
    }
}

/// One object under livechain's rules; anything else is an invalid element.
fn entry(text: &str) -> Entry {
    let Ok(members) = serde_json::from_str::<Members>(text) else {
        return Entry::Invalid { id: None };
    };
    let names = ["jsonrpc", "id", "method", "params"];
    let mut exact: [Vec<&str>; 4] = Default::default();
    let mut ambiguous = [false; 4];
    for (name, value) in &members.0 {
        for (k, field) in names.iter().enumerate() {
            if name == field {
                exact[k].push(value.get());
            } else if fold_eq(name, field) {
                ambiguous[k] = true;
            }
        }
    }
    for (k, list) in exact.iter().enumerate() {
        ambiguous[k] |= list.len() > 1;
    }
    let usable_id = |raw: &str| matches!(raw.as_bytes()[0], b'"' | b'-' | b'0'..=b'9' | b'n');
    let id = exact[1].first().copied();
    if ambiguous.iter().any(|&a| a) {
        let id = id.filter(|raw| !ambiguous[1] && usable_id(raw));
        return Entry::Invalid {
            id: id.map(str::to_owned),
        };
    }
    if id.is_some_and(|raw| !usable_id(raw)) {
        return Entry::Invalid { id: None };
    }
    let id = id.map(str::to_owned);
    let invalid = Entry::Invalid { id: id.clone() };
    if exact[0].first() != Some(&"\"2.0\"") {
        return invalid;
    }
    let Some(method) = exact[2]
        .first()
        .and_then(|m| serde_json::from_str::<String>(m).ok())
        .filter(|m| !m.is_empty())
    else {
        return invalid;
    };
    let params = exact[3].first().copied();
    if params.is_some_and(|p| !p.starts_with(['[', '{'])) {
        return invalid;
    }
    Entry::Call {
        id,
        method,
        params: params.map(str::to_owned),
    }
}

/// Holds the scanner (the proxy's parser) to the reference on `body`: the same summary, and
/// every call taken is what Go's decoder reads from its bytes. The reference has no nesting
/// limit: a body the scanner refused as too deep is not compared.
pub fn check(body: &[u8], bounds: Bounds) -> Result<(), String> {
    let ours = scan_parse(body, bounds);
    if matches!(ours, Err(BodyError::TooDeep { .. })) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(body);
    let (mine, theirs) = (summarize(body, &ours), parse(body, bounds));
    if mine != theirs {
        return Err(format!("{text:?}: scanner {mine:?}, reference {theirs:?}"));
    }
    let calls: Vec<&Call> = match &ours {
        Ok(Request::Single(c)) => vec![c],
        Ok(Request::Batch(items)) => items
            .iter()
            .filter_map(|i| match i {
                Item::Call(c) => Some(c),
                Item::Invalid(_) => None,
            })
            .collect(),
        Err(_) => vec![],
    };
    for c in calls {
        let object = std::str::from_utf8(&body[c.span.clone()]).map_err(|e| e.to_string())?;
        let go = go_members(object).ok_or_else(|| format!("{text:?}: not an object"))?;
        let raw = |r: &Option<std::ops::Range<usize>>| {
            r.clone()
                .map(|r| String::from_utf8_lossy(&body[r]).into_owned())
        };
        let ours = (Some(c.method(body).to_owned()), raw(&c.id), raw(&c.params));
        let geth = (go.method_name(), go.id.clone(), go.params.clone());
        if ours != geth {
            return Err(format!(
                "{text:?}: forwarded as {ours:?}, geth runs {geth:?}"
            ));
        }
    }
    Ok(())
}
