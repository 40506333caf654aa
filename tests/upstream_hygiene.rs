//! No answer ever reaches the wrong client: upstreams that leave bytes on a keep-alive
//! connection (a second response, a `Content-Length` shorter than what follows, a 204 with a
//! body, chunked data followed by more, an unsolicited 408 on an idle connection) must not have
//! those bytes handed to the next client as its answer.
//!
//! Two clients share one pooled upstream connection (`threads = 1`,
//! `upstream_max_connections = 1`), each sending calls tagged with its own name; every answer a
//! client gets must be its own.

mod common;

use std::time::Duration;

use common::rawnode::{self, http_ok, RawNode, Reply};
use common::*;

/// How the node misbehaves after (or instead of) a correct answer.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// A second, unsolicited response a moment after the answer.
    ExtraResponse,
    /// `Content-Length` covers the answer, but the body goes on a moment later.
    ShortLength,
    /// `204 No Content`, then a body (which looks like a response) a moment later.
    NoContentWithBody,
    /// A correct chunked answer, then a fake response a moment later.
    ChunkedThenMore,
    /// A correct answer; a moment later, the 408 servers send on idle keep-alive connections.
    Idle408,
}

const LEAKED: &str = r#""LEAKED""#;

/// A response carrying another answer for the same id: what a client must never see.
fn fake(id: &str) -> Vec<u8> {
    http_ok(&rawnode::result(id, LEAKED))
}

fn reply(mode: Mode, id: &str, answer: &str) -> Reply {
    let later = Duration::from_millis(5);
    match mode {
        Mode::ExtraResponse => Reply::Then(http_ok(answer), later, fake(id)),
        Mode::ShortLength => {
            let mut rest = b" and more body ".to_vec();
            rest.extend_from_slice(&fake(id));
            Reply::Then(http_ok(answer), later, rest)
        }
        Mode::NoContentWithBody => {
            Reply::Then(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), later, fake(id))
        }
        Mode::ChunkedThenMore => {
            let chunked = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{answer}\r\n0\r\n\r\n",
                answer.len()
            );
            Reply::Then(chunked.into_bytes(), later, fake(id))
        }
        Mode::Idle408 => Reply::Then(
            http_ok(answer),
            later,
            b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
    }
}

/// Runs two clients against a node misbehaving as `mode`; (wrong answers, failed requests).
async fn run(mode: Mode) -> (Vec<String>, usize) {
    let node = RawNode::start(move |ex| {
        if let Some(r) = rawnode::probe_answer(ex, 1, 100, rawnode::live(100)) {
            return r;
        }
        // test_echo(tag, n) answers "tag-n".
        let tag = ex.param(0).and_then(|v| v.as_str()).unwrap_or("?");
        let n = ex.param(1).and_then(|v| v.as_u64()).unwrap_or(0);
        let id = ex.id();
        reply(mode, &id, &rawnode::result(&id, &format!("\"{tag}-{n}\"")))
    })
    .await;
    let proxy = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("raw", node.url())]),
        "threads = 1\nupstream_max_connections = 1\n",
    )
    .await;
    // The clients take turns, with a pause after each answer in which the node's extra bytes
    // arrive: the connection is idle in the pool when they do.
    let mut clients = [("alice", proxy.client()), ("bob", proxy.client())];
    let mut wrong = Vec::new();
    let mut failed = 0;
    for n in 0..20u64 {
        for (tag, c) in clients.iter_mut() {
            // Ids repeat across clients, as real clients' ids do.
            let body = call(n % 3, "test_echo", serde_json::json!([tag, n]));
            let r = c.post("/ethereum", &body).await;
            if r.status != 200 {
                failed += 1;
            } else {
                let got = r.json()["result"].clone();
                if got != serde_json::json!(format!("{tag}-{n}")) {
                    wrong.push(format!("{tag} #{n} got {got}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (wrong, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_response_never_reaches_the_next_client() {
    let (wrong, failed) = run(Mode::ExtraResponse).await;
    assert!(
        wrong.is_empty(),
        "answers went to the wrong client: {wrong:?}"
    );
    assert_eq!(failed, 0, "every call had a correct first answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_the_content_length_never_reach_the_next_client() {
    let (wrong, failed) = run(Mode::ShortLength).await;
    assert!(
        wrong.is_empty(),
        "answers went to the wrong client: {wrong:?}"
    );
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_of_a_204_never_reaches_the_next_client() {
    let (wrong, _failed) = run(Mode::NoContentWithBody).await;
    // A 204 is no answer to a call: those calls fail, but none gets the body meant for nobody.
    assert!(
        wrong.is_empty(),
        "answers went to the wrong client: {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_chunked_answer_never_reach_the_next_client() {
    let (wrong, failed) = run(Mode::ChunkedThenMore).await;
    assert!(
        wrong.is_empty(),
        "answers went to the wrong client: {wrong:?}"
    );
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_408_on_an_idle_connection_is_not_an_answer() {
    let (wrong, failed) = run(Mode::Idle408).await;
    assert!(
        wrong.is_empty(),
        "answers went to the wrong client: {wrong:?}"
    );
    assert_eq!(
        failed, 0,
        "the 408 closed the idle connection, not a client's call"
    );
}
