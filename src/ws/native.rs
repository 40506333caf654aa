//! The native event stream: on `/v1/ws/{chain}` a client may send
//! `{"type":"subscribe","events":["block","reorg","logs"],"filter":{…}}` and receive
//! `{"type":"block"|"reorg"|"log","chain":…,"data":…}` messages; `{"type":"unsubscribe"}`
//! stops them. The same events are served as Server-Sent Events (`sse`).

use std::sync::Arc;

use serde_json::Value;

use super::render;
use crate::canon::{Canon, Event, Interest, LogFilter, Want};

/// The event kinds of the native stream.
pub const EVENTS: &[&str] = &["block", "reorg", "logs"];

/// A native request.
pub enum NativeMsg {
    Subscribe(Wanted),
    Unsubscribe,
}

/// What a native subscription asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub block: bool,
    pub reorg: bool,
    /// `logs`, with its filter.
    pub logs: Option<LogFilter>,
}

/// A native subscription in force.
pub struct NativeSub {
    wanted: Wanted,
    _interest: Option<Interest>,
    _gauge: super::session::Gauge,
}

/// Reads a message on a native-capable socket: `None` when it is JSON-RPC (an object with
/// `jsonrpc` or `method`, or a batch) and goes that way; an error for anything else.
pub fn read(body: &[u8]) -> Option<Result<NativeMsg, String>> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Some(Err("message is not JSON".into())),
    };
    let obj = match &value {
        Value::Array(_) => return None,
        Value::Object(o) => o,
        _ => {
            return Some(Err(
                r#"expected an object with "type" (or a JSON-RPC call)"#.into(),
            ))
        }
    };
    let Some(kind) = obj.get("type") else {
        if obj.contains_key("jsonrpc") || obj.contains_key("method") {
            return None;
        }
        return Some(Err(
            r#"expected an object with "type" (or a JSON-RPC call)"#.into(),
        ));
    };
    Some(match kind.as_str() {
        Some("subscribe") => parse_subscribe(obj).map(NativeMsg::Subscribe),
        Some("unsubscribe") => Ok(NativeMsg::Unsubscribe),
        Some(other) => Err(format!(
            "unknown message type {}; use subscribe or unsubscribe",
            Value::from(other)
        )),
        None => Err(r#""type" must be a string"#.into()),
    })
}

fn parse_subscribe(obj: &serde_json::Map<String, Value>) -> Result<Wanted, String> {
    let events = match obj.get("events") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => {
            return Err(format!(
                r#""events" must be a non-empty list of {}"#,
                EVENTS.join(", ")
            ))
        }
    };
    let names = events
        .iter()
        .map(|e| {
            e.as_str()
                .ok_or_else(|| r#""events" must list strings"#.to_owned())
        })
        .collect::<Result<Vec<&str>, String>>()?;
    let filter = match obj.get("filter") {
        None | Some(Value::Null) => None,
        Some(f @ Value::Object(_)) => Some(LogFilter::parse(&f.to_string())?),
        Some(_) => return Err(r#""filter" must be an object"#.into()),
    };
    wanted(&names, filter)
}

/// A subscription to `names` (`block`, `reorg`, `logs`), with a log filter.
pub fn wanted(names: &[&str], filter: Option<LogFilter>) -> Result<Wanted, String> {
    let mut w = Wanted::default();
    for name in names {
        match *name {
            "block" => w.block = true,
            "reorg" => w.reorg = true,
            "logs" => w.logs = Some(LogFilter::default()),
            other => {
                return Err(format!(
                    "unknown event {}; events are {}",
                    Value::from(other),
                    EVENTS.join(", ")
                ))
            }
        }
    }
    if let Some(f) = filter {
        if w.logs.is_none() {
            return Err(r#""filter" applies to "logs" events, which are not asked for"#.into());
        }
        w.logs = Some(f);
    }
    Ok(w)
}

impl Wanted {
    /// The acknowledgement of a subscribe message.
    pub fn ack(&self) -> String {
        let names: Vec<&str> = [
            (self.block, "block"),
            (self.reorg, "reorg"),
            (self.logs.is_some(), "logs"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        format!(
            r#"{{"type":"subscribed","events":{}}}"#,
            serde_json::to_string(&names).unwrap_or_default()
        )
    }

    /// Starts it: counted, and logs fetched while it asks for them.
    pub fn start(self, chain: &str, canon: &Arc<Canon>) -> NativeSub {
        NativeSub {
            _interest: self.logs.is_some().then(|| canon.want(Want::Logs)),
            _gauge: super::session::Gauge::new(chain, "native"),
            wanted: self,
        }
    }
}

impl NativeSub {
    /// The `(type, data)` pairs an event gives this subscription.
    pub fn events(&self, event: &Event) -> Vec<(&'static str, String)> {
        let w = &self.wanted;
        match event {
            Event::Body(b) if w.block => vec![("block", render::block_data(b))],
            Event::Reorg(r) if w.reorg => vec![("reorg", render::reorg_data(r))],
            Event::Logs { block, removed } => match &w.logs {
                Some(filter) => block
                    .logs()
                    .into_iter()
                    .flat_map(|l| l.iter())
                    .filter(|l| filter.matches(l))
                    .map(|l| {
                        let json = if *removed { l.removed_json() } else { &*l.json };
                        ("log", json.to_owned())
                    })
                    .collect(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The native messages an event gives this subscription.
    pub fn render(&self, chain: &str, event: &Event) -> Vec<String> {
        self.events(event)
            .into_iter()
            .map(|(kind, data)| render::native(kind, chain, &data))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Option<Result<NativeMsg, String>> {
        read(text.as_bytes())
    }

    #[test]
    fn json_rpc_goes_its_way_and_native_messages_are_read() {
        assert!(msg(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#).is_none());
        assert!(msg(r#"[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}]"#).is_none());
        match msg(
            r#"{"type":"subscribe","events":["block","logs"],"filter":{"address":"0x00000000000000000000000000000000000000aa"}}"#,
        ) {
            Some(Ok(NativeMsg::Subscribe(w))) => {
                assert!(w.block && !w.reorg);
                assert_eq!(w.logs.unwrap().addresses.len(), 1);
            }
            _ => panic!("a subscribe message"),
        }
        assert!(matches!(
            msg(r#"{"type":"unsubscribe"}"#),
            Some(Ok(NativeMsg::Unsubscribe))
        ));
    }

    #[test]
    fn malformed_messages_get_a_reason() {
        for bad in [
            "not json",
            "42",
            "{}",
            r#"{"type":"bogus"}"#,
            r#"{"type":7}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","events":"nope"}"#,
            r#"{"type":"subscribe","events":[]}"#,
            r#"{"type":"subscribe","events":["blocks"]}"#,
            r#"{"type":"subscribe","events":[1]}"#,
            r#"{"type":"subscribe","events":["block"],"filter":{}}"#,
            r#"{"type":"subscribe","events":["logs"],"filter":{"address":"0x1"}}"#,
            r#"{"type":"subscribe","events":["logs"],"filter":[]}"#,
        ] {
            match msg(bad) {
                Some(Err(e)) => assert!(!e.is_empty()),
                _ => panic!("{bad} should be refused"),
            }
        }
    }

    #[test]
    fn an_acknowledgement_lists_what_was_subscribed() {
        let w = wanted(&["reorg", "block"], None).unwrap();
        assert_eq!(
            w.ack(),
            r#"{"type":"subscribed","events":["block","reorg"]}"#
        );
    }
}
