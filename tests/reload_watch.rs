//! `server.watch_config = true`: a new upstreams file, and a Kubernetes-style ConfigMap swap
//! (files that are symlinks through `..data`, renamed onto a new directory), take effect without
//! any signal; a broken file keeps the old config and says why; several writes in a row make
//! one reload.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// `livechain_config_reloads_total{result}` as scraped.
async fn reloads(p: &Proxy, result: &str) -> u64 {
    let text = p.client().request("GET", "/metrics", &[], b"").await.text();
    let series = format!("livechain_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The chains `/v1/chains` lists.
async fn chains(p: &Proxy) -> Vec<String> {
    let v = p
        .client()
        .request("GET", "/v1/chains", &[], b"")
        .await
        .json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn lists(p: &Proxy, chain: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        chains(p).await.iter().any(|c| c == chain)
    })
    .await
}

const WATCH: &str = "watch_config = true";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_upstreams_file_takes_effect_without_a_signal() {
    let (eth, poly) = (mock(1).await, mock(137).await);
    let one = upstreams_toml("ethereum", 1, &[("a", eth.url())]);
    let p = Proxy::start(&one, WATCH).await;
    assert_eq!(chains(&p).await, ["ethereum"]);
    assert!(
        p.log_until(Duration::from_secs(5), |l| l
            .contains("watching the config files"))
            .await
    );
    let two = format!(
        "{one}\n{}",
        upstreams_toml("polygon", 137, &[("p", poly.url())])
    );
    p.dir.write("upstreams.toml", &two);
    assert!(lists(&p, "polygon").await, "polygon served after the write");
    let r = p
        .client()
        .post("/polygon", &call(1, "eth_chainId", serde_json::json!([])))
        .await;
    assert_eq!(r.json()["result"], "0x89", "{}", r.text());
    assert!(
        p.log_until(Duration::from_secs(5), |l| l
            .contains("chain polygon added with upstreams p"))
            .await,
        "the reload says what changed:\n{}",
        p.log()
    );
    assert!(p.log().contains("config files changed: reloading"));
    assert!(!p.log().contains("SIGHUP"), "no signal was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_config_and_a_fixed_one_applies() {
    let (eth, poly) = (mock(1).await, mock(137).await);
    let one = upstreams_toml("ethereum", 1, &[("a", eth.url())]);
    let p = Proxy::start(&one, WATCH).await;
    p.dir
        .write("upstreams.toml", "[chains.ethereum]\nchain_id = \n");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&p, "error").await == 1
        })
        .await,
        "the broken file was tried"
    );
    assert!(
        p.log_until(Duration::from_secs(5), |l| l.contains(
            "configuration reload failed; still serving the previous configuration"
        ))
        .await
    );
    assert!(p.log().contains("upstreams.toml"), "names the file");
    assert_eq!(chains(&p).await, ["ethereum"], "still the old table");
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_chainId", serde_json::json!([])))
        .await;
    assert_eq!(r.status, 200, "still serving: {}", r.text());
    // Fixed: applied, with no signal either.
    let two = format!(
        "{one}\n{}",
        upstreams_toml("polygon", 137, &[("p", poly.url())])
    );
    p.dir.write("upstreams.toml", &two);
    assert!(lists(&p, "polygon").await);
    assert_eq!(reloads(&p, "ok").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_writes_make_one_reload() {
    let eth = mock(1).await;
    let one = upstreams_toml("ethereum", 1, &[("a", eth.url())]);
    let p = Proxy::start(&one, WATCH).await;
    // Ten writes 80 ms apart (an editor saving, a tool writing in pieces), each a different
    // text, over 800 ms: longer than three polls, every gap shorter than the quiet period.
    for lag in 1..=10 {
        p.dir.write(
            "upstreams.toml",
            &one.replace(
                "chain_id = 1\n",
                &format!("chain_id = 1\nmax_block_lag = {lag}\n"),
            ),
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&p, "ok").await >= 1
        })
        .await
    );
    // Well past another poll and quiet period: still one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&p, "ok").await, 1, "one reload for the burst");
    assert_eq!(reloads(&p, "error").await, 0);
    let status = p.client().request("GET", "/status", &[], b"").await.json();
    assert_eq!(
        status["chains"]["ethereum"]["max_block_lag"], 10,
        "the last write"
    );
    assert!(
        p.log_until(Duration::from_secs(5), |l| l
            .contains("chain ethereum: max_block_lag changed"))
            .await
    );
}

