//! Every REST, health, status and admin endpoint's real answers (successes and errors) checked
//! against `docs/openapi.yaml` with openapi-core (installed by `scripts/e2e-deps`), which also
//! checks that the document is valid OpenAPI 3.1. livechain serves one chain from a raw-socket
//! node that answers its own calls and refuses clients' transactions (so one is queued and the
//! queue's endpoints have an entry to show), with an API key configured.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::rawnode::{self, RawNode, Reply};
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A signed legacy transaction of chain 1 (`cast mktx`, nonce 300; see src/jsonrpc/tx/tests.rs).
const RAW_TX: &str = "0xf8b382012c8506fc23ac0082ea609470997970c51812dc3a010c7d01b50e0d17dc79c8880de0b6b3a7640000b844a9059cbb00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8000000000000000000000000000000000000000000000000000000000000000526a0e1a0c6c0eda3ff148282d4373aac5e78ba6403e637f664aef947f377cbe1cf09a019474b70cee16711949e380f37d45856f2003393b3d7c151dedc333982c33ca9";
const TOKEN: &str = "openapi-admin-token-0123456789";

/// One answer as the checker reads it.
fn seen(method: &str, path: &str, r: &common::http::Response) -> Value {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path, ""),
    };
    let query: serde_json::Map<String, Value> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    let content_type = r
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    json!({
        "method": method,
        "path": path,
        "query": query,
        "status": r.status,
        "content_type": content_type,
        "body": r.text(),
    })
}

