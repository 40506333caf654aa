//! HTTP/1.1 as livechain speaks it: as a server to clients (`proxy::front`) and as a client to
//! upstreams (`upstream::http1`). One layer for both, so that no two places parse
//! `Content-Length`, tokenise `Connection` or decode chunks each their own way:
//!
//! - [`head`]: request and response heads, framed by one function;
//! - [`body`]: `Content-Length` and chunked bodies;
//! - [`answer`]: the answers livechain writes, and the one writer.
//!
//! Pingora's HTTP/1 session is not used for either side. It costs more per request than nginx
//! spends on a whole proxied exchange (docs/performance.md), and having both it and a fast
//! path meant two parsers that disagreed at the edges (a missing `Host`, two `Content-Type`s,
//! pipelined requests after one Pingora served). The fuzz targets hold this layer to Pingora's
//! parser and body reader on the same bytes (`fuzz/`).

pub mod answer;
pub mod body;
pub mod head;

pub use answer::Answer;
