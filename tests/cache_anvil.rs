//! The response cache end to end with a real node: one anvil dev node behind a counting
//! forwarder (`common::forward`, which records the JSON-RPC calls relayed to anvil) behind
//! livechain. Answers of finalized blocks are asked once however many clients ask, `latest`
//! answers are never older than the head livechain reports (after a transfer, and with a block a
//! second) and reach anvil about once per head, nothing of a block replaced by `anvil_reorg` is
//! served once livechain has the new head, `Cache-Control: no-cache` reaches the node, and a
//! batch half in the cache sends only the other half (livechain sends the calls of a batch that
//! need the same block height as one sub-batch, so `latest` calls and calls at a number travel
//! apart).
//!
//! anvil automines (a block per transaction, or per `anvil_mine`), so the head moves only when a
//! test says, and reports `finalized` 64 blocks below its head (`safe` 32): each test first mines
//! 100 blocks so that livechain's supervisor learns a finalized block from the tags. livechain
//! follows anvil's heads over its WebSocket (not counted) and polls `["latest", false]` blocks
//! when it is quiet, so the tests count other calls.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::anvil::*;
use common::forward::Forwarder;
use common::http::Response;
use common::*;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// An address no one has used: its balance is 0 until a test sends to it.
const FRESH: &str = "0x00000000000000000000000000000000000ca11e";
const ONE_ETHER: &str = "0xde0b6b3a7640000";
const TWO_ETHER: &str = "0x1bc16d674ec80000";

/// anvil, the counting forwarder in front of it, and livechain in front of that.
struct Setup {
    node: Anvil,
    relay: Forwarder,
    p: Proxy,
}