/// The status, content type and first bytes of an endless event stream.
async fn event_stream_start(p: &Proxy, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = |h: &[u8]| h.windows(4).position(|w| w == b"\r\n\r\n");
    // The head, and something of the body (the stream opens with a comment line).
    while end(&head).is_none_or(|e| head.len() < e + 6) && head.len() < 16_384 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the stream's head in time")
            .unwrap();
        assert!(n > 0, "closed before its head");
        head.extend_from_slice(&buf[..n]);
    }
    let body_at = end(&head).unwrap() + 4;
    let text = String::from_utf8_lossy(&head[..body_at]).to_lowercase();
    let status = text[9..12].parse().unwrap();
    let content_type = text
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let body = String::from_utf8_lossy(&head[body_at..]).into_owned();
    (status, content_type, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_openapi_document_says() {
    let tools = common::anvil::tools();
    let node = RawNode::start(|ex| {
        // Clients' transactions are refused for upstream reasons: they are queued.
        if ex.method() == Some("eth_sendRawTransaction") {
            return Reply::Bytes(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec(),
            );
        }
        rawnode::chain_answer(ex, 1, 50)
    })
    .await;
    let keys_dir = TempDir::new();
    let keys = keys_dir.write(
        "keys.toml",
        "[[keys]]\nid = \"wallet\"\nkey = \"openapi-client-key-0123456789\"\n\
         requests_per_second = 100\nburst = 200\nchains = [\"ethereum\"]\n",
    );
    let upstreams = format!(
        "[probe]\ninterval_ms = 100\n[chains.ethereum]\nchain_id = 1\n\
         [[chains.ethereum.upstreams]]\nname = \"node\"\nhttp = \"{}\"\n",
        node.url()
    );
    let p = Proxy::start(
        &upstreams,
        &format!(
            "\n[auth]\nkeys = \"{}\"\nadmin_token = \"{TOKEN}\"\n[dlq]\nretry_interval_ms = 60000\n",
            keys.display()
        ),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.client().request("GET", "/health", &[], b"").await.status == 200
        })
        .await
    );
    let bearer = format!("Bearer {TOKEN}");
    let mut answers: Vec<Value> = Vec::new();
    let ask = |method: &'static str,
               path: String,
               headers: Vec<(&'static str, String)>,
               body: Vec<u8>| {
        let p = &p;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = p.client().request(method, &path, &h, &body).await;
            (seen(method, &path, &r), r)
        }
    };
    let admin_h = || vec![("authorization", bearer.clone())];

    // A transaction no upstream takes: queued, so the queue has an entry.
    let (_, r) = ask(
        "POST",
        "/ethereum/openapi-client-key-0123456789".into(),
        vec![],
        json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[RAW_TX]})
            .to_string()
            .into_bytes(),
    )
    .await;
    let id: u64 = r
        .header("x-livechain-queued")
        .unwrap_or_else(|| panic!("queued: {}", r.text()))
        .parse()
        .unwrap();

    for (method, path, headers) in [
        ("GET", "/health".to_string(), vec![]),
        ("GET", "/health/live".into(), vec![]),
        ("GET", "/health/ready".into(), vec![]),
        ("GET", "/v1/chains/ethereum/health".into(), vec![]),
        ("GET", "/v1/chains/nowhere/health".into(), vec![]),
        ("GET", "/status".into(), admin_h()),
        ("GET", "/status".into(), vec![]),
        (
            "GET",
            "/status".into(),
            vec![("authorization", "Bearer wrong-token-000000".into())],
        ),
        ("GET", "/metrics".into(), admin_h()),
        ("GET", "/v1/chains".into(), vec![]),
        ("GET", "/v1/chains/ethereum/status".into(), vec![]),
        ("GET", "/v1/chains/1/status".into(), vec![]),
        ("GET", "/v1/chains/nowhere/status".into(), vec![]),
        ("GET", "/v1/chains/ethereum/blocks/latest".into(), vec![]),
        ("GET", "/v1/chains/ethereum/blocks/7".into(), vec![]),
        ("GET", "/v1/chains/ethereum/blocks/0x7".into(), vec![]),
        ("GET", "/v1/chains/ethereum/blocks/seven".into(), vec![]),
        ("GET", "/v1/chains/ethereum/blocks/99999".into(), vec![]),
        ("GET", "/v1/admin/keys".into(), admin_h()),
        ("GET", "/v1/admin/dlq".into(), admin_h()),
        ("GET", "/v1/admin/dlq?state=queued".into(), admin_h()),
        ("GET", "/v1/admin/dlq?state=lost".into(), admin_h()),
        ("GET", format!("/v1/admin/dlq/{id}"), admin_h()),
        ("GET", "/v1/admin/dlq/999".into(), admin_h()),
        ("POST", format!("/v1/admin/dlq/{id}/retry"), admin_h()),
        ("POST", "/v1/admin/dlq/999/retry".into(), admin_h()),
        ("DELETE", format!("/v1/admin/dlq/{id}"), admin_h()),
        ("DELETE", format!("/v1/admin/dlq/{id}"), admin_h()),
    ] {
        let (s, _) = ask(method, path, headers, Vec::new()).await;
        answers.push(s);
    }
    // JSON-RPC: a call, a batch, an unknown chain, a key in the path, a refused key.
    for (path, body) in [
        (
            "/ethereum",
            json!({"jsonrpc":"2.0","id":"a","method":"eth_blockNumber","params":[]}),
        ),
        (
            "/1",
            json!([{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber"}]),
        ),
        (
            "/nowhere",
            json!({"jsonrpc":"2.0","id":3,"method":"eth_chainId"}),
        ),
        (
            "/ethereum/openapi-client-key-0123456789",
            json!({"jsonrpc":"2.0","id":4,"method":"eth_chainId"}),
        ),
        (
            "/ethereum/not-a-key-0000000000000000",
            json!({"jsonrpc":"2.0","id":5,"method":"eth_chainId"}),
        ),
    ] {
        let (s, _) = ask("POST", path.into(), vec![], body.to_string().into_bytes()).await;
        answers.push(s);
    }
    let (status, content_type, body) = event_stream_start(&p, "/v1/chains/ethereum/events").await;
    answers.push(json!({
        "method": "GET", "path": "/v1/chains/ethereum/events", "query": {},
        "status": status, "content_type": content_type.split(';').next().unwrap().trim(), "body": body,
    }));

    // What the checker gets must cover every path the document has.
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    for line in spec.lines() {
        let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) else {
            continue;
        };
        let pattern: Vec<&str> = path.split('/').collect();
        let covered = answers.iter().any(|a| {
            let asked: Vec<&str> = a["path"].as_str().unwrap()[1..].split('/').collect();
            asked.len() == pattern.len()
                && asked
                    .iter()
                    .zip(&pattern)
                    .all(|(a, p)| p.starts_with('{') || a == p)
        });
        assert!(covered, "no answer of /{path} is checked");
    }

    let mut checker = Command::new(tools.join("venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/openapi_check.py"
        ))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the checker");
    {
        let mut stdin = checker.stdin.take().unwrap();
        for a in &answers {
            writeln!(stdin, "{a}").unwrap();
        }
    }
    let out = checker.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "answers that do not conform:\n{report}"
    );
    assert!(report.contains(&format!(
        "{} answers checked, 0 do not conform",
        answers.len()
    )));
    // The statuses asked for, so that the check covered errors as well as successes.
    let statuses: Vec<u64> = answers
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    for want in [200, 400, 401, 403, 404] {
        assert!(statuses.contains(&want), "no {want} among {statuses:?}");
    }
}
