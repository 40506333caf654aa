//! livechain: a JSON-RPC reverse proxy for blockchain node providers, built on Pingora.
//!
//! A request's path through the crate: [`proxy`] (the HTTP/1.1 front, on [`h1`]) → [`jsonrpc`]
//! (parse and classify the body) → [`route`] (chain and upstream table) → [`upstream`] (selection
//! and the HTTP exchange) → back through [`proxy`] to the client. Beside it, [`supervisor`]
//! follows every upstream's head and keeps each chain's canonical blocks in [`canon`], from which
//! [`ws`] serves client subscriptions; [`auth`] says who a request is and whether it may be served. [`config`] turns the user's TOML into the typed config
//! everything else uses; [`mock`] is the built-in node used by the default config and tests.
// One audited exception: `conn::Conn::adopt` borrows a descriptor Pingora owns.
#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cache;
pub mod canon;
pub mod check;
pub mod config;
pub mod conn;
pub mod control;
pub mod dlq;
pub mod dns;
pub mod drain;
pub mod h1;
pub mod health;
pub mod healthcheck;
pub mod jsonrpc;
pub mod kv;
pub mod metrics;
pub mod mock;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod server;
pub mod supervisor;
pub mod table;
pub mod telemetry;
pub mod upstream;
pub mod ws;
