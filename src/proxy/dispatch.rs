//! What a request is, decided once from its method, path and upgrade headers: JSON-RPC on a
//! chain, a WebSocket, a REST or service endpoint, or a refusal. Every listener's requests go
//! through [`route`], so no two doors can route or refuse differently.

use std::sync::Arc;

use http::{header, HeaderValue};

use crate::api::Endpoint;
use crate::h1::Answer;
use crate::jsonrpc::{code, error::quote, RpcError};
use crate::route::{Chain, Snapshot};

/// Which listener took the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The main listener; `metrics_here` when `/metrics` is served on it.
    Main { metrics_here: bool },
    /// `server.metrics_listen`: `/metrics` and `/health` only.
    Metrics,
}

/// What serves a request.
pub enum Target {
    /// `POST /{chain}`: a JSON-RPC body for the chain.
    JsonRpc(Arc<Chain>),
    /// A WebSocket upgrade on `/{chain}` or `/v1/ws/{chain}`.
    WebSocket(Arc<Chain>),
    /// `OPTIONS /{chain}`: a CORS preflight.
    Preflight,
    /// `GET`/`HEAD` of a service endpoint.
    Service(Endpoint),
    /// `GET`/`HEAD` under `/v1/chains`.
    Rest,
    /// Under `/v1/admin/dlq`: the transaction queue's admin API.
    Dlq(crate::api::dlq::DlqOp),
    /// `GET /v1/chains/{chain}/events`: the chain's events as Server-Sent Events.
    Events(Arc<Chain>),
    /// `GET /v1/chains/{chain}/health`: public like `/health` (no key, no admin token).
    ChainHealth(Arc<Chain>),
    /// A `POST` to a chain that does not exist: every call's id gets the error, with this HTTP
    /// status (404, or 503 while no chain is configured at all).
    UnknownChain(u16, Box<RpcError>),
    /// Refused without reading a body (which is drained to keep the connection). Boxed, like
    /// the error above: rare, and a request's target is moved a few times on the hot path.
    Refuse(Box<Answer>),
}

