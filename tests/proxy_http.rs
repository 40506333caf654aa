//! JSON-RPC over HTTP through a real livechain process: routing, batches, bad input, large
//! bodies, keep-alive, upstream failures. Mock upstreams run in the test process.

mod common;

use std::time::{Duration, Instant};

use common::rawnode::{self, RawNode, Reply};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_chain_name_and_id_and_passes_answers_unchanged() {
    let eth = mock(1).await;
    let pol = mock(137).await;
    let ups = format!(
        "{}\n{}",
        upstreams_toml("ethereum", 1, &[("a", eth.url())]),
        upstreams_toml("polygon", 137, &[("p", pol.url())])
    );
    let p = Proxy::start(&ups, "").await;
    let mut c = p.client();
    for (path, want) in [
        ("/ethereum", "0x1"),
        ("/1", "0x1"),
        ("/polygon", "0x89"),
        ("/137", "0x89"),
        ("/polygon/", "0x89"),
    ] {
        let r = c.post(path, &call(7, "eth_chainId", json!([]))).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["result"], want, "{path}");
        assert_eq!(r.json()["id"], 7);
    }
    // Byte for byte what the node answers directly.
    let body = call(3, "eth_getBlockByNumber", json!(["0x10", true]));
    let direct = Client::new(eth.addr()).post("/", &body).await;
    let proxied = c.post("/ethereum", &body).await;
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.body, direct.body);
    assert_eq!(proxied.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_order_and_ids_and_invalid_elements_are_answered_in_place() {
    let eth = mock(1).await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", eth.url())]),
        NO_CACHE,
    )
    .await;
    let mut c = p.client();

    let batch = br#"[
        {"jsonrpc":"2.0","id":1.50,"method":"eth_chainId"},
        {"jsonrpc":"2.0","id":"x","method":"net_version"},
        {"jsonrpc":"2.0","method":"eth_blockNumber"},
        {"jsonrpc":"2.0","id":null,"method":"eth_chainId"},
        {"jsonrpc":"2.0","id":9,"method":"no_such_method"}
    ]"#;
    let r = c.post("/ethereum", batch).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains(r#""id":1.50"#), "raw id kept: {text}");
    let v = r.json();
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 4, "notification gets no answer: {text}");
    assert_eq!(arr[0]["result"], "0x1");
    assert_eq!(arr[1]["id"], "x");
    assert_eq!(arr[1]["result"], "1");
    assert!(arr[2]["id"].is_null());
    assert_eq!(arr[3]["error"]["code"], -32601);

    // Invalid elements are answered by livechain in their place; the rest still goes upstream.
    let before = stats(&eth).await["calls"].as_u64().unwrap();
    let mixed = br#"[{"jsonrpc":"2.0","id":"a","method":"eth_chainId"}, 42,
                    {"jsonrpc":"1.0","id":"b","method":"eth_chainId"},
                    {"jsonrpc":"2.0","id":"c","method":"net_version"}]"#;
    let v = c.post("/1", mixed).await.json();
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 4);
    assert_eq!(
        (arr[0]["id"].clone(), arr[0]["result"].clone()),
        (json!("a"), json!("0x1"))
    );
    assert_eq!(arr[1]["error"]["code"], -32600);
    assert!(arr[1]["id"].is_null());
    assert_eq!(
        (arr[2]["id"].clone(), arr[2]["error"]["code"].clone()),
        (json!("b"), json!(-32600))
    );
    assert_eq!(
        (arr[3]["id"].clone(), arr[3]["result"].clone()),
        (json!("c"), json!("1"))
    );
    let after = stats(&eth).await["calls"].as_u64().unwrap();
    assert_eq!(
        after - before,
        2,
        "only the two valid calls reach the upstream"
    );
}

