//! Real Ethereum tools for end-to-end tests: anvil dev nodes, cast, and node scripts using viem,
//! all from `scripts/e2e-deps` (pinned npm packages, cached in target/e2e). Every process started
//! here is killed by its PID when its guard is dropped, also when the test panics.
//!
//! Also an event-emitting contract ([`deploy_emitter`]), a [`Ticker`] that calls it often enough
//! that every block has a log, and [`reorg_with_logs`], which replaces the last blocks with a
//! branch whose blocks carry logs of that contract too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;

use super::{call, free_port, repo_path, Client, TempDir};

pub const CHAIN_ID: u64 = 31337;
pub const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Anvil's first dev account and its key (well known, test only). Unlocked in anvil.
pub const DEV: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
pub const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Anvil's second dev account.
pub const RECIPIENT: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// Anvil's third dev account (unlocked): sends the transactions of a reorg's new branch, so its
/// nonces never mix with the ticker's.
pub const REORGER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

/// The directory `scripts/e2e-deps` installs into (run once per test binary).
pub fn tools() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_path("scripts/e2e-deps"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/e2e-deps");
        assert!(out.status.success(), "scripts/e2e-deps failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A foundry binary (`anvil`, `cast`) in the tools directory.
pub fn tool(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "node_modules/@foundry-rs/{name}-linux-amd64/bin/{name}"
    ))
}

/// A JSON-RPC call over HTTP to `addr` (one fresh connection): the whole answer.
pub async fn rpc(addr: SocketAddr, path: &str, method: &str, params: Value) -> Value {
    Client::new(addr)
        .post(path, &call(1, method, params))
        .await
        .json()
}