/// Decides what serves `method` on `path` (`websocket`: the request asks for an upgrade).
pub fn route(site: Site, method: &str, path: &str, websocket: bool, snapshot: &Snapshot) -> Target {
    let read_only = method == "GET" || method == "HEAD";
    let metrics_here = match site {
        Site::Main { metrics_here } => metrics_here,
        Site::Metrics => {
            let endpoint = match path {
                "/metrics" => Endpoint::Metrics,
                "/health" => Endpoint::Health,
                "/health/live" => Endpoint::Live,
                "/health/ready" => Endpoint::Ready,
                _ => {
                    return match chain_health(path, snapshot) {
                        Some(chain) if read_only => Target::ChainHealth(chain.clone()),
                        Some(_) => Target::Refuse(Box::new(not_allowed(
                            method,
                            path,
                            "GET, HEAD",
                            "use GET",
                        ))),
                        None => Target::Refuse(Box::new(not_found(path))),
                    }
                }
            };
            return service(endpoint, read_only, method, path);
        }
    };
    match path {
        "/health" => return service(Endpoint::Health, read_only, method, path),
        "/health/live" => return service(Endpoint::Live, read_only, method, path),
        "/health/ready" => return service(Endpoint::Ready, read_only, method, path),
        "/status" => return service(Endpoint::Status, read_only, method, path),
        "/metrics" if metrics_here => return service(Endpoint::Metrics, read_only, method, path),
        "/v1/admin/keys" => return service(Endpoint::Keys, read_only, method, path),
        _ => {}
    }
    if path == "/v1/admin/dlq" || path.starts_with("/v1/admin/dlq/") {
        return match crate::api::dlq::DlqOp::of(method, path) {
            Ok(Some(op)) => Target::Dlq(op),
            Ok(None) => Target::Refuse(Box::new(not_found(path))),
            Err(allow) => Target::Refuse(Box::new(not_allowed(
                method,
                path,
                allow,
                "see the admin API",
            ))),
        };
    }
    if path == "/v1/chains" || path.starts_with("/v1/chains/") {
        let events = path
            .strip_prefix("/v1/chains/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .and_then(|name| segment(name).and_then(|n| snapshot.chain(n)));
        if let (Some(chain), "GET") = (events, method) {
            return Target::Events(chain.clone());
        }
        if let (Some(chain), true) = (chain_health(path, snapshot), read_only) {
            return Target::ChainHealth(chain.clone());
        }
        return if read_only {
            Target::Rest
        } else {
            Target::Refuse(Box::new(not_allowed(method, path, "GET, HEAD", "use GET")))
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/ws/") {
        let chain = chain_segment(rest).and_then(|s| snapshot.chain(s));
        return match (chain, websocket, method) {
            (Some(chain), true, "GET") => Target::WebSocket(chain.clone()),
            (None, _, _) => Target::Refuse(Box::new(unknown_chain(
                snapshot,
                chain_segment(rest).unwrap_or(rest),
            ))),
            (Some(_), false, "GET") => Target::Refuse(Box::new(
                Answer::rpc_error(
                    426,
                    &RpcError::new(
                        code::INVALID_REQUEST,
                        "this is a WebSocket endpoint: connect with Upgrade: websocket",
                    ),
                )
                .with_header(header::UPGRADE, HeaderValue::from_static("websocket")),
            )),
            (Some(_), _, _) => Target::Refuse(Box::new(not_allowed(
                method,
                path,
                "GET",
                "open a WebSocket",
            ))),
        };
    }
    let name = path.strip_prefix('/').and_then(chain_segment);
    let Some(chain) = name.and_then(|s| snapshot.chain(s)) else {
        let name = name.unwrap_or(path);
        let (status, err) = unknown_chain_error(snapshot, name);
        return if method == "POST" {
            Target::UnknownChain(status, Box::new(err))
        } else {
            Target::Refuse(Box::new(Answer::rpc_error(status, &err)))
        };
    };
    match method {
        "POST" => Target::JsonRpc(chain.clone()),
        "OPTIONS" => Target::Preflight,
        "GET" if websocket => Target::WebSocket(chain.clone()),
        _ => Target::Refuse(Box::new(not_allowed(
            method,
            path,
            "POST, OPTIONS",
            "send JSON-RPC requests with POST, or open a WebSocket (GET with Upgrade: websocket)",
        ))),
    }
}

/// The chain of a chain path's rest: `ethereum`, `ethereum/`, or `ethereum/KEY` (an API key
/// after it, as provider URLs have them); `None` for more segments or none.
fn chain_segment(rest: &str) -> Option<&str> {
    chain_and_key(rest).map(|(chain, _)| chain)
}

fn chain_and_key(rest: &str) -> Option<(&str, Option<&str>)> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = rest.splitn(3, '/');
    let chain = parts.next().filter(|c| !c.is_empty())?;
    let key = parts.next();
    (parts.next().is_none() && key != Some("")).then_some((chain, key))
}

/// The API key in a chain path (`/ethereum/KEY`, `/v1/ws/ethereum/KEY`), if any.
pub fn path_key(path: &str) -> Option<&str> {
    if path.starts_with("/v1/chains") {
        return None;
    }
    let rest = path
        .strip_prefix("/v1/ws/")
        .or_else(|| path.strip_prefix('/'))?;
    chain_and_key(rest)?.1
}

/// The chain of `/v1/chains/{chain}/health`, by name or id.
fn chain_health<'a>(path: &str, snapshot: &'a Snapshot) -> Option<&'a Arc<Chain>> {
    path.strip_prefix("/v1/chains/")
        .and_then(|rest| rest.strip_suffix("/health"))
        .and_then(|name| segment(name).and_then(|n| snapshot.chain(n)))
}

/// The one segment of a path's rest: `ethereum`, `ethereum/`; `None` for more or none.
fn segment(rest: &str) -> Option<&str> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

