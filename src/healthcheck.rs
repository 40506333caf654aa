//! `livechain health`: one HTTP GET of a health endpoint, for container `HEALTHCHECK`s and
//! scripts, so that an image needs no curl. Plain HTTP/1.1 over a blocking socket with a
//! deadline: a health check must never hang, and it talks to a listener on the same host.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The URL a container probes by default: readiness on the default listener.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8545/health/ready";

/// Why no status could be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0:?} is not an http:// URL with a host")]
    Url(String),
    #[error("{url}: {cause}")]
    Io { url: String, cause: std::io::Error },
    #[error("{url}: no answer within {ms} ms")]
    Timeout { url: String, ms: u128 },
    #[error("{url}: the answer is not HTTP/1.x")]
    NotHttp { url: String },
}

/// GETs `url` and returns the answer's status code. The whole exchange, connect included, is
/// bounded by `timeout`.
pub fn get_status(url: &str, timeout: Duration) -> Result<u16, CheckError> {
    let parsed = url::Url::parse(url).map_err(|_| CheckError::Url(url.to_owned()))?;
    let (Some(host), Some(port), "http") = (
        parsed.host_str(),
        parsed.port_or_known_default(),
        parsed.scheme(),
    ) else {
        return Err(CheckError::Url(url.to_owned()));
    };
    let io = |cause| CheckError::Io {
        url: url.to_owned(),
        cause,
    };
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    // `host_str` keeps an IPv6 literal's brackets: right for the Host header, not for the
    // address lookup.
    let host_port = format!("{host}:{port}");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare, port)
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| CheckError::Url(url.to_owned()))?;
    let timed_out = || CheckError::Timeout {
        url: url.to_owned(),
        ms: timeout.as_millis(),
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => timed_out(),
        _ => io(e),
    })?;
    let mut target = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: livechain-health\r\n\r\n",
        &host_port
    );
    stream
        .set_write_timeout(Some(left().max(Duration::from_millis(1))))
        .map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all that is needed: read until it is complete.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let wait = left();
        if wait.is_zero() {
            return Err(timed_out());
        }
        stream.set_read_timeout(Some(wait)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(io(e)),
        }
    }
    status_of(&head).ok_or_else(|| CheckError::NotHttp {
        url: url.to_owned(),
    })
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_of(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 abc\r\n"), None);
    }

    #[test]
    fn urls_other_than_http_are_refused() {
        for url in ["https://127.0.0.1/health", "127.0.0.1:8545", "http://"] {
            assert!(
                matches!(
                    get_status(url, Duration::from_secs(1)),
                    Err(CheckError::Url(_))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn ipv6_literals_are_reached() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback here
        };
        let url = format!(
            "http://[::1]:{}/health",
            listener.local_addr().unwrap().port()
        );
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = [0u8; 512];
            let n = s.read(&mut req).expect("read");
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .expect("write");
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        assert_eq!(
            get_status(&url, Duration::from_secs(5)).expect("status"),
            200
        );
        let req = server.join().expect("server");
        assert!(req.contains("\r\nHost: [::1]:"), "{req}");
    }

    #[test]
    fn a_silent_server_times_out() {
        // Accepts (the backlog does) but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/health/ready", listener.local_addr().unwrap());
        let started = Instant::now();
        let err = get_status(&url, Duration::from_millis(300)).expect_err("no answer");
        assert!(matches!(err, CheckError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reads_the_status_of_an_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/health/ready?x=1", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = [0u8; 512];
            let n = s.read(&mut req).expect("read");
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .expect("write");
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        assert_eq!(
            get_status(&url, Duration::from_secs(5)).expect("status"),
            503
        );
        let req = server.join().expect("server");
        assert!(
            req.starts_with("GET /health/ready?x=1 HTTP/1.1\r\n"),
            "{req}"
        );
    }
}
