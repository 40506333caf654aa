//! HTTPS upstreams: certificate verification with SNI, against a TLS front signed by a private
//! test CA (tests/fixtures/tls) and forwarding to a mock node.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::*;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Serves TLS on an ephemeral port and relays each connection to `backend` in plain text.
async fn tls_front(backend: SocketAddr) -> SocketAddr {
    let read =
        |name: &str| std::fs::read(repo_path(&format!("tests/fixtures/tls/{name}"))).unwrap();
    let certs = rustls_pemfile::certs(&mut read("server.pem").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut read("server.key").as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_against_its_ca() {
    let eth = mock(1).await;
    let front = tls_front(eth.addr()).await;
    let ca = repo_path("tests/fixtures/tls/ca.pem");
    // `localhost` is resolved by livechain and sent as SNI; the certificate is for localhost.
    let ups = format!(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"tls\"\n\
         http = \"https://localhost:{}/rpc\"\ntls_ca_file = \"{}\"\n",
        front.port(),
        ca.display()
    );
    let p = Proxy::start(&ups, "").await;
    let mut c = p.client();
    for i in 0..5 {
        let r = c
            .post("/ethereum", &call(i, "eth_chainId", json!([])))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["result"], "0x1");
    }
    // Five requests over one pooled TLS connection; the probes and the chain supervisor (which
    // polls this upstream's head: it has no ws URL) keep one each on their own threads; plus
    // the stats call itself. Without reuse, each of the five would be a connection of its own.
    let accepted = stats(&eth).await["connections_accepted"].as_u64().unwrap();
    assert!(accepted <= 4, "TLS connections reused, got {accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_an_untrusted_certificate_is_refused() {
    let eth = mock(1).await;
    let front = tls_front(eth.addr()).await;
    // No tls_ca_file: the system roots do not know the test CA.
    let ups = upstreams_toml(
        "ethereum",
        1,
        &[("tls", format!("https://localhost:{}", front.port()))],
    );
    let p = Proxy::start(&ups, "").await;
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_gasPrice", json!([])))
        .await;
    // Its probes could not connect either: it was never verified, so it takes no traffic.
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        stats(&eth).await["calls"].as_u64().unwrap(),
        0,
        "nothing reached the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_upstream_verified_against_its_ca() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let eth = mock(1).await;
    let front = tls_front(eth.addr()).await;
    let ca = repo_path("tests/fixtures/tls/ca.pem");
    let ups = format!(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"tls\"\n\
         http = \"https://localhost:{port}\"\nws = \"wss://localhost:{port}\"\ntls_ca_file = \"{}\"\n",
        ca.display(),
        port = front.port(),
    );
    let p = Proxy::start(&ups, "").await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ethereum", p.addr), stream)
        .await
        .expect("handshake through a wss upstream");
    ws.send(Message::text(
        r#"{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]}"#,
    ))
    .await
    .unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("answer in time")
        .expect("a message")
        .expect("no error");
    let v: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(v["result"], "0x1");
    assert_eq!(v["id"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_reports_tls_verified_and_refused() {
    let eth = mock(1).await;
    let front = tls_front(eth.addr()).await;
    let ca = repo_path("tests/fixtures/tls/ca.pem");
    let ups = format!(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"trusted\"\n\
         http = \"https://localhost:{port}/rpc\"\ntls_ca_file = \"{}\"\n\
         [[chains.ethereum.upstreams]]\nname = \"untrusted\"\nhttp = \"https://localhost:{port}/rpc\"\n",
        ca.display(),
        port = front.port(),
    );
    let dir = TempDir::new();
    dir.write("upstreams.toml", &ups);
    let main = dir.write("livechain.toml", "[server]\n");
    let out = std::process::Command::new(bin())
        .args(["check", "--probe", "--config"])
        .arg(&main)
        .output()
        .expect("run livechain check --probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // One upstream serves: the chain is usable, the other's TLS failure is in its row.
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {stdout}"))
            .to_owned()
    };
    let trusted = row("trusted");
    assert!(
        trusted.contains(" ok ") && trusted.ends_with(" ok"),
        "{trusted}"
    );
    let untrusted = row("untrusted");
    assert!(
        untrusted.contains("TLS") || untrusted.contains("certificate"),
        "{untrusted}"
    );
    assert!(!untrusted.ends_with(" ok"), "{untrusted}");
}