/// anvil with a transfer in block 1 and 100 blocks on top (head 101, `finalized` 37), and
/// livechain (cache on, as by default) following it, settled on its head.
async fn setup() -> Setup {
    let dir = tools();
    let node = Anvil::start_with(&dir, 0, &[]).await;
    let tx = node
        .result(
            "eth_sendTransaction",
            json!([{ "from": DEV, "to": RECIPIENT, "value": ONE_ETHER }]),
        )
        .await;
    let receipt = node
        .receipt(tx.as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(receipt["blockNumber"], "0x1", "{receipt}");
    node.result("anvil_mine", json!([hex(100)])).await;
    assert_eq!(node.block_number().await, 101);
    let relay = Forwarder::counting(node.addr).await;
    let p = Proxy::start(&livechain_upstreams(&[("anvil", relay.addr)]), "").await;
    wait_up(&p, &["anvil"]).await;
    let s = settled(&p, &node).await;
    assert_eq!(s["finalized"], 37, "anvil's finalized tag: {s}");
    Setup { node, relay, p }
}

/// `/v1/chains/anvil/status` of `p`.
async fn status(p: &Proxy) -> Value {
    let r = p
        .client()
        .request("GET", "/v1/chains/anvil/status", &[], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits (bounded) until livechain's head is anvil's head, by number and hash, and it knows a
/// finalized block; its chain status then.
async fn settled(p: &Proxy, node: &Anvil) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = node.block_number().await;
        let hash = node.hash(n).await;
        let s = status(p).await;
        if s["head"] == n && s["head_hash"] == hash.as_str() && s["finalized"].is_u64() {
            return s;
        }
        assert!(
            Instant::now() < until,
            "livechain did not settle on anvil's head {n} ({hash}): {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call through livechain: its answer and `X-Cache`.
async fn ask(c: &mut Client, id: Value, method: &str, params: &Value) -> (Value, Option<String>) {
    ask_with(c, id, method, params, &[]).await
}

async fn ask_with(
    c: &mut Client,
    id: Value,
    method: &str,
    params: &Value,
    headers: &[(&str, &str)],
) -> (Value, Option<String>) {
    let body = serde_json::to_vec(
        &json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }),
    )
    .unwrap();
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let r: Response = c.request("POST", "/anvil", &all, &body).await;
    assert_eq!(r.status, 200, "{method} {params}: {}", r.text());
    let v = r.json();
    assert_eq!(v["id"], id, "{method} {params}: {v}");
    assert!(v.get("error").is_none(), "{method} {params}: {v}");
    (v, r.header("x-cache").map(str::to_owned))
}

/// One round of [`sample`]: livechain's chain status read just before the calls, and their
/// answers' results.
struct Round {
    head: u64,
    head_hash: String,
    results: Vec<Value>,
}

/// Asks `calls` through livechain round after round, reading its chain status before each round,
/// until `stop` is set (or 60 s or 20,000 rounds pass); `rounds` counts the rounds done.
fn sample(
    p: &Proxy,
    calls: Vec<(&'static str, Value)>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
) -> JoinHandle<Vec<Round>> {
    let addr = p.addr;
    tokio::spawn(async move {
        let (mut st, mut c) = (Client::new(addr), Client::new(addr));
        let until = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        let mut id = 0u64;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until && out.len() < 20_000 {
            let s = st
                .request("GET", "/v1/chains/anvil/status", &[], b"")
                .await
                .json();
            let mut results = Vec::new();
            for (method, params) in &calls {
                id += 1;
                let (v, _) = ask(&mut c, json!(id), method, params).await;
                results.push(v["result"].clone());
            }
            out.push(Round {
                head: s["head"].as_u64().expect("a head"),
                head_hash: s["head_hash"].as_str().expect("a head hash").to_owned(),
                results,
            });
            rounds.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    })
}

/// Waits (bounded) until `rounds` reaches `n`.
async fn wait_rounds(rounds: &AtomicUsize, n: usize) {
    let done = eventually(Duration::from_secs(30), || async {
        rounds.load(Ordering::SeqCst) >= n
    })
    .await;
    assert!(done, "{} rounds of {n}", rounds.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_block_asked_by_1000_calls_reaches_anvil_once() {
    let Setup { node, relay, p } = setup().await;
    // Block 1 (with the transfer, transactions in full) is finalized.
    let params = json!([hex(1), true]);
    let direct = node.result("eth_getBlockByNumber", params.clone()).await;
    assert_eq!(direct["transactions"].as_array().map(Vec::len), Some(1));
    assert_eq!(relay.asked("eth_getBlockByNumber", &params), 0);
    // 100 clients, each on its own connection, 10 calls each, ids of both kinds.
    let clients: Vec<_> = (0..100u64)
        .map(|client| {
            let addr = p.addr;
            let params = params.clone();
            tokio::spawn(async move {
                let mut c = Client::new(addr);
                let mut out = Vec::new();
                for i in 0..10u64 {
                    let id = if client % 2 == 0 {
                        json!(client * 100 + i)
                    } else {
                        json!(format!("client-{client}-{i}"))
                    };
                    // ask checks that the answer carries this id.
                    let (v, x_cache) = ask(&mut c, id, "eth_getBlockByNumber", &params).await;
                    out.push((v["result"].clone(), x_cache));
                }
                out
            })
        })
        .collect();
    let mut x_caches = Vec::new();
    for t in clients {
        for (result, x_cache) in t.await.unwrap() {
            assert_eq!(result, direct, "a block unlike anvil's");
            x_caches.push(x_cache);
        }
    }
    assert_eq!(x_caches.len(), 1000);
    assert_eq!(relay.unreadable(), 0);
    assert_eq!(
        relay.asked("eth_getBlockByNumber", &params),
        1,
        "calls of eth_getBlockByNumber {params} that reached anvil"
    );
    // Each client's later calls come after an answer was kept.
    let hits = x_caches
        .iter()
        .filter(|x| x.as_deref() == Some("HIT"))
        .count();
    let misses = x_caches
        .iter()
        .filter(|x| x.as_deref() == Some("MISS"))
        .count();
    assert!(
        hits >= 900 && hits + misses == 1000,
        "{hits} HIT, {misses} MISS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_balance_is_never_older_than_livechains_head_after_a_transfer() {
    let Setup { node, relay, p } = setup().await;
    let latest = json!([FRESH, "latest"]);
    let mut c = p.client();
    // The balance before the transfer is kept for the head.
    let (v, x_cache) = ask(&mut c, json!(1), "eth_getBalance", &latest).await;
    assert_eq!(
        (v["result"].as_str(), x_cache.as_deref()),
        (Some("0x0"), Some("MISS"))
    );
    let (v, x_cache) = ask(&mut c, json!(2), "eth_getBalance", &latest).await;
    assert_eq!(
        (v["result"].as_str(), x_cache.as_deref()),
        (Some("0x0"), Some("HIT"))
    );

    let (stop, rounds) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = sample(
        &p,
        vec![("eth_getBalance", latest.clone())],
        stop.clone(),
        rounds.clone(),
    );
    wait_rounds(&rounds, 10).await;
    // A transfer through livechain, as a user sends one: cast signs it and waits for its receipt.
    let url = format!("http://{}/anvil", p.addr);
    let sent = tokio::task::spawn_blocking(move || {
        cast(
            &tools(),
            &[
                "send",
                "--rpc-url",
                &url,
                "--private-key",
                DEV_KEY,
                FRESH,
                "--value",
                "1ether",
                "--json",
            ],
        )
    })
    .await
    .unwrap();
    let sent: Value = serde_json::from_str(&sent).expect("cast send --json");
    assert_eq!(sent["status"], "0x1", "{sent}");
    let block = quantity(&sent["blockNumber"]);
    assert_eq!(block, 102);
    settled(&p, &node).await;
    let n = rounds.load(Ordering::SeqCst);
    wait_rounds(&rounds, n + 30).await;
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.unwrap();

    let before = seen.iter().filter(|r| r.head < block).count();
    let after: Vec<&Round> = seen.iter().filter(|r| r.head >= block).collect();
    assert!(
        before >= 10 && after.len() >= 30,
        "{before} rounds before, {} after",
        after.len()
    );
    for r in &after {
        assert_eq!(
            r.results[0], ONE_ETHER,
            "balance of {FRESH} asked when livechain's head was {} (the transfer is in {block})",
            r.head
        );
    }
    // anvil says so too, and the new balance is kept: asking again does not reach anvil.
    assert_eq!(
        node.result("eth_getBalance", latest.clone()).await,
        ONE_ETHER
    );
    let asked = relay.asked("eth_getBalance", &latest);
    let (v, x_cache) = ask(&mut c, json!(3), "eth_getBalance", &latest).await;
    assert_eq!(
        (v["result"].as_str(), x_cache.as_deref()),
        (Some(ONE_ETHER), Some("HIT"))
    );
    assert_eq!(relay.asked("eth_getBalance", &latest), asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_a_block_replaced_by_a_reorg_is_served_once_livechain_has_the_new_head() {
    let Setup { node, relay, p } = setup().await;
    // Block 102 holds a transfer to FRESH; 103 and 104 are empty. All above finalized (40).
    let tx = node
        .result(
            "eth_sendTransaction",
            json!([{ "from": DEV, "to": FRESH, "value": ONE_ETHER }]),
        )
        .await;
    let receipt = node
        .receipt(tx.as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(receipt["blockNumber"], hex(102));
    node.result("anvil_mine", json!([hex(2)])).await;
    let s = settled(&p, &node).await;
    assert_eq!(s["head"], 104);
    assert!(s["finalized"].as_u64() < Some(102), "{s}");
    let old = hashes(&node).await;

    let calls: Vec<(&'static str, Value)> = vec![
        ("eth_getBlockByNumber", json!([hex(102), false])),
        ("eth_getBlockByNumber", json!([hex(103), false])),
        // (Full transactions: livechain's supervisor polls `["latest", false]` itself.)
        ("eth_getBlockByNumber", json!(["latest", true])),
        ("eth_getBalance", json!([FRESH, "latest"])),
        ("eth_getTransactionReceipt", json!([tx])),
    ];
    // Each kept: a second call is a HIT, and nothing more reaches anvil.
    let mut c = p.client();
    for (method, params) in &calls[..4] {
        let (first, x1) = ask(&mut c, json!(1), method, params).await;
        let (again, x2) = ask(&mut c, json!(2), method, params).await;
        assert_eq!(
            (x1.as_deref(), x2.as_deref()),
            (Some("MISS"), Some("HIT")),
            "{method} {params}"
        );
        assert_eq!(first["result"], again["result"]);
        assert_eq!(relay.asked(method, params), 1, "{method} {params}");
    }
    // A receipt in a block not finalized is never kept.
    for id in [1, 2] {
        let (v, x_cache) = ask(&mut c, json!(id), calls[4].0, &calls[4].1).await;
        assert_eq!(x_cache.as_deref(), Some("MISS"));
        assert_eq!(v["result"]["blockHash"], old[0].as_str(), "{v}");
    }

    let (stop, rounds) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = sample(&p, calls.clone(), stop.clone(), rounds.clone());
    wait_rounds(&rounds, 10).await;
    // Blocks 102..104 replaced: in the new 102 REORGER sends FRESH two ether (and DEV's one is
    // gone); the head keeps its number.
    let pairs = json!([[{ "from": REORGER, "to": FRESH, "value": TWO_ETHER }, 0]]);
    node.result("anvil_reorg", json!([3, pairs])).await;
    let at_reorg = rounds.load(Ordering::SeqCst);
    let new = hashes(&node).await;
    for (o, n) in old.iter().zip(&new) {
        assert_ne!(o, n, "a block not replaced by anvil_reorg");
    }
    assert_eq!(node.block_number().await, 104);
    assert_eq!(
        node.result("eth_getBalance", json!([FRESH, "latest"]))
            .await,
        TWO_ETHER
    );
    // livechain takes in the new head; then some more rounds.
    let s = settled(&p, &node).await;
    assert_eq!(s["head_hash"], new[2].as_str());
    let n = rounds.load(Ordering::SeqCst);
    wait_rounds(&rounds, n + 30).await;
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.unwrap();

    let hash_of = |v: &Value| v["hash"].as_str().unwrap_or("none").to_owned();
    // The window between anvil's reorg and livechain taking it in: old answers may still be
    // served then (livechain cannot know yet), never after.
    let window: Vec<&Round> = seen[at_reorg..]
        .iter()
        .take_while(|r| r.head_hash == old[2])
        .collect();
    eprintln!(
        "{} rounds before the reorg, {} in the window ({} of them served the replaced latest)",
        at_reorg,
        window.len(),
        window
            .iter()
            .filter(|r| hash_of(&r.results[2]) == old[2])
            .count()
    );
    let mut after = 0;
    for r in &seen {
        if r.head_hash != new[2] {
            assert_eq!(r.head_hash, old[2], "a head neither old nor new");
            continue;
        }
        after += 1;
        let got = (
            hash_of(&r.results[0]),
            hash_of(&r.results[1]),
            hash_of(&r.results[2]),
            r.results[3].clone(),
            r.results[4].clone(),
        );
        let want = (
            new[0].clone(),
            new[1].clone(),
            new[2].clone(),
            json!(TWO_ETHER),
            Value::Null,
        );
        assert_eq!(
            got, want,
            "blocks 102, 103, latest, FRESH's balance and the receipt of the transfer dropped by \
             the reorg, asked once livechain's head was the new 104 (replaced hashes: {old:?})"
        );
    }
    assert!(
        after >= 30,
        "{after} rounds after the reorg of {}",
        seen.len()
    );
    // What livechain serves now is what anvil says, block for block.
    for (method, params) in &calls {
        let (v, _) = ask(&mut c, json!(3), method, params).await;
        assert_eq!(
            v["result"],
            node.result(method, params.clone()).await,
            "{method} {params}"
        );
    }
}

/// anvil's hashes of blocks 102, 103 and 104.
async fn hashes(node: &Anvil) -> Vec<String> {
    let mut out = Vec::new();
    for n in 102..=104 {
        out.push(node.hash(n).await);
    }
    out
}

/// POSTs a batch through livechain: its answers.
async fn send(c: &mut Client, body: Vec<u8>) -> Vec<Value> {
    let r = c.post("/anvil", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().expect("a batch answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_reaches_anvil_every_time_and_its_answer_is_kept() {
    let Setup { node, relay, p } = setup().await;
    let mut c = p.client();
    let no_cache = [("cache-control", "no-cache")];
    let pragma = [("pragma", "no-cache")];
    // A finalized block's balance and a `latest` one.
    for params in [json!([DEV, hex(30)]), json!([DEV, "latest"])] {
        let (first, x_cache) = ask(&mut c, json!(1), "eth_getBalance", &params).await;
        assert_eq!(x_cache.as_deref(), Some("MISS"), "{params}");
        assert_eq!(relay.asked("eth_getBalance", &params), 1, "{params}");
        for (i, headers) in [&no_cache[..], &pragma[..]]
            .iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            let (v, x_cache) =
                ask_with(&mut c, json!(10 + i), "eth_getBalance", &params, headers).await;
            assert_eq!(x_cache.as_deref(), Some("BYPASS"), "{params} {headers:?}");
            assert_eq!(v["result"], first["result"]);
            assert_eq!(
                relay.asked("eth_getBalance", &params),
                2 + i,
                "{params} {headers:?}"
            );
        }
        let (v, x_cache) = ask(&mut c, json!(2), "eth_getBalance", &params).await;
        assert_eq!(x_cache.as_deref(), Some("HIT"), "{params}");
        assert_eq!(
            v["result"],
            node.result("eth_getBalance", params.clone()).await
        );
        assert_eq!(relay.asked("eth_getBalance", &params), 7, "{params}");
    }

    // anvil_setBalance changes a balance without a block: the head stays, so does the kept
    // answer, until a no-cache call fetches the new one, which is then kept in its place.
    let latest = json!([FRESH, "latest"]);
    let (v, _) = ask(&mut c, json!(3), "eth_getBalance", &latest).await;
    assert_eq!(v["result"], "0x0");
    node.result("anvil_setBalance", json!([FRESH, "0x1234"]))
        .await;
    assert_eq!(
        node.block_number().await,
        101,
        "anvil_setBalance mined a block"
    );
    let (v, x_cache) = ask(&mut c, json!(4), "eth_getBalance", &latest).await;
    assert_eq!(
        (v["result"].as_str(), x_cache.as_deref()),
        (Some("0x0"), Some("HIT"))
    );
    let (v, x_cache) = ask_with(&mut c, json!(5), "eth_getBalance", &latest, &no_cache).await;
    assert_eq!(
        (v["result"].as_str(), x_cache.as_deref()),
        (Some("0x1234"), Some("BYPASS"))
    );
    let (v, x_cache) = ask(&mut c, json!(6), "eth_getBalance", &latest).await;
    assert_eq!(
        (v["result"].as_str(), x_cache.as_deref()),
        (Some("0x1234"), Some("HIT"))
    );
    assert_eq!(relay.asked("eth_getBalance", &latest), 2);
    assert_eq!(relay.unreadable(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_in_the_cache_sends_anvil_only_the_other_half() {
    let Setup { node, relay, p } = setup().await;
    let calls = [
        ("eth_getBalance", json!([DEV, hex(30)])),
        ("eth_getBalance", json!([RECIPIENT, "latest"])),
        ("eth_getBlockByNumber", json!([hex(1), false])),
        ("eth_getTransactionCount", json!([DEV, "latest"])),
        ("eth_getBalance", json!([FRESH, "latest"])),
    ];
    let batch = |ids: &[Value], which: &[usize]| -> Vec<u8> {
        let items: Vec<Value> = which
            .iter()
            .zip(ids)
            .map(|(&i, id)| {
                json!({ "jsonrpc": "2.0", "id": id, "method": calls[i].0, "params": calls[i].1 })
            })
            .collect();
        serde_json::to_vec(&items).unwrap()
    };
    let mut c = p.client();
    let mut want = Vec::new();
    for (method, params) in &calls {
        want.push(node.result(method, params.clone()).await);
    }
    // The test's calls that reached anvil from the `from`th request on, by request (livechain
    // sends the calls of a batch that need the same block height as one sub-batch).
    let ours = |from: usize| -> Vec<Vec<usize>> {
        relay.requests()[from..]
            .iter()
            .map(|r| {
                r.calls
                    .iter()
                    .filter_map(|(m, p)| calls.iter().position(|(cm, cp)| m == cm && p == cp))
                    .collect::<Vec<usize>>()
            })
            .filter(|r| !r.is_empty())
            .collect()
    };
    let sorted = |requests: Vec<Vec<usize>>| {
        let mut all: Vec<usize> = requests.into_iter().flatten().collect();
        all.sort();
        all
    };
    // Answers as (id, result), in order.
    let answers = |batch: &[Value]| -> Vec<(Value, Value)> {
        batch
            .iter()
            .map(|a| (a["id"].clone(), a["result"].clone()))
            .collect()
    };
    let expect = |ids: &[Value], which: &[usize]| -> Vec<(Value, Value)> {
        ids.iter()
            .cloned()
            .zip(which.iter().map(|&i| want[i].clone()))
            .collect()
    };

    // Two calls: both sent.
    let mark = relay.requests().len();
    let ids = [json!(1), json!(2)];
    let first = send(&mut c, batch(&ids, &[0, 1])).await;
    assert_eq!(sorted(ours(mark)), [0, 1]);
    assert_eq!(answers(&first), expect(&ids, &[0, 1]));

    // Those two and three more, in another order and with other ids: only the three not kept
    // reach anvil, each once; the two at `latest` in one sub-batch.
    let mark = relay.requests().len();
    let ids = [json!("a"), json!("b"), json!("c"), json!("d"), json!("e")];
    let order = [3, 0, 2, 1, 4];
    let mixed = send(&mut c, batch(&ids, &order)).await;
    let sent = ours(mark);
    assert_eq!(sorted(sent.clone()), [2, 3, 4], "{sent:?}");
    assert!(sent.contains(&vec![3, 4]), "{sent:?}");
    assert_eq!(answers(&mixed), expect(&ids, &order));

    // Again: all kept, nothing reaches anvil.
    let mark = relay.requests().len();
    let ids = [json!(7), json!(8), json!(9), json!(10), json!(11)];
    let order = [0, 1, 2, 3, 4];
    let again = send(&mut c, batch(&ids, &order)).await;
    assert_eq!(ours(mark), Vec::<Vec<usize>>::new());
    assert_eq!(answers(&again), expect(&ids, &order));

    // With no-cache, the whole batch reaches anvil.
    let mark = relay.requests().len();
    let headers = [
        ("content-type", "application/json"),
        ("cache-control", "no-cache"),
    ];
    let r = c
        .request("POST", "/anvil", &headers, &batch(&ids, &order))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.json().as_array().cloned().expect("a batch answer");
    assert_eq!(sorted(ours(mark)), [0, 1, 2, 3, 4]);
    assert_eq!(answers(&fresh), expect(&ids, &order));
    assert_eq!(relay.unreadable(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_block_a_second_latest_answers_are_never_older_than_livechains_head() {
    let Setup { node, relay, p } = setup().await;
    // A block a second, each with transactions from DEV (a call of FRESH, an account without
    // code, every 200 ms): DEV's nonce and balance change with every block.
    node.result("evm_setIntervalMining", json!([1])).await;
    let ticker = Ticker::start_with(node.addr, FRESH, DEV, Duration::from_millis(200));
    let calls: Vec<(&'static str, Value)> = vec![
        ("eth_getTransactionCount", json!([DEV, "latest"])),
        ("eth_getBalance", json!([DEV, "latest"])),
        ("eth_getBlockByNumber", json!(["latest", true])),
    ];
    let asked_before: Vec<usize> = calls.iter().map(|(m, p)| relay.asked(m, p)).collect();
    let (stop, rounds) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = sample(&p, calls.clone(), stop.clone(), rounds.clone());
    let start = node.block_number().await;
    node.wait_block(start + 6, Duration::from_secs(20)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.unwrap();
    let (sent, failed) = ticker.stop().await;
    assert!(
        sent >= 20 && failed == 0,
        "ticker: {sent} sent, {failed} failed"
    );
    let (first, last) = (seen[0].head, seen[seen.len() - 1].head);
    assert!(last >= first + 5, "heads {first}..{last}");

    // The last block at which anvil says DEV had each nonce and balance.
    let mut nonce_at = std::collections::HashMap::new();
    let mut balance_at = std::collections::HashMap::new();
    for n in first.saturating_sub(2)..=node.block_number().await {
        let nonce = node
            .result("eth_getTransactionCount", json!([DEV, hex(n)]))
            .await;
        nonce_at.insert(nonce, n);
        let balance = node.result("eth_getBalance", json!([DEV, hex(n)])).await;
        balance_at.insert(balance, n);
    }
    for r in &seen {
        let of = |at: &std::collections::HashMap<Value, u64>, v: &Value| at.get(v).copied();
        let got = (
            of(&nonce_at, &r.results[0]),
            of(&balance_at, &r.results[1]),
            r.results[2]["number"].as_str().map(|n| quantity(&json!(n))),
        );
        assert!(
            [got.0, got.1, got.2]
                .iter()
                .all(|n| n.is_some_and(|n| n >= r.head)),
            "DEV's nonce, its balance and the latest block asked when livechain's head was {} \
             are those of blocks {got:?}",
            r.head
        );
    }
    // The cache answered most of them: about one exchange per head, not per call.
    let heads = last - first + 1;
    for ((method, params), before) in calls.iter().zip(asked_before) {
        let sent = (relay.asked(method, params) - before) as u64;
        eprintln!(
            "{method}: {sent} of {} calls reached anvil, {heads} heads",
            seen.len()
        );
        assert!(
            sent <= 3 * heads && (seen.len() as u64) > 3 * sent,
            "{method}: {sent} of {} calls reached anvil over {heads} heads",
            seen.len()
        );
    }
}
