//! JSON-RPC 2.0: parsing request bodies (`parse`), the errors livechain answers itself (`error`),
//! and putting a batch's answers back together (`batch`).

pub mod batch;
pub mod classify;
pub mod error;
pub mod parse;
pub mod reference;
pub mod scan;
pub mod tx;

pub use error::{code, RpcError};
pub use parse::{parse, BodyError, Bounds, Call, Invalid, Item, Request};

/// The method of the first call of a batch, for logs.
pub fn batch_first_method<'b>(body: &'b [u8], items: &'b [Item]) -> Option<&'b str> {
    items.iter().find_map(|i| match i {
        Item::Call(c) => Some(c.method(body)),
        Item::Invalid(_) => None,
    })
}
