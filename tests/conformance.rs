//! JSON-RPC conformance: every request/response pair of the Ethereum execution-apis test fixtures
//! (`../shared/vectors/execution-apis.jsonl`) replayed through livechain to an upstream that
//! answers with the recorded response. The client must receive exactly that response: byte for
//! byte for single calls, and for batches (with ids varied: strings, large numbers, null) each
//! element's id as sent and its result or error byte for byte.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Vector {
    method: String,
    request: Value,
    request_raw: String,
    response_raw: String,
}

fn vectors() -> Vec<Vector> {
    let path = repo_path("../shared/vectors/execution-apis.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the conformance vectors live in ../shared beside the repository)",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("vector line");
            Vector {
                method: v["method"].as_str().expect("method").to_owned(),
                request: v["request"].clone(),
                request_raw: v["request_raw"].as_str().expect("request_raw").to_owned(),
                response_raw: v["response_raw"].as_str().expect("response_raw").to_owned(),
            }
        })
        .collect()
}

/// What the recording upstream answers: the vectors in play right now.
#[derive(Default)]
struct Script {
    current: Vec<usize>,
    /// Bodies received for the vectors (not probes), to check what was forwarded.
    forwarded: Vec<Vec<u8>>,
}

struct Recorder {
    vectors: Vec<Vector>,
    script: Mutex<Script>,
}

impl Recorder {
    /// The recorded answer to one call object; probes and anything unscripted get a plain node's.
    fn answer_one(&self, call: &Value, raw: &RawValue, script: &Script) -> (String, bool) {
        // The id echoed exactly as written, as nodes do.
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            #[serde(borrow)]
            id: &'a RawValue,
        }
        let id = serde_json::from_str::<Id>(raw.get()).map_or("null", |i| i.id.get());
        for &i in &script.current {
            let v = &self.vectors[i];
            if v.request["method"] == call["method"] && v.request["params"] == call["params"] {
                let recorded: serde_json::Map<String, Value> =
                    serde_json::from_str(&v.response_raw).expect("recorded response");
                if recorded.get("id") == Some(&call["id"]) {
                    return (v.response_raw.clone(), true);
                }
                // Same answer under the caller's id; result/error text kept as recorded.
                let raw: std::collections::BTreeMap<String, Box<RawValue>> =
                    serde_json::from_str(&v.response_raw).expect("recorded response");
                let mut out = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id}");
                for key in ["result", "error"] {
                    if let Some(r) = raw.get(key) {
                        out.push_str(&format!(",\"{key}\":{}", r.get()));
                    }
                }
                out.push('}');
                return (out, true);
            }
        }
        let result = match call["method"].as_str().unwrap_or("") {
            "eth_chainId" => "\"0x1\"",
            "net_version" => "\"1\"",
            "eth_blockNumber" => "\"0xffffff\"",
            "eth_syncing" => "false",
            _ => "null",
        };
        (
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}"),
            false,
        )
    }

    fn answer(&self, body: &[u8]) -> String {
        let mut script = self.script.lock().unwrap();
        let parsed: Value = serde_json::from_slice(body).expect("livechain forwards valid JSON");
        let (out, scripted) = match &parsed {
            Value::Array(calls) => {
                let raws: Vec<&RawValue> = serde_json::from_slice(body).expect("batch");
                let parts: Vec<(String, bool)> = calls
                    .iter()
                    .zip(raws)
                    .map(|(c, r)| self.answer_one(c, r, &script))
                    .collect();
                let scripted = parts.iter().any(|p| p.1);
                let texts: Vec<String> = parts.into_iter().map(|p| p.0).collect();
                (format!("[{}]", texts.join(",")), scripted)
            }
            call => {
                let raw: &RawValue = serde_json::from_slice(body).expect("call");
                self.answer_one(call, raw, &script)
            }
        };
        if scripted {
            script.forwarded.push(body.to_vec());
        }
        out
    }
}

async fn serve(stream: TcpStream, rec: Arc<Recorder>) {
    let mut stream = stream;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
        let answer = rec.answer(&body);
        let out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn recorder() -> (Arc<Recorder>, SocketAddr) {
    let rec = Arc::new(Recorder {
        vectors: vectors(),
        script: Mutex::new(Script::default()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, r.clone()));
        }
    });
    (rec, addr)
}