/// (method, path, headers, body, expected status, expected code, expected id)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Vec<u8>,
    u16,
    i64,
    serde_json::Value,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_jsonrpc_errors_and_never_forwarded() {
    let eth = mock(1).await;
    // Probes only at start: the mock's request count then moves only with forwarded requests.
    let ups = format!(
        "[probe]\ninterval_ms = 60000\n{}",
        upstreams_toml("ethereum", 1, &[("a", eth.url())])
    );
    let p = Proxy::start(&ups, "max_body_bytes = 4096").await;
    let before = stats(&eth).await["requests"].as_u64().unwrap();
    let mut c = p.client();
    let json_ct = [("content-type", "application/json")];

    // (method, path, headers, body, status, code, id)
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/ethereum",
            &json_ct,
            b"{not json".to_vec(),
            400,
            -32700,
            json!(null),
        ),
        (
            "POST",
            "/ethereum",
            &json_ct,
            b"".to_vec(),
            400,
            -32700,
            json!(null),
        ),
        (
            "POST",
            "/ethereum",
            &json_ct,
            b"42".to_vec(),
            400,
            -32600,
            json!(null),
        ),
        (
            "POST",
            "/ethereum",
            &json_ct,
            b"[]".to_vec(),
            400,
            -32600,
            json!(null),
        ),
        (
            "POST",
            "/ethereum",
            &json_ct,
            br#"{"jsonrpc":"2.0","id":"k","method":5}"#.to_vec(),
            400,
            -32600,
            json!("k"),
        ),
        (
            "POST",
            "/ethereum",
            &json_ct,
            br#"{"jsonrpc":"2.0","id":3}"#.to_vec(),
            400,
            -32600,
            json!(3),
        ),
        (
            "POST",
            "/solana",
            &json_ct,
            call(1, "eth_chainId", json!([])),
            404,
            -32600,
            json!(1),
        ),
        (
            "POST",
            "/999",
            &json_ct,
            call(1, "eth_chainId", json!([])),
            404,
            -32600,
            json!(1),
        ),
        (
            "POST",
            "/",
            &json_ct,
            call(1, "eth_chainId", json!([])),
            404,
            -32600,
            json!(1),
        ),
        (
            "PUT",
            "/ethereum",
            &json_ct,
            call(1, "eth_chainId", json!([])),
            405,
            -32600,
            json!(null),
        ),
        (
            "GET",
            "/ethereum",
            &[],
            Vec::new(),
            405,
            -32600,
            json!(null),
        ),
        (
            "POST",
            "/ethereum",
            &[("content-type", "text/plain")],
            call(1, "eth_chainId", json!([])),
            415,
            -32600,
            json!(1),
        ),
    ];
    for (method, path, headers, body, status, code, id) in cases {
        let r = c.request(method, path, headers, &body).await;
        let what = format!("{method} {path} {}", String::from_utf8_lossy(&body));
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let v = r.json();
        assert_eq!(v["jsonrpc"], "2.0", "{what}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert_eq!(v["id"], id, "{what}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        if status == 405 {
            assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
        }
    }
    // A batch to an unknown chain: an error for each call, with its id, none for a
    // notification; an invalid element keeps its own error.
    let batch = br#"[{"jsonrpc":"2.0","id":"a","method":"eth_chainId"},
        {"jsonrpc":"2.0","method":"eth_chainId"},{"jsonrpc":"2.0","id":9},
        {"jsonrpc":"2.0","id":[1],"method":"eth_chainId"}]"#;
    let r = c.request("POST", "/solana", &json_ct, batch).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let answers = r.json();
    let answers = answers.as_array().expect("an array for a batch");
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0]["id"], "a");
    assert!(answers[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown chain"));
    assert_eq!(answers[1]["id"], 9);
    assert!(!answers[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown chain"));
    assert_eq!(answers[2]["id"], json!(null), "an array id is not echoed");
    // Only notifications: one error, id null (over HTTP an answer is still owed).
    let r = c
        .request(
            "POST",
            "/solana",
            &json_ct,
            br#"{"jsonrpc":"2.0","method":"eth_chainId"}"#,
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["id"], json!(null));

    // Too large: refused without reading it, and the connection is closed.
    let big = vec![b' '; 5000];
    let r = c.request("POST", "/ethereum", &json_ct, &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], -32600);
    // Chunked, so the size is only known while reading.
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = Client::new(p.addr)
        .request(
            "POST",
            "/ethereum",
            &[
                ("content-type", "application/json"),
                ("transfer-encoding", "chunked"),
            ],
            &chunked,
        )
        .await;
    assert_eq!(r.status, 413);

    let after = stats(&eth).await["requests"].as_u64().unwrap();
    assert_eq!(after, before, "nothing was forwarded upstream");

    // Content types nodes and providers accept, or that curl sends by default, work.
    for ct in [
        None,
        Some("application/json; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = ct.map(|ct| ("content-type", ct)).into_iter().collect();
        let r = c
            .request(
                "POST",
                "/ethereum",
                &headers,
                &call(5, "eth_chainId", json!([])),
            )
            .await;
        assert_eq!(r.status, 200, "content type {ct:?}");
        assert_eq!(r.json()["result"], "0x1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_get_no_answer_body() {
    let eth = mock(1).await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("a", eth.url())]), "").await;
    let mut c = p.client();
    let r = c
        .post("/ethereum", br#"{"jsonrpc":"2.0","method":"eth_chainId"}"#)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{}", r.text());
    let r = c
        .post(
            "/ethereum",
            br#"[{"jsonrpc":"2.0","method":"eth_chainId"},{"jsonrpc":"2.0","method":"net_version"}]"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{}", r.text());
    // The node still received them.
    assert!(stats(&eth).await["calls"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_and_large_response_pass_intact() {
    let eth = mock(1).await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("a", eth.url())]), "").await;
    let mut c = p.client();

    // 200 KiB of calldata: far above Pingora's 64 KiB replay buffer.
    let calldata: String = (0..200 * 1024)
        .map(|i| char::from(b"0123456789abcdef"[i % 16]))
        .collect();
    let raw = format!("0x{calldata}");
    let body = call(1, "mock_echo", json!([{ "data": raw }]));
    assert!(body.len() > 200 * 1024);
    let r = c.post("/ethereum", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"][0]["data"], raw);

    let r = c
        .post(
            "/ethereum",
            &call(2, "eth_sendRawTransaction", json!([raw])),
        )
        .await;
    assert_eq!(r.json()["result"], livechain::mock::tx_hash(raw.as_bytes()));

    // A 5 MiB answer.
    let size = 5 * 1024 * 1024;
    let r = c
        .post("/ethereum", &call(3, "mock_blob", json!([size])))
        .await;
    assert_eq!(r.status, 200);
    let blob = r.json()["result"].as_str().expect("string result").len();
    assert_eq!(blob, size);
    // And the connection is still good afterwards.
    let r = c
        .post("/ethereum", &call(4, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.json()["result"], "0x1");
    assert_eq!(c.connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered() {
    let eth = mock(1).await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("a", eth.url())]), "").await;
    let mut c = p.client();
    let r = c
        .request(
            "POST",
            "/ethereum",
            &[
                ("content-type", "application/json"),
                ("expect", "100-continue"),
            ],
            &call(1, "eth_chainId", json!([])),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"], "0x1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_errors_and_upstream_connections_are_pooled() {
    let eth = mock(1).await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("a", eth.url())]), "").await;
    let mut c = p.client();
    for round in 0..3 {
        assert_eq!(c.post("/ethereum", b"{oops").await.status, 400);
        assert_eq!(
            c.post("/nowhere", &call(1, "eth_chainId", json!([])))
                .await
                .status,
            404
        );
        assert_eq!(c.request("GET", "/ethereum", &[], b"").await.status, 405);
        let r = c
            .post("/ethereum", &call(round, "eth_chainId", json!([])))
            .await;
        assert_eq!(r.json()["result"], "0x1");
    }
    assert_eq!(c.connects, 1, "one client connection for every answer");

    for i in 0..50 {
        let r = c
            .post("/ethereum", &call(i, "eth_blockNumber", json!([])))
            .await;
        assert_eq!(r.status, 200);
    }
    let accepted = stats(&eth).await["connections_accepted"].as_u64().unwrap();
    // The stats request itself is one connection; pooled upstream connections a handful.
    assert!(
        accepted <= 4,
        "upstream connections reused, got {accepted} for 53 requests"
    );
}

/// A node that answers livechain's probes (so it is verified and takes traffic) and does `rest`
/// with every other call.
async fn probed_node(rest: fn() -> Reply) -> RawNode {
    RawNode::start(move |ex| {
        rawnode::probe_answer(ex, 1, 100, rawnode::live(100)).unwrap_or_else(rest)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_never_reached_gets_no_traffic_and_the_answer_says_so_at_once() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("down", closed)]), "").await;
    let started = Instant::now();
    let r = p
        .client()
        .post("/ethereum", &call(77, "eth_gasPrice", json!([])))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["id"], 77);
    assert_eq!(r.json()["error"]["code"], -32011);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_calls_gives_502_with_the_request_id_quickly() {
    let node = probed_node(|| Reply::Close).await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("drops", node.url())]), "").await;
    let mut c = p.client();
    let started = Instant::now();
    let r = c
        .post("/ethereum", &call(77, "eth_gasPrice", json!([])))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], 77);
    assert_eq!(v["error"]["code"], -32603);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Batches get one error per call, each with its id.
    let r = c
        .post(
            "/ethereum",
            br#"[{"jsonrpc":"2.0","id":"p","method":"eth_gasPrice"},{"jsonrpc":"2.0","id":"q","method":"eth_blockNumber"}]"#,
        )
        .await;
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v[0]["id"], "p");
    assert_eq!(v[1]["id"], "q");
    assert_eq!(v[1]["error"]["code"], -32603);
    // Except the chain id, which wallets ask before sending: answered from the verified id.
    let r = c
        .post("/ethereum", &call(78, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "0x1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_cut_off_at_the_request_timeout() {
    let node = probed_node(|| Reply::Silent).await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("silent", node.url())]),
        "request_timeout_ms = 1500",
    )
    .await;
    let mut c = p.client();
    let started = Instant::now();
    let r = c
        .post("/ethereum", &call(5, "eth_gasPrice", json!([])))
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["id"], 5);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3000),
        "answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_upstreams_are_failed_over_and_all_failing_gives_502() {
    let good = mock(1).await;
    let bad = mock(1).await;
    control(&bad, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let ups = upstreams_toml(
        "ethereum",
        1,
        &[("bad", bad.url()), ("down", closed), ("good", good.url())],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut c = p.client();
    for i in 0..30 {
        let r = c
            .post("/ethereum", &call(i, "eth_chainId", json!([])))
            .await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["result"], "0x1");
    }
    control(&good, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    let r = c
        .post("/ethereum", &call(99, "eth_gasPrice", json!([])))
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["id"], 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_secrets_never_reach_logs_or_answers() {
    let node = probed_node(|| {
        Reply::Bytes(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_vec())
    })
    .await;
    let secret = "SECRETKEY0123456789abcdef";
    let addr = node.addr();
    let ups = format!(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"keyed\"\n\
         http = \"http://user:pw-{secret}@{addr}/v3/{secret}?key={secret}\"\n\
         headers = {{ \"x-api-key\" = \"{secret}\" }}\n"
    );
    let p = Proxy::start(&ups, "").await;
    let mut c = p.client();
    let r = c
        .post("/ethereum", &call(1, "eth_gasPrice", json!([])))
        .await;
    assert_eq!(r.status, 502);
    assert!(!r.text().contains(secret), "{}", r.text());
    // Give the access log line a moment to be flushed, bounded.
    let until = Instant::now() + Duration::from_secs(5);
    while !p.log().contains("livechain::access") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = p.log();
    assert!(
        log.contains("livechain::access"),
        "access log written: {log}"
    );
    assert!(!log.contains(secret), "secret leaked into the log:\n{log}");
}

/// A node that answers a notification anyway: the client still gets no answer body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_gets_no_answer_whatever_the_node_sends() {
    let node = probed_node(|| {
        Reply::Bytes(rawnode::http_ok(
            r#"{"jsonrpc":"2.0","id":null,"result":"0x1"}"#,
        ))
    })
    .await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("chatty", node.url())]),
        "",
    )
    .await;
    let r = p
        .client()
        .post("/ethereum", br#"{"jsonrpc":"2.0","method":"eth_gasPrice"}"#)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{}", r.text());
    assert_eq!(node.count("eth_gasPrice"), 1, "it was delivered");
}