fn service(endpoint: Endpoint, read_only: bool, method: &str, path: &str) -> Target {
    if read_only {
        Target::Service(endpoint)
    } else {
        Target::Refuse(Box::new(not_allowed(method, path, "GET, HEAD", "use GET")))
    }
}

fn not_allowed(method: &str, path: &str, allow: &'static str, hint: &str) -> Answer {
    let err = RpcError::new(
        code::INVALID_REQUEST,
        format!(
            "method {} not allowed on {}: {hint}",
            quote(method),
            quote(path)
        ),
    );
    Answer::rpc_error(405, &err).with_header(header::ALLOW, HeaderValue::from_static(allow))
}

fn not_found(path: &str) -> Answer {
    let err = RpcError::new(
        code::INVALID_REQUEST,
        format!("no endpoint {}", quote(path)),
    );
    Answer::rpc_error(404, &err)
}

fn unknown_chain(snapshot: &Snapshot, name: &str) -> Answer {
    let (status, err) = unknown_chain_error(snapshot, name);
    Answer::rpc_error(status, &err)
}

/// 404 naming the chains served; 503 while there are none (an installed but not yet configured
/// livechain is unavailable rather than wrong about the client's chain).
fn unknown_chain_error(snapshot: &Snapshot, name: &str) -> (u16, RpcError) {
    let known: Vec<String> = snapshot
        .chains()
        .map(|c| format!("/{} (/{})", c.name, c.chain_id))
        .collect();
    if known.is_empty() {
        return (
            503,
            RpcError::new(
                code::NO_UPSTREAM,
                "no chains are configured: add a [chains.NAME] with its upstreams to the \
                 upstreams file and reload",
            ),
        );
    }
    let err = RpcError::new(
        code::INVALID_REQUEST,
        format!(
            "unknown chain {:?}; this endpoint serves {}",
            quote(name),
            known.join(", ")
        ),
    );
    (404, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        snapshot_of(
            "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"u\"\n\
             http = \"http://127.0.0.1:9\"\n",
        )
    }

    fn snapshot_of(text: &str) -> Snapshot {
        let config = crate::config::Config {
            path: "t.toml".into(),
            server: crate::config::parse_server("", std::path::Path::new("t.toml"), |_| None)
                .unwrap(),
            upstreams: crate::config::parse_upstreams(text, std::path::Path::new("u.toml"), |_| {
                None
            })
            .unwrap(),
            keys: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut mocks = crate::control::MockHost::new(rt.handle().clone());
        crate::table::build(&config, None, &mut mocks)
            .unwrap()
            .snapshot
    }

    #[test]
    fn without_chains_every_chain_request_is_unavailable() {
        let empty = snapshot_of("");
        let main = Site::Main { metrics_here: true };
        match route(main, "POST", "/ethereum", false, &empty) {
            Target::UnknownChain(status, err) => {
                assert_eq!((status, err.code), (503, code::NO_UPSTREAM));
                assert!(err.message.contains("no chains are configured"), "{err:?}");
            }
            _ => panic!("not an unknown chain"),
        }
        for (method, path, ws) in [("GET", "/v1/ws/ethereum", true), ("GET", "/1", false)] {
            match route(main, method, path, ws, &empty) {
                Target::Refuse(a) => assert_eq!(a.status, 503, "{method} {path}"),
                _ => panic!("{method} {path} not refused"),
            }
        }
    }

    fn what(site: Site, method: &str, path: &str, ws: bool) -> String {
        match route(site, method, path, ws, &snapshot()) {
            Target::JsonRpc(c) => format!("jsonrpc {}", c.name),
            Target::WebSocket(c) => format!("ws {}", c.name),
            Target::Preflight => "preflight".into(),
            Target::Service(e) => format!("{e:?}"),
            Target::Rest => "rest".into(),
            Target::Events(c) => format!("events {}", c.name),
            Target::ChainHealth(c) => format!("chain health {}", c.name),
            Target::UnknownChain(..) => "unknown chain".into(),
            Target::Refuse(a) => format!("refuse {}", a.status),
            Target::Dlq(op) => format!("{op:?}"),
        }
    }

    #[test]
    fn every_request_shape_has_one_target() {
        let main = Site::Main { metrics_here: true };
        let cases = [
            ("POST", "/ethereum", false, "jsonrpc ethereum"),
            ("POST", "/1", false, "jsonrpc ethereum"),
            ("POST", "/ethereum/", false, "jsonrpc ethereum"),
            ("POST", "/nowhere", false, "unknown chain"),
            ("POST", "/", false, "unknown chain"),
            ("POST", "/a/b", false, "unknown chain"),
            ("GET", "/nowhere", false, "refuse 404"),
            ("OPTIONS", "/ethereum", false, "preflight"),
            ("GET", "/ethereum", true, "ws ethereum"),
            ("GET", "/ethereum", false, "refuse 405"),
            ("PUT", "/ethereum", false, "refuse 405"),
            ("GET", "/v1/ws/ethereum", true, "ws ethereum"),
            ("GET", "/v1/ws/1", true, "ws ethereum"),
            ("GET", "/v1/ws/ethereum", false, "refuse 426"),
            ("GET", "/v1/ws/nowhere", true, "refuse 404"),
            ("POST", "/v1/ws/ethereum", false, "refuse 405"),
            ("GET", "/health", false, "Health"),
            ("GET", "/health/live", false, "Live"),
            ("HEAD", "/health/ready", false, "Ready"),
            ("POST", "/health/ready", false, "refuse 405"),
            (
                "GET",
                "/v1/chains/ethereum/health",
                false,
                "chain health ethereum",
            ),
            ("GET", "/v1/chains/1/health", false, "chain health ethereum"),
            ("GET", "/v1/chains/nowhere/health", false, "rest"),
            ("POST", "/v1/chains/ethereum/health", false, "refuse 405"),
            ("HEAD", "/status", false, "Status"),
            ("POST", "/health", false, "refuse 405"),
            ("GET", "/metrics", false, "Metrics"),
            ("GET", "/v1/chains", false, "rest"),
            ("GET", "/v1/chains/ethereum/blocks/latest", false, "rest"),
            (
                "GET",
                "/v1/chains/ethereum/events",
                false,
                "events ethereum",
            ),
            ("GET", "/v1/chains/1/events", false, "events ethereum"),
            ("GET", "/v1/chains/nowhere/events", false, "rest"),
            ("POST", "/v1/chains/ethereum/events", false, "refuse 405"),
            ("DELETE", "/v1/chains", false, "refuse 405"),
            ("GET", "/v1/admin/dlq", false, "List"),
            ("POST", "/v1/admin/dlq/7/retry", false, "Retry(7)"),
            ("DELETE", "/v1/admin/dlq/7", false, "Delete(7)"),
            ("PATCH", "/v1/admin/dlq/7", false, "refuse 405"),
            ("GET", "/v1/admin/dlq/x", false, "refuse 404"),
        ];
        for (method, path, ws, want) in cases {
            assert_eq!(
                what(main, method, path, ws),
                want,
                "{method} {path} ws={ws}"
            );
        }
        let elsewhere = Site::Main {
            metrics_here: false,
        };
        assert_eq!(what(elsewhere, "GET", "/metrics", false), "refuse 404");
        assert_eq!(what(Site::Metrics, "GET", "/metrics", false), "Metrics");
        assert_eq!(what(Site::Metrics, "GET", "/health", false), "Health");
        assert_eq!(what(Site::Metrics, "GET", "/health/ready", false), "Ready");
        assert_eq!(what(Site::Metrics, "GET", "/health/live", false), "Live");
        assert_eq!(
            what(Site::Metrics, "GET", "/v1/chains/ethereum/health", false),
            "chain health ethereum"
        );
        assert_eq!(what(Site::Metrics, "GET", "/status", false), "refuse 404");
        assert_eq!(
            what(Site::Metrics, "POST", "/ethereum", false),
            "refuse 404"
        );
    }
}
