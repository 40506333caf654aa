//! Hot reload on SIGHUP with a real livechain process under a bounded concurrent load: adding,
//! removing, a broken file, bursts of signals, signals during start-up, and health carried over.
//! In every case no client request may fail.

mod common;

use std::time::{Duration, Instant};

use common::load::Load;
use common::*;
use livechain::mock::MockNode;

fn upstreams(nodes: &[(&str, &MockNode)]) -> String {
    let list: Vec<(&str, String)> = nodes.iter().map(|(n, m)| (*n, m.url())).collect();
    format!(
        "[probe]\ninterval_ms = 100\n{}",
        upstreams_toml("ethereum", 1, &list)
    )
}

async fn served(node: &MockNode) -> u64 {
    stats(node).await["methods"]["eth_getBalance"]
        .as_u64()
        .unwrap_or(0)
}

async fn status(p: &Proxy) -> serde_json::Value {
    p.client().request("GET", "/status", &[], b"").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_and_removing_upstreams_under_load_drops_nothing() {
    let a = mock(1).await;
    let b = mock(1).await;
    let c = mock(1).await;
    let p = Proxy::start(&upstreams(&[("a", &a), ("b", &b)]), "").await;
    let load = Load::start(p.addr, "/ethereum", 8, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // (a) Add c: it gets traffic within a second of the signal.
    p.dir.write(
        "upstreams.toml",
        &upstreams(&[("a", &a), ("b", &b), ("c", &c)]),
    );
    let signalled = Instant::now();
    p.signal("HUP");
    let until = signalled + Duration::from_secs(5);
    while served(&c).await == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let added_after = signalled.elapsed();
    assert!(served(&c).await > 0, "added upstream got traffic");
    assert!(added_after < Duration::from_secs(1), "took {added_after:?}");
    assert_eq!(status(&p).await["config"]["generation"], 2);

    // (b) Remove b: once in-flight requests are done, it gets nothing more.
    p.dir
        .write("upstreams.toml", &upstreams(&[("a", &a), ("c", &c)]));
    p.signal("HUP");
    let until = Instant::now() + Duration::from_secs(5);
    while status(&p).await["config"]["generation"] != 3 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_after = served(&b).await;
    let sent_then = load.sent();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(load.sent() > sent_then + 100, "load kept running");
    assert_eq!(served(&b).await, b_after, "removed upstream got traffic");

    let report = load.finish().await;
    eprintln!(
        "add/remove reload under load: {} requests, {} failed; added upstream took traffic after {added_after:?}",
        report.sent, report.failed
    );
    assert_eq!(report.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_file_keeps_the_old_config_serving_and_says_why() {
    let a = mock(1).await;
    let good = upstreams(&[("a", &a)]);
    let p = Proxy::start(&good, "").await;
    let load = Load::start(p.addr, "/ethereum", 4, Duration::from_secs(30));

    // A TOML syntax error, then a validation error, then an unset variable.
    for (n, (broken, expect)) in [
        ("[chains.ethereum\nchain_id = 1\n", "line 1"),
        (
            "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"x\"\nhttp = \"ftp://h\"\n",
            "chains.ethereum.upstreams[0].http",
        ),
        (
            "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"x\"\nhttp = \"http://${LIVECHAIN_TEST_UNSET}\"\n",
            "LIVECHAIN_TEST_UNSET",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        p.dir.write("upstreams.toml", broken);
        let errors_before = metric(&p, "livechain_config_reloads_total{result=\"error\"}").await;
        p.signal("HUP");
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if metric(&p, "livechain_config_reloads_total{result=\"error\"}").await > errors_before {
                break;
            }
            assert!(Instant::now() < until, "no failed reload counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = status(&p).await;
        let last = &s["config"]["last_reload"];
        assert_eq!(last["ok"], false, "{s}");
        let err = last["error"].as_str().unwrap();
        assert!(err.contains("upstreams.toml"), "names the file: {err}");
        assert!(err.contains(expect), "names {expect}: {err}");
        assert_eq!(s["config"]["generation"], 1, "old table still in use");
        assert!(
            p.log_until(Duration::from_secs(5), |log| {
                log.matches("configuration reload failed").count() > n
            })
            .await,
            "failed reload {n} logged: {}",
            p.log()
        );
    }
    // Fixed again: reload succeeds.
    p.dir.write("upstreams.toml", &good);
    p.signal("HUP");
    let until = Instant::now() + Duration::from_secs(5);
    while status(&p).await["config"]["generation"] != 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&p).await["config"]["last_reload"]["ok"], true);
    assert_eq!(metric(&p, "livechain_config_generation").await, 2.0);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let report = load.finish().await;
    eprintln!(
        "broken-file reloads under load: {} requests, {} failed",
        report.sent, report.failed
    );
    assert_eq!(report.failed, 0);
    assert!(report.sent > 100);
}

async fn metric(p: &Proxy, name: &str) -> f64 {
    let text = p.client().request("GET", "/metrics", &[], b"").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_sighups_in_a_row_under_load() {
    let a = mock(1).await;
    let b = mock(1).await;
    let one = upstreams(&[("a", &a)]);
    let two = upstreams(&[("a", &a), ("b", &b)]);
    let mut p = Proxy::start(&one, "").await;
    let load = Load::start(p.addr, "/ethereum", 8, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        p.dir
            .write("upstreams.toml", if i % 2 == 0 { &two } else { &one });
        p.signal("HUP");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Settle on the last file written (`one`), then keep the load on a little longer.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&p).await;
        let ups = s["chains"]["ethereum"]["upstreams"]
            .as_array()
            .unwrap()
            .len();
        if ups == 1 && s["config"]["generation"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(Instant::now() < until, "did not settle: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.finish().await;
    let generation = status(&p).await["config"]["generation"].as_u64().unwrap();
    eprintln!(
        "20 SIGHUPs under load: {} requests, {} failed, generation {generation}",
        report.sent, report.failed
    );
    assert_eq!(report.failed, 0);
    assert!(p.child.try_wait().unwrap().is_none(), "still running");
}

/// Whether the process has a handler for SIGHUP (bit 0 of `SigCgt` in /proc/PID/status).
fn catches_sighup(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&mask, 16).ok()
        })
        .is_some_and(|m| m & 1 == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_start_up_never_kills_the_process() {
    let a = mock(1).await;
    let dir = TempDir::new();
    let port = free_port();
    dir.write("upstreams.toml", &upstreams(&[("a", &a)]));
    let main = dir.write(
        "livechain.toml",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\n"),
    );
    let mut child = std::process::Command::new(bin())
        .arg("--config")
        .arg(&main)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // Between exec and the first line of `main` no program can catch a signal; from the moment
    // livechain has taken SIGHUP over (visible in /proc as a caught signal), every later one,
    // during the rest of start-up and after, must be survived.
    let spawned = Instant::now();
    let until = spawned + Duration::from_secs(5);
    while !catches_sighup(&pid) {
        assert!(Instant::now() < until, "SIGHUP never taken over");
        std::thread::yield_now();
    }
    eprintln!("SIGHUP handled {:?} after spawn", spawned.elapsed());
    let until = Instant::now() + Duration::from_millis(1500);
    let mut sent = 0;
    while Instant::now() < until {
        let _ = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status();
        sent += 1;
        assert!(
            child.try_wait().unwrap().is_none(),
            "killed by SIGHUP number {sent}"
        );
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let r = Client::new(addr)
        .post("/ethereum", &call(1, "eth_chainId", serde_json::json!([])))
        .await;
    assert_eq!(r.json()["result"], "0x1");
    assert!(child.try_wait().unwrap().is_none());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("{sent} SIGHUPs during start-up survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_survives_a_reload_and_changed_upstreams_start_fresh() {
    let a = mock(1).await;
    let b = mock(1).await;
    let settings =
        "[probe]\ninterval_ms = 100\n[circuit]\ncooldown_ms = 60000\nmax_cooldown_ms = 60000\n";
    let file = |second: &str| {
        format!(
            "{settings}[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"a\"\nhttp = \"{}\"\n\
             [[chains.ethereum.upstreams]]\nname = \"b\"\nhttp = \"{second}\"\n",
            a.url()
        )
    };
    let p = Proxy::start(&file(&b.url()), "").await;
    // b dies: probes open its circuit.
    b.shutdown().await;
    let circuit =
        |s: &serde_json::Value| s["chains"]["ethereum"]["upstreams"][1]["circuit"].clone();
    let until = Instant::now() + Duration::from_secs(5);
    while circuit(&status(&p).await) != "open" && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(circuit(&status(&p).await), "open");
    let head_a = status(&p).await["chains"]["ethereum"]["upstreams"][0]["head"].clone();
    assert!(head_a.is_u64());

    // Same file again: b keeps its open circuit, a its head.
    p.signal("HUP");
    let until = Instant::now() + Duration::from_secs(5);
    while status(&p).await["config"]["generation"] != 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = status(&p).await;
    assert_eq!(circuit(&s), "open", "circuit kept: {s}");
    assert!(s["chains"]["ethereum"]["upstreams"][0]["head"].is_u64());

    // b's URL changes (to a live node): it is a new upstream with a fresh, closed circuit.
    p.dir.write(
        "upstreams.toml",
        &file(&a.url().replace("127.0.0.1", "localhost")),
    );
    p.signal("HUP");
    let until = Instant::now() + Duration::from_secs(5);
    while status(&p).await["config"]["generation"] != 3 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = status(&p).await;
    assert_eq!(circuit(&s), "closed", "{s}");
    assert_eq!(
        s["chains"]["ethereum"]["upstreams"][1]["state"], "up",
        "probed before traffic: {s}"
    );
}

/// Managed subscriptions live through reloads: a client subscribed to newHeads gets every head,
/// once and in order, while SIGHUPs add and remove upstreams; the supervisor keeps its socket to
/// the upstream the reloads keep, opens one to the added upstream and closes the removed one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_the_supervisors_sockets_live_through_reloads() {
    use futures::{SinkExt, StreamExt};
    use livechain::mock::MockChain;
    use std::net::SocketAddr;
    use tokio_tungstenite::tungstenite::Message;

    let chain = MockChain::new(1, Duration::from_millis(200));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        nodes.push(
            MockNode::start_on(addr, chain.spec(), chain.clone())
                .await
                .unwrap(),
        );
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let file = |ups: &[(&str, &MockNode)]| {
        let mut out = "[probe]\ninterval_ms = 100\n[chains.ethereum]\nchain_id = 1\n".to_owned();
        for (name, node) in ups {
            out.push_str(&format!(
                "[[chains.ethereum.upstreams]]\nname = \"{name}\"\nhttp = \"{}\"\nws = \"ws://{}\"\n",
                node.url(),
                node.addr()
            ));
        }
        out
    };
    let heads_subs = |node: &MockNode| node.stats().subscriptions["newHeads"];
    let p = Proxy::start(&file(&[("a", a), ("b", b)]), "").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            heads_subs(a) == 1 && heads_subs(b) == 1
        })
        .await,
        "the supervisor subscribes to both upstreams"
    );
    let accepted_a = a.stats().connections_accepted;

    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ethereum", p.addr), stream)
        .await
        .unwrap();
    let sub = r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
    ws.send(Message::text(sub)).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut numbers = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(until, ws.next()).await {
                Err(_) => return (numbers, true),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if let Some(n) = v["params"]["result"]["number"].as_str() {
                        numbers.push(u64::from_str_radix(&n[2..], 16).unwrap());
                    }
                }
                Ok(Some(Ok(_))) => {}
                // Closed or broken: the socket did not live through the reloads.
                Ok(_) => return (numbers, false),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    p.dir.write("upstreams.toml", &file(&[("a", a), ("c", c)]));
    p.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            heads_subs(c) == 1 && heads_subs(b) == 0
        })
        .await,
        "after the reload: c {} b {}",
        heads_subs(c),
        heads_subs(b)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    p.dir.write("upstreams.toml", &file(&[("a", a)]));
    p.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async { heads_subs(c) == 0 }).await,
        "c's subscription closed"
    );
    let (numbers, open) = reader.await.unwrap();
    assert!(open, "the client's socket closed during the reloads");
    assert!(
        numbers.len() >= 15,
        "heads over 5 s of 200 ms blocks: {numbers:?}"
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "every head once and in order: {numbers:?}"
    );
    assert_eq!(heads_subs(a), 1, "a's subscription was kept");
    assert_eq!(
        a.stats().ws_connections_open,
        1,
        "the supervisor's socket to a is the one it had"
    );
    assert!(
        a.stats().connections_accepted - accepted_a <= 2,
        "a was not reconnected by the reloads"
    );
}
