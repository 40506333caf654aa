//! Answers checked before they are passed on: of two upstreams of one chain, one lies to
//! clients (the probes' and the supervisor's own calls get honest answers, so it stays in
//! rotation), weighted to be picked first. Every client answer must be the honest one, and the
//! lies must count against the liar (`outcome="invalid"`).

mod common;

use std::time::Duration;

use common::rawnode::{self, http_ok, RawNode, Reply};
use common::*;
use serde_json::{json, Value};

const HEAD: u64 = 100;
const TX: &str = "0x00000000000000000000000000000000000000000000000000000000000000aa";
const OTHER: &str = "0x00000000000000000000000000000000000000000000000000000000000000bb";

/// The honest answer to a client call, as JSON text.
fn honest(method: &str, params: &Value) -> String {
    match method {
        "eth_getBlockByNumber" => {
            let n = u64::from_str_radix(params[0].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
            rawnode::block(n, 1_700_000_000 + n)
        }
        "eth_getBlockByHash" => {
            let h = params[0].as_str().unwrap();
            format!(r#"{{"number":"0x5","hash":"{h}","transactions":[]}}"#)
        }
        "eth_getTransactionByHash" => format!(r#"{{"hash":"{TX}","nonce":"0x1"}}"#),
        "eth_getTransactionReceipt" => format!(
            r#"{{"transactionHash":"{TX}","blockNumber":"{HEAD:#x}","blockHash":"0x{HEAD:064x}","status":"0x1"}}"#
        ),
        "eth_getLogs" => r#"[{"blockNumber":"0x12","blockHash":"0x12","logIndex":"0x0"}]"#.into(),
        _ => "\"0x1\"".into(),
    }
}

/// The liar's answer: plausible, and wrong for what was asked.
fn lie(method: &str, params: &Value) -> String {
    match method {
        // `case` in the first parameter's place picks which lie (see the test).
        "eth_getBlockByNumber" => {
            let n = u64::from_str_radix(params[0].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
            if n == HEAD {
                // The right number, a block of another branch.
                format!(r#"{{"number":"{n:#x}","hash":"{OTHER}","transactions":[]}}"#)
            } else {
                rawnode::block(n + 1, 1_700_000_000 + n)
            }
        }
        "eth_getBlockByHash" => {
            format!(r#"{{"number":"0x5","hash":"{OTHER}","transactions":[]}}"#)
        }
        "eth_getTransactionByHash" => format!(r#"{{"hash":"{OTHER}","nonce":"0x1"}}"#),
        "eth_getTransactionReceipt" => format!(
            r#"{{"transactionHash":"{TX}","blockNumber":"{HEAD:#x}","blockHash":"{OTHER}","status":"0x1"}}"#
        ),
        "eth_getLogs" => r#"[{"blockNumber":"0x12","blockHash":"0x12","logIndex":"0x0"},{"blockNumber":"0x30","blockHash":"0x30","logIndex":"0x0"}]"#.into(),
        _ => "\"0x1\"".into(),
    }
}

async fn node(lies: bool) -> RawNode {
    RawNode::start(move |ex| {
        let id = ex.id();
        // Clients' calls carry string ids; the probes' and the supervisor's are numbers.
        if id.starts_with('"') {
            let method = ex.method().unwrap_or("");
            let params = ex
                .json
                .as_ref()
                .and_then(|j| j.get("params"))
                .cloned()
                .unwrap_or(Value::Null);
            let result = if lies {
                lie(method, &params)
            } else {
                honest(method, &params)
            };
            return Reply::Bytes(http_ok(&rawnode::result(&id, &result)));
        }
        rawnode::chain_answer(ex, 1, HEAD)
    })
    .await
}

async fn invalid_count(p: &Proxy) -> f64 {
    let text = p.client().request("GET", "/metrics", &[], b"").await.text();
    text.lines()
        .filter(|l| {
            l.starts_with("livechain_upstream_requests_total")
                && l.contains("upstream=\"liar\"")
                && l.contains("outcome=\"invalid\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// livechain in front of a fresh liar and an honest node, the supervisor on their head.
async fn pair() -> (Proxy, RawNode, RawNode) {
    let (liar, truth) = (node(true).await, node(false).await);
    let upstreams = format!(
        "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n\
         [chains.ethereum]\nchain_id = 1\n\
         [[chains.ethereum.upstreams]]\nname = \"liar\"\nhttp = \"{}\"\nweight = 20\n\
         [[chains.ethereum.upstreams]]\nname = \"truth\"\nhttp = \"{}\"\n",
        liar.url(),
        truth.url()
    );
    let p = Proxy::start(&upstreams, NO_CACHE).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s = chain_status(&p).await;
            s["head_hash"].as_str() == Some(&format!("0x{HEAD:064x}")) && s["usable_upstreams"] == 2
        })
        .await,
        "{}",
        chain_status(&p).await
    );
    (p, liar, truth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_upstream_s_answers_are_never_passed_on_while_another_answers() {
    let cases: Vec<(&str, Value)> = vec![
        // Another block than asked.
        ("eth_getBlockByNumber", json!(["0x50", false])),
        // The right number, another branch's block (the supervisor's canonical hash differs).
        ("eth_getBlockByNumber", json!([format!("{HEAD:#x}"), false])),
        (
            "eth_getBlockByHash",
            json!([format!("0x{:064x}", 5), false]),
        ),
        ("eth_getTransactionByHash", json!([TX])),
        // The right transaction, in a block that is not canonical.
        ("eth_getTransactionReceipt", json!([TX])),
        // A log outside the range asked.
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x10", "toBlock": "0x20"}]),
        ),
    ];
    for (method, params) in &cases {
        // Each case on its own pair: a liar's lies lower its score for the next ones.
        let (p, liar, _truth) = pair().await;
        let mut c = p.client();
        for i in 0..6 {
            let body =
                json!({"jsonrpc":"2.0","id":format!("c{i}"),"method":method,"params":params});
            let r = c.post("/ethereum", body.to_string().as_bytes()).await;
            let got = r.json();
            let want: Value = serde_json::from_str(&honest(method, params)).unwrap();
            assert_eq!(got["result"], want, "{method} {params}: {got}");
        }
        assert!(
            liar.count(method) > 0,
            "the liar was never asked {method}: the case proves nothing"
        );
        assert!(
            invalid_count(&p).await >= 1.0,
            "{method}: no invalid outcome counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_liar_left_its_answer_is_passed_on_rather_than_none() {
    // livechain's own view may be the one behind: it does not refuse what only one node says.
    let liar = node(true).await;
    let upstreams = format!(
        "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n[chains.ethereum]\nchain_id = 1\n\
         [[chains.ethereum.upstreams]]\nname = \"liar\"\nhttp = \"{}\"\n",
        liar.url()
    );
    let p = Proxy::start(&upstreams, NO_CACHE).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            chain_status(&p).await["usable_upstreams"] == 1
        })
        .await
    );
    let body = json!({"jsonrpc":"2.0","id":"c","method":"eth_getTransactionByHash","params":[TX]});
    let got = p
        .client()
        .post("/ethereum", body.to_string().as_bytes())
        .await
        .json();
    assert_eq!(got["result"]["hash"], OTHER, "{got}");
    assert!(invalid_count(&p).await >= 1.0);
}