/// livechain in front of the recorder, forwarding every method (the fixtures use debug_*).
async fn proxy(addr: SocketAddr) -> Proxy {
    let ups = format!(
        "[retry]\nmax_retries = 0\n[chains.ethereum]\nchain_id = 1\ndeny = []\n\
         [[chains.ethereum.upstreams]]\nname = \"recorder\"\nhttp = \"http://{addr}\"\n"
    );
    Proxy::start(&ups, "max_response_bytes = 16777216").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_answered_byte_for_byte_as_single_calls() {
    let (rec, addr) = recorder().await;
    let p = proxy(addr).await;
    let mut c = p.client();
    let mut failures = Vec::new();
    let n = rec.vectors.len();
    assert!(n >= 200, "{n} vectors");
    for i in 0..n {
        {
            let mut s = rec.script.lock().unwrap();
            s.current = vec![i];
            s.forwarded.clear();
        }
        let v = &rec.vectors[i];
        let r = c.post("/ethereum", v.request_raw.as_bytes()).await;
        let forwarded = rec.script.lock().unwrap().forwarded.clone();
        if r.status != 200 || r.body != v.response_raw.as_bytes() {
            failures.push(format!(
                "#{i} {}: status {}, got {} bytes, want {}: {}",
                v.method,
                r.status,
                r.body.len(),
                v.response_raw.len(),
                String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
            ));
        } else if forwarded != [v.request_raw.as_bytes().to_vec()] {
            failures.push(format!("#{i} {}: request not forwarded as sent", v.method));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{n} single vectors passed byte for byte");
}

/// A batch element's id and answer text, by field.
fn fields(element: &RawValue) -> std::collections::BTreeMap<String, String> {
    let map: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(element.get()).expect("batch element is an object");
    map.into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_grouped_as_batches_keep_ids_and_answers() {
    let (rec, addr) = recorder().await;
    let p = proxy(addr).await;
    let mut c = p.client();
    let n = rec.vectors.len();
    // Ids of every kind a client may use; at most one null per batch so answers stay matchable.
    let id_for = |k: usize, j: usize| -> String {
        match j % 5 {
            0 => format!("\"req-{k}-{j}\""),
            1 => format!("{}", 18_446_744_073_709_551_615u64 - k as u64),
            2 if j == 2 => "null".to_owned(),
            3 => format!("{}", k * 1000 + j),
            _ => format!("\"\\u00e9-{k}-{j}\""),
        }
    };
    let mut failures = Vec::new();
    let mut batches = 0;
    let mut k = 0;
    let mut start = 0;
    while start < n {
        // Varying sizes: 1 to 7 calls.
        let size = 1 + k % 7;
        let group: Vec<usize> = (start..(start + size).min(n)).collect();
        start += size;
        // Two vectors with the same call in one batch could not be told apart by the upstream.
        let mut seen = std::collections::HashSet::new();
        let group: Vec<usize> = group
            .into_iter()
            .filter(|&i| {
                let r = &rec.vectors[i].request;
                seen.insert((r["method"].to_string(), r["params"].to_string()))
            })
            .collect();
        let mut ids = Vec::new();
        let mut elements = Vec::new();
        for (j, &i) in group.iter().enumerate() {
            let id = id_for(k, j);
            // Built as text so the id goes out exactly as written (escapes included).
            let req = &rec.vectors[i].request;
            let mut element = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":{}",
                req["method"]
            );
            if let Some(params) = req.get("params") {
                element.push_str(&format!(",\"params\":{params}"));
            }
            element.push('}');
            elements.push(element);
            ids.push(id);
        }
        let body = format!("[{}]", elements.join(","));
        rec.script.lock().unwrap().current = group.clone();
        let r = c.post("/ethereum", body.as_bytes()).await;
        k += 1;
        batches += 1;
        if r.status != 200 {
            failures.push(format!("batch {k}: status {} {}", r.status, r.text()));
            continue;
        }
        let answers: Vec<Box<RawValue>> = match serde_json::from_slice(&r.body) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("batch {k}: not an array: {e}"));
                continue;
            }
        };
        if answers.len() != group.len() {
            failures.push(format!(
                "batch {k}: {} answers for {} calls",
                answers.len(),
                group.len()
            ));
            continue;
        }
        for (answer, (&i, id)) in answers.iter().zip(group.iter().zip(&ids)) {
            let got = fields(answer);
            let want: std::collections::BTreeMap<String, String> = {
                let raw: &RawValue = serde_json::from_str(&rec.vectors[i].response_raw).unwrap();
                fields(raw)
            };
            let same_answer = ["result", "error"]
                .iter()
                .all(|key| got.get(*key) == want.get(*key));
            let same_id = got.get("id").map(String::as_str) == Some(id.as_str());
            if !same_answer || !same_id {
                failures.push(format!(
                    "batch {k}, #{i} {} id {id}: got id {:?}, answer differs: {} ({:.200})",
                    rec.vectors[i].method,
                    got.get("id"),
                    !same_answer,
                    answer.get()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems in {batches} batches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{n} vectors passed in {batches} batches");
}
