//! Unit tests for the config module: parsing the documented examples, every validation message,
//! interpolation and secret hygiene, and loading from disk. The environment is always injected.

mod policy;
mod server;
mod upstream;
mod upstreams;

use std::path::{Path, PathBuf};

use super::*;

/// Values the fake environment hands out; tests assert these never show up in messages.
const ALCHEMY_SECRET: &str = "alchemy-s3cret-value";
const INFURA_SECRET: &str = "infura-s3cret-value";

fn env(name: &str) -> Option<String> {
    let value = match name {
        "ALCHEMY_KEY" => ALCHEMY_SECRET.to_string(),
        "INFURA_KEY" => INFURA_SECRET.to_string(),
        "LISTEN" => "0.0.0.0:9000".to_string(),
        "BAD_LISTEN" => format!("{INFURA_SECRET}:99999"),
        "BAD_URL" => format!("not a url {INFURA_SECRET}"),
        "BAD_HEADER" => format!("{INFURA_SECRET}\nx"),
        "SECRET_SCHEME" => format!("ftp{}", INFURA_SECRET.replace('-', "")),
        "CA_DIR" => format!("/{INFURA_SECRET}"),
        _ => return None,
    };
    Some(value)
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(name)
}

const MAIN: &str = "conf/livechain.toml";
const UPSTREAMS: &str = "conf/upstreams.toml";

fn server_err(text: &str) -> String {
    parse_server(text, Path::new(MAIN), env)
        .expect_err("config should be rejected")
        .to_string()
}

fn upstreams_ok(text: &str) -> UpstreamsConfig {
    parse_upstreams(text, Path::new(UPSTREAMS), env).expect("config should be accepted")
}

fn upstreams_err(text: &str) -> String {
    parse_upstreams(text, Path::new(UPSTREAMS), env)
        .expect_err("config should be rejected")
        .to_string()
}

/// One chain `ethereum` with one upstream `a` whose remaining keys are `body`.
fn one_upstream(body: &str) -> String {
    format!(
        "[chains.ethereum]\nchain_id = 1\n\n[[chains.ethereum.upstreams]]\nname = \"a\"\n{body}\n"
    )
}

/// The single problem reported for [`one_upstream`]`(body)`.
fn upstream_err(body: &str) -> String {
    upstreams_err(&one_upstream(body))
}

#[test]
fn load_reads_both_files_with_process_env() {
    let path = testdata("minimal/livechain.toml");
    let config = load(&path).unwrap();
    assert_eq!(config.path, path);
    assert_eq!(
        config.server.upstreams_path,
        testdata("minimal/upstreams.toml")
    );
    assert_eq!(config.upstreams.path, testdata("minimal/upstreams.toml"));
    let dev = &config.upstreams.chains["dev"];
    assert_eq!(dev.chain_id, 1337);
    assert!(matches!(&dev.upstreams[0].target, UpstreamTarget::Mock(m) if m.chain_id == 1337));
    assert_eq!(
        load_upstreams(&testdata("minimal/upstreams.toml"))
            .unwrap()
            .chains
            .len(),
        1
    );
}

#[test]
fn load_with_env_reads_the_documented_examples() {
    let config = load_with_env(&testdata("livechain.toml"), env).unwrap();
    assert_eq!(config.server.threads, 2);
    assert_eq!(config.upstreams.chains["ethereum"].upstreams.len(), 2);
    assert_eq!(config.upstreams.path, testdata("upstreams.toml"));
}

#[test]
fn load_reports_a_missing_file_by_path() {
    let err = load(Path::new("/nonexistent/livechain.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("/nonexistent/livechain.toml: cannot read file: "),
        "{msg}"
    );

    let msg = load_upstreams(Path::new("/nonexistent/up.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("/nonexistent/up.toml: cannot read file: "),
        "{msg}"
    );
}

#[test]
fn load_reports_a_missing_upstreams_file_relative_to_main_file() {
    let dir = std::env::temp_dir().join(format!("livechain-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let main = dir.join("main.toml");
    std::fs::write(&main, "[server]\nupstreams = \"nope.toml\"\n").unwrap();
    let msg = load_with_env(&main, env).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    let expected = format!("{}: cannot read file: ", dir.join("nope.toml").display());
    assert!(msg.starts_with(&expected), "{msg}");
}

#[test]
fn load_reports_problems_of_both_files_together() {
    let dir = std::env::temp_dir().join(format!("livechain-config-both-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let main = dir.join("livechain.toml");
    std::fs::write(&main, "[server]\nthreads = 0\n").unwrap();
    std::fs::write(
        dir.join("upstreams.toml"),
        "[chains.ethereum]\nchain_id = 0\n",
    )
    .unwrap();
    let err = load_with_env(&main, env).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let keys: Vec<_> = err.problems().iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        [
            "server.threads",
            "chains.ethereum.chain_id",
            "chains.ethereum.upstreams"
        ]
    );
    assert_eq!(err.to_string().lines().count(), 3);
}