/// A ConfigMap volume as the kubelet writes it: `dir/..2024_N/` holds the files, `dir/..data`
/// points at it, `dir/NAME` are symlinks to `..data/NAME`.
struct ConfigMap {
    dir: PathBuf,
    version: usize,
}

impl ConfigMap {
    fn new(dir: &Path, files: &[(&str, &str)]) -> ConfigMap {
        std::fs::create_dir_all(dir).unwrap();
        let mut cm = ConfigMap {
            dir: dir.to_owned(),
            version: 0,
        };
        cm.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        cm
    }

    /// The kubelet's update: a new directory, `..data` renamed onto it, the old one removed.
    fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let name = format!("..2024_01_01_00_00_0{}.{}", self.version, self.version);
        let fresh = self.dir.join(&name);
        std::fs::create_dir_all(&fresh).unwrap();
        for (file, text) in files {
            std::fs::write(fresh.join(file), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_swap_reloads() {
    let (eth, poly) = (mock(1).await, mock(137).await);
    let one = upstreams_toml("ethereum", 1, &[("a", eth.url())]);
    let volume = TempDir::new();
    let mut cm = ConfigMap::new(&volume.0.join("config"), &[("upstreams.toml", &one)]);
    let upstreams = volume.0.join("config/upstreams.toml");
    let p = Proxy::start(
        "",
        &format!("{WATCH}\nupstreams = \"{}\"", upstreams.display()),
    )
    .await;
    assert_eq!(chains(&p).await, ["ethereum"]);
    let two = format!(
        "{one}\n{}",
        upstreams_toml("polygon", 137, &[("p", poly.url())])
    );
    cm.update(&[("upstreams.toml", &two)]);
    assert!(
        lists(&p, "polygon").await,
        "the swap was seen:\n{}",
        p.log()
    );
    assert_eq!(reloads(&p, "ok").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watch_config_a_write_changes_nothing() {
    let (eth, poly) = (mock(1).await, mock(137).await);
    let one = upstreams_toml("ethereum", 1, &[("a", eth.url())]);
    let p = Proxy::start(&one, "").await;
    let two = format!(
        "{one}\n{}",
        upstreams_toml("polygon", 137, &[("p", poly.url())])
    );
    p.dir.write("upstreams.toml", &two);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(chains(&p).await, ["ethereum"], "off by default");
    assert_eq!(reloads(&p, "ok").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_and_keys_files_are_watched_and_the_log_names_key_ids_only() {
    let eth = mock(1).await;
    let entry = |id: &str, hash: &str| format!("[[keys]]\nid = \"{id}\"\nsha256 = \"{hash}\"\n");
    let (h1, h2) = ("a1".repeat(32), "b2".repeat(32));
    let keys = TempDir::new();
    let keys_file = keys.write("keys.toml", &entry("first", &h1));
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", eth.url())]),
        &format!("{WATCH}\n[auth]\nkeys = \"{}\"\n", keys_file.display()),
    )
    .await;
    // The keys file: a key added.
    keys.write(
        "keys.toml",
        &format!("{}{}", entry("first", &h1), entry("second", &h2)),
    );
    assert!(
        p.log_until(Duration::from_secs(10), |l| l.contains("keys added second"))
            .await,
        "{}",
        p.log()
    );
    // The main file: a setting changed.
    let main = p.dir.0.join("livechain.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace("[server]\n", "[server]\nmax_batch = 7\n"),
    )
    .unwrap();
    assert!(
        p.log_until(Duration::from_secs(10), |l| l
            .contains("settings changed: server.max_batch"))
            .await,
        "{}",
        p.log()
    );
    assert_eq!(reloads(&p, "ok").await, 2);
    let log = p.log();
    assert!(
        !log.contains(&h1) && !log.contains(&h2),
        "no key hash in the log"
    );
}
