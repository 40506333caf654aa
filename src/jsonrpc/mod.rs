//! JSON-RPC 2.0: parsing request bodies (`parse`), the errors livechain answers itself (`error`),
//! and putting a batch's answers back together (`batch`).

pub mod batch;
pub mod error;
pub mod parse;

pub use error::{code, RpcError};
pub use parse::{parse, BodyError, Call, Invalid, Item, Request};
