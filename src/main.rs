//! The `livechain` binary: parses the command line, loads and validates the config (exiting
//! before anything is bound when it is wrong), and runs the proxy, a config check, or a mock node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use livechain::config::{Loader, Source, DEFAULT_PATH};
use livechain::control::Control;
use livechain::telemetry::{self, LogFormat};
use tokio::signal::unix::Signal;

/// Exit code for an invalid configuration (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code of `check --probe` when a chain has no usable upstream (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    version,
    about = "JSON-RPC reverse proxy for blockchain node providers"
)]
struct Cli {
    /// Main config file; its `server.upstreams` names the upstreams file. Default:
    /// conf/livechain.toml when it exists, else the built-in demo config (mock upstreams).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Serve on this address instead of the config's `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config files and exit (0 when valid).
    Check {
        /// Also contact every upstream (reachable, TLS, chain id, head, WebSocket, latency);
        /// exit 69 when a chain has no upstream that could serve it.
        #[arg(long)]
        probe: bool,
        /// With --probe: the longest one upstream's checks may take, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        probe_timeout_ms: u64,
    },
    /// Run a standalone mock Ethereum node.
    Mock {
        #[arg(long, default_value = "127.0.0.1:18545")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1)]
        chain_id: u64,
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// Added latency range in milliseconds, e.g. `2..10`.
        #[arg(long, default_value = "0..0", value_parser = parse_range)]
        latency_ms: (u64, u64),
        /// Probability in [0, 1] that a request fails with HTTP 500.
        #[arg(long, default_value_t = 0.0)]
        failure_rate: f64,
        /// How many blocks this node serves behind the chain's live head (a lagging node).
        #[arg(long, default_value_t = 0)]
        lag_blocks: u64,
    },
    /// GET a health endpoint: exit 0 when it answers 2xx, 1 otherwise (for container
    /// health checks: no curl needed).
    Health {
        #[arg(long, default_value = livechain::healthcheck::DEFAULT_URL)]
        url: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// API keys for the keys file.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print a fresh random key (once: it is not stored anywhere) and its `[[keys]]` entry.
    New {
        /// The key's id: what logs, metrics and /status show.
        #[arg(long)]
        id: String,
    },
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let a: u64 = a.trim().parse().map_err(|_| format!("bad range {s:?}"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("bad range {s:?}"))?;
    if a > b {
        return Err(format!("range {s:?} has min above max"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = Source::resolve(cli.config);
    let Some(command) = cli.command else {
        // SIGHUP must never kill the proxy, not even while it starts: take it over first.
        return match Control::start() {
            Ok((control, hup)) => {
                let _log = telemetry::init(cli.log_format);
                let loader = Loader {
                    source,
                    listen: cli.listen,
                };
                let code = run_proxy(loader, &control, hup);
                control.shutdown();
                code
            }
            Err(e) => {
                eprintln!("livechain: starting the control runtime: {e}");
                ExitCode::FAILURE
            }
        };
    };
    let _log = telemetry::init(cli.log_format);
    match command {
        Command::Mock {
            listen,
            chain_id,
            block_time_ms,
            latency_ms,
            failure_rate,
            lag_blocks,
        } => run_mock(
            listen,
            chain_id,
            block_time_ms,
            latency_ms,
            failure_rate,
            lag_blocks,
        ),
        Command::Key {
            action: KeyAction::New { id },
        } => new_key(&id),
        Command::Health { url, timeout_ms } => {
            match livechain::healthcheck::get_status(&url, Duration::from_millis(timeout_ms)) {
                Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("livechain health: {url}: HTTP {status}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("livechain health: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            probe,
            probe_timeout_ms,
        } => match source.load() {
            Ok(config) => {
                if let Some(warning) = config.upstreams.no_chains_warning() {
                    eprintln!("warning: {warning}");
                }
                println!("{source}: configuration is valid");
                match probe {
                    true => probe_upstreams(&config, Duration::from_millis(probe_timeout_ms)),
                    false => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

/// `livechain check --probe`: the table on stdout, the chains that cannot serve on stderr.
fn probe_upstreams(config: &livechain::config::Config, limit: Duration) -> ExitCode {
    let report = match livechain::check::run(config, limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("livechain check: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    let unusable = report.unusable_chains();
    for line in &unusable {
        eprintln!("{line}");
    }
    match unusable.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(EXIT_UNAVAILABLE),
    }
}

/// `livechain key new --id NAME`: 32 random bytes from the OS, hex; the entry holds only its
/// SHA-256.
fn new_key(id: &str) -> ExitCode {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        eprintln!("livechain: --id must be 1 to 64 of a-z A-Z 0-9 - _ .");
        return ExitCode::from(2);
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash: String = livechain::config::sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("key: {key}");
    println!("(shown once: give it to the client; livechain keeps only its hash)");
    println!();
    println!("[[keys]]");
    println!("id = \"{id}\"");
    println!("sha256 = \"{hash}\"");
    ExitCode::SUCCESS
}

fn run_proxy(loader: Loader, control: &Control, hup: Signal) -> ExitCode {
    if loader.source == Source::Demo {
        tracing::warn!(
            "no config file at {DEFAULT_PATH}: serving the built-in demo config (mock upstreams); \
             give --config FILE to serve real providers"
        );
    }
    let config = match loader.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(warning) = config.upstreams.no_chains_warning() {
        tracing::warn!("{warning}");
    }
    let daemon = match livechain::server::build(&config, loader, control, hup) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("livechain: {e}");
            return ExitCode::FAILURE;
        }
    };
    livechain::server::print_banner(&daemon);
    daemon.run();
    ExitCode::SUCCESS
}

fn run_mock(
    listen: SocketAddr,
    chain_id: u64,
    block_time_ms: u64,
    (lo, hi): (u64, u64),
    failure_rate: f64,
    lag_blocks: u64,
) -> ExitCode {
    if !(0.0..=1.0).contains(&failure_rate) || block_time_ms == 0 {
        eprintln!(
            "livechain mock: --failure-rate must be within [0, 1] and --block-time-ms above 0"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if lag_blocks > livechain::mock::MAX_LAG_BLOCKS {
        eprintln!(
            "livechain mock: --lag-blocks must be at most {}, got {lag_blocks}",
            livechain::mock::MAX_LAG_BLOCKS
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let spec = livechain::mock::MockSpec {
        chain_id,
        block_time: Duration::from_millis(block_time_ms),
        latency: (Duration::from_millis(lo), Duration::from_millis(hi)),
        failure_rate,
        lag_blocks,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("livechain mock: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(livechain::mock::run_standalone(listen, spec)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livechain mock: {e}");
            ExitCode::FAILURE
        }
    }
}
