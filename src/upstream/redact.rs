//! Upstream URLs as they may be shown: in logs, metrics, `/status` and error messages.
//!
//! Provider URLs carry secrets in the userinfo (`user:pass@`), the path (`/v3/KEY`) and the query
//! (`?apikey=`); only the scheme, host and port are kept.

use url::Url;

/// `https://***@host:port/***?***`, with each part present only if the URL had it.
pub fn redact(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str("***@");
    }
    out.push_str(url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    if !matches!(url.path(), "" | "/") {
        out.push_str("/***");
    }
    if url.query().is_some() {
        out.push_str("?***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(&Url::parse(s).unwrap())
    }

    #[test]
    fn secrets_are_removed() {
        assert_eq!(
            r("https://user:pass@mainnet.infura.io/v3/0123456789abcdef"),
            "https://***@mainnet.infura.io/***"
        );
        assert_eq!(
            r("https://eth.example.com:8443/rpc?apikey=SECRET"),
            "https://eth.example.com:8443/***?***"
        );
        assert_eq!(r("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(r("http://[::1]:8545/"), "http://[::1]:8545");
    }
}
