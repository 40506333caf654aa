//! A real `redis-server` (installed by `scripts/deps`) on a free loopback port, for the tests of
//! what livechain shares through Redis; killed by its PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{eventually, free_port};

/// A `redis-server` on a loopback port, killed by its PID when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/deps installs it)");
        let r = Redis { child, port };
        let up = eventually(Duration::from_secs(10), || async {
            r.command(&["PING"]).await.is_some_and(|a| a == "+PONG")
        })
        .await;
        assert!(up, "redis-server did not answer PING on port {port}");
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command; the first line of the answer.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .ok()?
        .ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.ok()?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(1),
            BufReader::new(s).read_line(&mut line),
        )
        .await
        .ok()?
        .ok()?;
        Some(line.trim_end().to_owned())
    }

    pub async fn keys(&self) -> u64 {
        self.command(&["DBSIZE"])
            .await
            .and_then(|l| l.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