/// Runs cast and returns its trimmed stdout; panics (with stderr) when it fails.
pub fn cast(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(tool(dir, "cast"))
        .args(args)
        .output()
        .expect("run cast");
    assert!(
        out.status.success(),
        "cast {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `0x…` hex of a quantity.
pub fn hex(n: u64) -> String {
    format!("0x{n:x}")
}

/// A `0x…` quantity as a number.
pub fn quantity(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex quantity: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not a hex quantity: {s}"))
}

/// An anvil dev node on an ephemeral loopback port; killed by its PID when dropped.
pub struct Anvil {
    child: Child,
    pub addr: SocketAddr,
    /// Seconds between blocks (interval mining), 0 for automine.
    pub block_time: u64,
    dir: TempDir,
}

impl Anvil {
    /// A node of chain 31337 mining a block every second. It keeps its history (no
    /// `--prune-history`): `anvil_reorg` needs the states of the blocks it replaces.
    pub async fn start(tools: &Path) -> Anvil {
        Anvil::start_with(tools, 1, &[]).await
    }

    /// A node with `block_time` seconds between blocks (0: a block per transaction) and extra
    /// command-line arguments.
    pub async fn start_with(tools: &Path, block_time: u64, extra: &[&str]) -> Anvil {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = TempDir::new();
            let log = dir.0.join("anvil.log");
            let mut cmd = Command::new(tool(tools, "anvil"));
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--chain-id", &CHAIN_ID.to_string()])
                .args(["--mnemonic", MNEMONIC])
                .args(extra);
            if block_time > 0 {
                cmd.args(["--block-time", &block_time.to_string()]);
            }
            let child = cmd
                .stdout(std::fs::File::create(&log).expect("anvil log"))
                .stderr(Stdio::from(
                    std::fs::File::options()
                        .append(true)
                        .open(&log)
                        .expect("anvil log"),
                ))
                .spawn()
                .expect("start anvil");
            let mut node = Anvil {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                block_time,
                dir,
            };
            if node.wait_ready(Duration::from_secs(30)).await {
                return node;
            }
            last = node.log();
        }
        panic!("anvil did not start; last log:\n{last}");
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && self.call("eth_chainId", json!([])).await["result"] == hex(CHAIN_ID)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("anvil.log")).unwrap_or_default()
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A JSON-RPC call: the whole answer.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        rpc(self.addr, "/", method, params).await
    }

    /// A JSON-RPC call's result; panics on an error answer.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone()).await;
        match r.get("result") {
            Some(v) if r.get("error").is_none() => v.clone(),
            _ => panic!("anvil {method} {params}: {r}"),
        }
    }

    pub async fn block_number(&self) -> u64 {
        quantity(&self.result("eth_blockNumber", json!([])).await)
    }

    /// The block (transaction hashes only) at `n`; `null` if there is none.
    pub async fn block(&self, n: u64) -> Value {
        self.result("eth_getBlockByNumber", json!([hex(n), false]))
            .await
    }

    /// The hash of block `n` (panics if there is none).
    pub async fn hash(&self, n: u64) -> String {
        let b = self.block(n).await;
        b["hash"]
            .as_str()
            .unwrap_or_else(|| panic!("no block {n}: {b}"))
            .to_owned()
    }

    /// `eth_getLogs` for one block hash and address.
    pub async fn logs_at(&self, block_hash: &str, address: &str) -> Vec<Value> {
        let v = self
            .result(
                "eth_getLogs",
                json!([{ "blockHash": block_hash, "address": address }]),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Waits (bounded) until the node's head is at least `n`.
    pub async fn wait_block(&self, n: u64, within: Duration) -> u64 {
        let until = Instant::now() + within;
        loop {
            let head = self.block_number().await;
            if head >= n {
                return head;
            }
            assert!(
                Instant::now() < until,
                "anvil head {head} did not reach {n} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) for a transaction's receipt.
    pub async fn receipt(&self, tx: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let r = self.result("eth_getTransactionReceipt", json!([tx])).await;
            if r.is_object() {
                return r;
            }
            assert!(
                Instant::now() < until,
                "no receipt for {tx} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- anvil {} log (last 40 lines) ----\n{}",
                self.addr,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// A node script (ES module) running in the tools directory, so `import … from 'viem'`
/// resolves; its output goes to files read while it runs. Killed by its PID when dropped.
pub struct NodeScript {
    child: Child,
    script: PathBuf,
    out: TempDir,
}

impl NodeScript {
    pub fn spawn(tools: &Path, source: &str) -> NodeScript {
        NodeScript::spawn_with(tools, "node", "mjs", source, &[])
    }

    /// A Python script run by the tools' venv (web3.py is installed there).
    pub fn spawn_python(tools: &Path, source: &str) -> NodeScript {
        NodeScript::spawn_python_env(tools, source, &[])
    }

    /// [`NodeScript::spawn`] with environment variables set.
    pub fn spawn_env(tools: &Path, source: &str, env: &[(&str, &str)]) -> NodeScript {
        NodeScript::spawn_with(tools, "node", "mjs", source, env)
    }

    /// [`NodeScript::spawn_python`] with environment variables set.
    pub fn spawn_python_env(tools: &Path, source: &str, env: &[(&str, &str)]) -> NodeScript {
        let python = tools.join("venv/bin/python");
        NodeScript::spawn_with(tools, &python.to_string_lossy(), "py", source, env)
    }

    fn spawn_with(
        tools: &Path,
        program: &str,
        ext: &str,
        source: &str,
        env: &[(&str, &str)],
    ) -> NodeScript {
        static N: AtomicUsize = AtomicUsize::new(0);
        let script = tools.join(format!(
            "script-{}-{}.{ext}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&script, source).expect("write script");
        let out = TempDir::new();
        let child = Command::new(program)
            .arg(&script)
            .envs(env.iter().copied())
            .current_dir(tools)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out.0.join("stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(out.0.join("stderr")).expect("stderr file"))
            .spawn()
            .expect("run the script");
        NodeScript { child, script, out }
    }

    /// What it printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.0.join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.0.join("stderr")).unwrap_or_default()
    }

    /// Every complete line printed so far that is JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        let out = self.stdout();
        let complete = match out.rfind('\n') {
            Some(i) => &out[..i],
            None => "",
        };
        complete
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Its exit status, if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to end, at most `within` (then it is killed and this panics); its stdout.
    /// Panics with its stderr if it failed.
    pub async fn finish(mut self, within: Duration) -> String {
        let until = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!(
                    "node script still running after {within:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "node script failed ({status}): {}\nstdout:\n{}",
            self.stderr(),
            self.stdout()
        );
        self.stdout()
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.script);
        if std::thread::panicking() {
            eprintln!("---- node script stderr ----\n{}", self.stderr());
        }
    }
}

/// The topic of every log the emitter writes: keccak256("Tick(uint256)").
pub const EMITTER_TOPIC: &str =
    "0xb8c95b3cea6303a753d912e243354ef08add1085ed07d34191514ef1001ef9d8";

/// Creation code of the emitter, written by hand. Any call to it emits one LOG1 with topic
/// [`EMITTER_TOPIC`] and as data the 32-byte number of the block that ran it.
///
/// Init (11 bytes), copies the runtime (0x2b bytes, at offset 0x0b) to memory and returns it:
///   60 2b  PUSH1 0x2b   size
///   80     DUP1
///   60 0b  PUSH1 0x0b   offset in the code
///   60 00  PUSH1 0      memory offset
///   39     CODECOPY     (dest 0, offset 0x0b, size 0x2b)
///   60 00  PUSH1 0
///   f3     RETURN       (memory 0, size 0x2b)
/// Runtime (43 bytes):
///   43           NUMBER
///   60 00        PUSH1 0
///   52           MSTORE       memory[0..32] = block number
///   7f <topic>   PUSH32 topic
///   60 20        PUSH1 32     size
///   60 00        PUSH1 0      offset
///   a1           LOG1         (offset 0, size 32, topic)
///   00           STOP
pub fn emitter_code() -> String {
    format!(
        "0x602b80600b6000396000f3\
         436000527f{}60206000a100",
        EMITTER_TOPIC.trim_start_matches("0x")
    )
}

/// Deploys the emitter from [`DEV`] (unlocked in anvil) and returns its address, once mined.
pub async fn deploy_emitter(node: &Anvil) -> String {
    let tx = node
        .result(
            "eth_sendTransaction",
            json!([{ "from": DEV, "data": emitter_code(), "gas": "0x30d40" }]),
        )
        .await;
    let receipt = node
        .receipt(tx.as_str().expect("tx hash"), Duration::from_secs(20))
        .await;
    assert_eq!(receipt["status"], "0x1", "emitter deployment: {receipt}");
    let address = receipt["contractAddress"]
        .as_str()
        .expect("contractAddress")
        .to_owned();
    let code = node.result("eth_getCode", json!([address, "latest"])).await;
    assert_eq!(
        code.as_str().unwrap().len(),
        2 + 2 * 0x2b,
        "runtime code of the emitter: {code}"
    );
    address
}

/// A background task calling the emitter from `from` every `every`, so that with anvil's one
/// block a second each block has a log. Stopped by [`Ticker::stop`] or when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    /// Held during each send; [`Ticker::hold`] takes it to pause the ticker.
    turn: Arc<Mutex<()>>,
    pub sent: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
    pub from: &'static str,
}

impl Ticker {
    /// Calls `contract` from [`DEV`] every 250 ms.
    pub fn start(node: &Anvil, contract: &str) -> Ticker {
        Ticker::start_with(node.addr, contract, DEV, Duration::from_millis(250))
    }

    pub fn start_with(
        addr: SocketAddr,
        contract: &str,
        from: &'static str,
        every: Duration,
    ) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let turn = Arc::new(Mutex::new(()));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tx = json!([{ "from": from, "to": contract, "data": "0x", "gas": "0x186a0" }]);
        let task = {
            let (stop, turn, sent, failed) =
                (stop.clone(), turn.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let mut c = Client::new(addr);
                let mut id = 0;
                while !stop.load(Ordering::SeqCst) {
                    {
                        let _turn = turn.lock().await;
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        id += 1;
                        let r = tokio::time::timeout(
                            Duration::from_secs(5),
                            c.post("/", &call(id, "eth_sendTransaction", tx.clone())),
                        )
                        .await;
                        match r {
                            Ok(r) if r.json().get("result").is_some() => {
                                sent.fetch_add(1, Ordering::SeqCst);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                eprintln!("ticker: send failed: {:?}", other.map(|r| r.text()));
                                c = Client::new(addr);
                            }
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        Ticker {
            stop,
            turn,
            sent,
            failed,
            task: Some(task),
            from,
        }
    }

    /// Pauses the ticker (after its send in flight, if any) until the guard is dropped.
    pub async fn hold(&self) -> OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    /// Stops it and waits for its task; (sent, failed) transactions.
    pub async fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A block as `(number, hash)`.
pub type BlockId = (u64, String);

/// What [`reorg_with_logs`] replaced.
#[derive(Debug, Clone)]
pub struct Reorg {
    pub depth: u64,
    /// The replaced blocks, oldest first.
    pub old: Vec<BlockId>,
    /// Their replacements (same numbers), oldest first.
    pub new: Vec<BlockId>,
}

impl Reorg {
    pub fn old_hashes(&self) -> Vec<String> {
        self.old.iter().map(|(_, h)| h.clone()).collect()
    }

    pub fn new_hashes(&self) -> Vec<String> {
        self.new.iter().map(|(_, h)| h.clone()).collect()
    }
}

/// A reorg made in two steps, so a test can wait between them: [`PreparedReorg::prepare`]
/// stops mining (and the ticker, if any) and reads the blocks that will be replaced; then
/// [`PreparedReorg::apply`] replaces them.
pub struct PreparedReorg<'a> {
    node: &'a Anvil,
    pub depth: u64,
    /// The blocks that will be replaced, oldest first.
    pub old: Vec<BlockId>,
    ticker_from: Option<&'static str>,
    _paused: Option<OwnedMutexGuard<()>>,
}

impl<'a> PreparedReorg<'a> {
    pub async fn prepare(node: &'a Anvil, ticker: Option<&Ticker>, depth: u64) -> Self {
        assert!(depth > 0);
        let paused = match ticker {
            Some(t) => Some(t.hold().await),
            None => None,
        };
        // No block may be mined between reading the head and the reorg.
        node.result("evm_setIntervalMining", json!([0])).await;
        let head = node.block_number().await;
        assert!(head > depth, "reorg of depth {depth} at head {head}");
        let mut old = Vec::new();
        for n in head + 1 - depth..=head {
            old.push((n, node.hash(n).await));
        }
        PreparedReorg {
            node,
            depth,
            old,
            ticker_from: ticker.map(|t| t.from),
            _paused: paused,
        }
    }

    /// Calls `anvil_reorg` so that every new block holds one call of `contract` (so a log),
    /// then mining and the ticker go on. Checks against anvil that the replaced hashes changed
    /// and that each new block has the contract's log.
    ///
    /// `anvil_reorg` (foundry 1.7) takes two positional parameters, `[depth, pairs]`:
    /// - `depth`: how many blocks from the head to replace; the node mines `depth` new blocks
    ///   on the block at `head - depth`, so the head keeps its number;
    /// - `pairs`: `[[tx, offset], …]` where `tx` is a transaction request object (`from` an
    ///   unlocked account, signed by anvil, nonces counted from the common ancestor) or a raw
    ///   signed transaction as a hex string, and `offset` is the index of the new block that
    ///   holds it, `0` for the first new block (`head - depth + 1`) to `depth - 1`; an offset
    ///   ≥ depth is refused. An empty list gives empty new blocks.
    ///
    /// E.g. `{"method":"anvil_reorg","params":[2,[[{"from":"0x3C44…","to":"0x…","data":"0x"},0],
    /// [{"from":"0x3C44…","to":"0x…","data":"0x"},1]]]}` answers `null`. Found by experiment:
    /// offset 2 at depth 2 is refused ("Block number 2 must not exceed (depth-1) 1"), a `tx`
    /// that is neither an object nor valid raw bytes too ("data did not match any variant of
    /// untagged enum TransactionData"). The replaced blocks' own transactions are dropped, not
    /// returned to the pool (their senders' nonces go back to the common ancestor's). The node
    /// announces the new blocks to its `newHeads` subscribers like mined blocks, and sends its
    /// `logs` subscribers the new blocks' logs, but no `removed: true` for the replaced ones.
    pub async fn apply(self, contract: &str) -> Reorg {
        let node = self.node;
        let pairs: Vec<Value> = (0..self.depth)
            .map(
                |i| json!([{ "from": REORGER, "to": contract, "data": "0x", "gas": "0x186a0" }, i]),
            )
            .collect();
        node.result("anvil_reorg", json!([self.depth, pairs])).await;
        // Transactions of the ticker still in the pool carry nonces that follow the replaced
        // blocks' (dropped) ones: they would wait forever for the gap to fill. Drop them so the
        // ticker goes on from the new branch's nonce.
        if let Some(from) = self.ticker_from {
            node.result("anvil_removePoolTransactions", json!([from]))
                .await;
        }
        if node.block_time > 0 {
            node.result("evm_setIntervalMining", json!([node.block_time]))
                .await;
        }
        let mut new = Vec::new();
        for (n, old_hash) in &self.old {
            let hash = node.hash(*n).await;
            assert_ne!(&hash, old_hash, "block {n} not replaced by the reorg");
            let logs = node.logs_at(&hash, contract).await;
            assert!(
                !logs.is_empty(),
                "new block {n} ({hash}) has no log of {contract}"
            );
            new.push((*n, hash));
        }
        Reorg {
            depth: self.depth,
            old: self.old,
            new,
        }
    }
}

/// Replaces the last `depth` blocks with new ones that each hold a call of `contract` (see
/// [`PreparedReorg::apply`] for `anvil_reorg`'s parameters); pauses `ticker` meanwhile.
pub async fn reorg_with_logs(
    node: &Anvil,
    contract: &str,
    ticker: Option<&Ticker>,
    depth: u64,
) -> Reorg {
    PreparedReorg::prepare(node, ticker, depth)
        .await
        .apply(contract)
        .await
}

/// Livechain's upstreams file for chain `anvil` (31337, `max_block_lag = 2`, probes every
/// 200 ms) with the given `(name, address)` upstreams, each with `http://ADDR` and `ws://ADDR`.
pub fn livechain_upstreams(upstreams: &[(&str, SocketAddr)]) -> String {
    let mut out = format!(
        "[probe]\ninterval_ms = 200\ntimeout_ms = 1000\n[chains.anvil]\nchain_id = {CHAIN_ID}\n\
         max_block_lag = 2\n"
    );
    for (name, addr) in upstreams {
        out.push_str(&format!(
            "[[chains.anvil.upstreams]]\nname = \"{name}\"\nhttp = \"http://{addr}\"\nws = \"ws://{addr}\"\n"
        ));
    }
    out
}

/// The `/status` entry of upstream `name` of chain `anvil`, or `null`.
pub async fn upstream_state(p: &super::Proxy, name: &str) -> Value {
    let status = Client::new(p.addr)
        .request("GET", "/status", &[], b"")
        .await
        .json();
    status["chains"]["anvil"]["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Waits (bounded) until livechain's `/health` answers 200 and every upstream named is `up`.
pub async fn wait_up(p: &super::Proxy, names: &[&str]) {
    assert!(
        super::eventually(Duration::from_secs(15), || async {
            Client::new(p.addr)
                .request("GET", "/health", &[], b"")
                .await
                .status
                == 200
        })
        .await,
        "livechain healthy"
    );
    for name in names {
        assert!(
            super::eventually(Duration::from_secs(15), || async {
                upstream_state(p, name).await["state"] == "up"
            })
            .await,
            "{name} up: {}",
            upstream_state(p, name).await
        );
    }
}
