//! WebSocket on the mock's HTTP port: plain JSON-RPC calls over the socket, and
//! `eth_subscribe` / `eth_unsubscribe` for `newHeads` (one notification per block, consistent
//! with `eth_blockNumber`), `logs` (with an address/topics filter) and `newPendingTransactions`;
//! [`follow`](super::follow) decides what they are sent. `drop_ws` ends every socket here.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::branch::LogFilter;
use super::control::Counters;
use super::follow::{Follower, Subscription, Subscriptions};
use super::params::one_or_many;
use super::{rpc, Shared};

/// Counts the socket in `ws_connections_open` for as long as it lives, abort included.
struct OpenWs<'a>(&'a Counters);

impl<'a> OpenWs<'a> {
    fn new(c: &'a Counters) -> Self {
        Counters::inc(&c.ws_connections_open);
        OpenWs(c)
    }
}

impl Drop for OpenWs<'_> {
    fn drop(&mut self) {
        Counters::dec(&self.0.ws_connections_open);
    }
}

/// Answers the upgrade and serves the socket until the client closes it, the node stops, or
/// `drop_ws` drops it.
pub async fn serve(mut stream: TcpStream, key: &str, shared: &Shared) {
    // Before anything else, so a `drop_ws` sent while this socket is being set up still drops it.
    let mut dropped = shared.ws_drop.subscribe();
    let accept = derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let _open = OpenWs::new(&shared.counters);
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    let (mut tx, mut rx) = ws.split();
    let mut subs = Subscriptions::new(&shared.counters);
    let mut next_id: u64 = 1;
    let mut follower = Follower::new(&shared.view);
    // The time-derived head is looked at when the next block is due (every socket of the node,
    // and of every node on the chain, at the same moment) and a few times per block besides,
    // for what controls change (a stall, lag, a reorg), without a ticker task per node.
    let poll =
        (shared.spec.block_time / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    loop {
        let wake = tokio::time::Instant::from_std(shared.view.chain().next_block_at())
            .min(tokio::time::Instant::now() + poll);
        let mut out: Vec<Message> = Vec::new();
        // Returning drops the TCP stream: no close frame, as when a provider crashes.
        tokio::select! {
            biased;
            _ = dropped.changed() => return,
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let since = follower.last();
                    if let Some(reply) = call(shared, text.as_str(), &mut subs, &mut next_id, since) {
                        out.push(Message::text(reply));
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(text) = std::str::from_utf8(&bytes) {
                        let since = follower.last();
                        if let Some(reply) = call(shared, text, &mut subs, &mut next_id, since) {
                            out.push(Message::text(reply));
                        }
                    }
                }
                Some(Ok(Message::Ping(p))) => out.push(Message::Pong(p)),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(wake) => {
                let mut notes = Vec::new();
                follower.advance(&shared.view, &subs, &mut notes);
                out.extend(notes.into_iter().map(Message::text));
            }
        }
        let send = async {
            for m in out {
                tx.feed(m).await?;
            }
            tx.flush().await
        };
        // A client that stops reading must not keep its socket out of `drop_ws`'s reach.
        tokio::select! {
            biased;
            _ = dropped.changed() => return,
            r = send => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}

/// One JSON-RPC message over the socket; `None` when nothing is to be answered.
/// A new subscription starts after block `since`, the last one the socket announced.
fn call(
    shared: &Shared,
    text: &str,
    subs: &mut Subscriptions<'_>,
    next_id: &mut u64,
    since: u64,
) -> Option<String> {
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        method: Option<&'a str>,
        #[serde(borrow)]
        params: Option<Vec<&'a RawValue>>,
    }
    let parsed: Option<Call> = serde_json::from_str(text).ok();
    let (id, method, params) = match &parsed {
        Some(Call {
            id,
            method: Some(m @ ("eth_subscribe" | "eth_unsubscribe")),
            params,
        }) => (*id, *m, params.clone().unwrap_or_default()),
        _ => {
            let mut out = Vec::new();
            rpc::handle(
                &shared.view,
                &shared.counters,
                text.as_bytes(),
                None,
                &mut out,
            );
            return (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned());
        }
    };
    shared.counters.count_method(method);
    let id = id.map_or("null", RawValue::get);
    let reply = |result: String| format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#);
    let error = |msg: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"{msg}"}}}}"#)
    };
    if method == "eth_unsubscribe" {
        let sub = params
            .first()
            .and_then(|p| serde_json::from_str::<String>(p.get()).ok());
        let removed = sub.is_some_and(|s| subs.remove(&s));
        return Some(reply(removed.to_string()));
    }
    let kind = params
        .first()
        .and_then(|p| serde_json::from_str::<String>(p.get()).ok());
    let sub = match kind.as_deref() {
        Some("newHeads") => Subscription::NewHeads,
        Some("newPendingTransactions") => Subscription::PendingTransactions,
        Some("logs") => match params.get(1).map(|f| log_filter(f)).transpose() {
            Ok(f) => Subscription::Logs(f.unwrap_or_default()),
            Err(()) => return Some(error("invalid logs filter")),
        },
        _ => return Some(error("unsupported subscription type")),
    };
    let sub_id = format!(
        "0x{:032x}",
        u128::from(*next_id) << 64 | u128::from(shared.spec.chain_id)
    );
    *next_id += 1;
    subs.insert(sub_id.clone(), sub, since);
    Some(reply(format!("\"{sub_id}\"")))
}

fn log_filter(raw: &RawValue) -> Result<LogFilter, ()> {
    #[derive(Deserialize)]
    struct Filter<'a> {
        #[serde(borrow)]
        address: Option<&'a RawValue>,
        #[serde(borrow)]
        topics: Option<Vec<Option<&'a RawValue>>>,
    }
    let f: Filter = serde_json::from_str(raw.get()).map_err(|_| ())?;
    let mut filter = LogFilter::default();
    if let Some(a) = f.address {
        filter.addresses = one_or_many(a).map_err(|_| ())?;
    }
    for t in f.topics.unwrap_or_default() {
        filter
            .topics
            .push(t.map(one_or_many).transpose().map_err(|_| ())?);
    }
    Ok(filter)
}
