//! `GET /v1/chains/{chain}/events?events=block,reorg,logs[&address=0x…,0x…][&topics=0x…,0x…]`:
//! the native event stream as Server-Sent Events, for curl and browsers' `EventSource`. Each
//! event is an `event: block|reorg|log` line and a `data:` line with the same `data` object the
//! WebSocket stream sends; a comment every 15 s keeps proxies from timing the stream out and
//! finds clients that are gone. A client that does not take an event within
//! `ws_send_timeout`, or falls too far behind, is disconnected.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;

use super::native::{self, Wanted};
use super::relay::shutting_down;
use crate::canon::{Canon, LogFilter};
use crate::metrics::metrics;

const HEARTBEAT: Duration = Duration::from_secs(15);

/// Reads the stream's query: `events` (default `block,reorg`), and for `logs` optional
/// `address` and `topics` (comma-separated; topics are alternatives for the first position).
pub fn wanted(query: Option<&str>) -> Result<Wanted, String> {
    let mut events: Option<String> = None;
    let mut filter = LogFilter::default();
    let mut filtered = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("{key}: not UTF-8"))?;
        match key {
            "events" => events = Some(value.into_owned()),
            "address" => {
                filtered = true;
                for a in value.split(',').filter(|a| !a.is_empty()) {
                    filter.addresses.push(
                        crate::canon::block::parse_address(a)
                            .ok_or_else(|| format!("invalid address {a:?}"))?,
                    );
                }
            }
            "topics" => {
                filtered = true;
                let mut any = Vec::new();
                for t in value.split(',').filter(|t| !t.is_empty()) {
                    any.push(
                        crate::canon::block::parse_hash(t)
                            .ok_or_else(|| format!("invalid topic {t:?}"))?,
                    );
                }
                filter.topics = vec![any];
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let events = events.unwrap_or_else(|| "block,reorg".to_owned());
    let names: Vec<&str> = events.split(',').filter(|e| !e.is_empty()).collect();
    if names.is_empty() {
        return Err(format!(
            "events: list some of {}",
            native::EVENTS.join(", ")
        ));
    }
    native::wanted(&names, filtered.then_some(filter))
}

/// The head of the stream's answer: no length, the stream ends when the connection does.
pub const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\nX-Accel-Buffering: no\r\n\
Connection: close\r\n\r\n: livechain event stream\n\n";

/// Streams `wanted` events of `chain` on `stream` (the head already written) until the client
/// goes, falls behind, or the process shuts down.
pub async fn stream<S>(
    mut stream: S,
    chain: String,
    canon: Arc<Canon>,
    wanted: Wanted,
    send_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sub = wanted.start(&chain, &canon);
    let mut events = super::fanout::subscribe(&canon);
    let mut shutdown = super::shutdown_channel().subscribe();
    let mut scratch = [0u8; 512];
    let sent = metrics()
        .subscription_events
        .with_label_values(&[&chain, "sse"]);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let out = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let mut text = String::new();
                    for (kind, data) in sub.events(&event) {
                        text.push_str("event: ");
                        text.push_str(kind);
                        text.push_str("\ndata: ");
                        text.push_str(&data);
                        text.push_str("\n\n");
                        sent.inc();
                    }
                    text
                }
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
            },
            _ = heartbeat.tick() => ": ping\n\n".to_owned(),
            // Anything from the client, or its end: an event stream reads nothing.
            _ = stream.read(&mut scratch) => break,
            _ = shutting_down(&mut shutdown) => break,
        };
        if out.is_empty() {
            continue;
        }
        let write = async {
            stream.write_all(out.as_bytes()).await?;
            stream.flush().await
        };
        match tokio::time::timeout(send_timeout, write).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_says_what_to_stream() {
        let w = wanted(None).unwrap();
        assert!(w.block && w.reorg && w.logs.is_none());
        let w = wanted(Some(
            "events=logs&address=0x00000000000000000000000000000000000000aa",
        ))
        .unwrap();
        assert_eq!(w.logs.unwrap().addresses.len(), 1);
        let w = wanted(Some("events=block%2Creorg")).unwrap();
        assert!(w.block && w.reorg);
        for bad in [
            "events=blocks",
            "events=",
            "events=block&address=0x1",
            "events=logs&topics=0x12",
            "nope=1",
            "events=block&address=0x00000000000000000000000000000000000000aa",
        ] {
            assert!(wanted(Some(bad)).is_err(), "{bad}");
        }
    }
}
