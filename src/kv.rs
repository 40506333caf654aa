//! A Redis connection that helps and never hurts: what the shared cache and the shared rate
//! limits use. Every command is bounded by a timeout; a failed or slow command marks Redis down
//! (counted, logged once) and the caller goes on without it while a background task
//! reconnects, with a growing pause between tries. The URL (it may hold a password) is never
//! logged: errors are shown by their kind only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Where a link reports: its up gauge and error counter, and its name in log lines.
#[derive(Clone)]
pub struct Report {
    pub what: &'static str,
    pub up: prometheus::IntGauge,
    pub errors: prometheus::IntCounter,
}

pub struct Link {
    client: redis::Client,
    timeout: Duration,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Believed up (for the log's "down"/"back" lines).
    up: AtomicBool,
    lost: Arc<Notify>,
    report: Report,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = task.take() {
            t.abort();
        }
    }
}

impl Link {
    /// Opens a link (on the current runtime, which must outlive it).
    pub fn start(
        url: &str,
        timeout: Duration,
        report: Report,
    ) -> Result<Arc<Link>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let link = Arc::new(Link {
            client,
            timeout,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(true),
            lost: Arc::new(Notify::new()),
            report,
            task: std::sync::Mutex::new(None),
        });
        // Spawned once `link` exists: the task holds it weakly and ends when it goes.
        let task = tokio::spawn(keep_connected(Arc::downgrade(&link)));
        *link.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(link)
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_up(&self) -> bool {
        self.conn.load().is_some()
    }

    /// The connection, when up (a cheap clone of a multiplexed handle).
    pub fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.load().as_deref().cloned()
    }

    /// Runs `cmd` within the timeout; `None` when Redis is down, slow or refused it.
    pub async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.connection()?;
        let answer = self.bounded(what, self.timeout, cmd.query_async::<T>(&mut conn));
        self.counted(what, answer.await)
    }

    /// [`Link::run`] that hands back a command Redis refused (not counted as a failure: the
    /// caller may know what to do, e.g. load a script); `Err(None)` when Redis is down or slow.
    pub async fn run_quiet<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, Option<redis::RedisError>> {
        let mut conn = self.connection().ok_or(None)?;
        self.bounded(what, self.timeout, cmd.query_async::<T>(&mut conn))
            .await
    }

    /// [`Link::run`] for a pipeline (one round trip), within `timeout`.
    pub async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
        timeout: Duration,
    ) -> Option<T> {
        let mut conn = self.connection()?;
        let answer = self.bounded(what, timeout, pipe.query_async::<T>(&mut conn));
        self.counted(what, answer.await)
    }

    /// Awaits a command within `timeout`. A failure of the connection or a timeout is counted
    /// (and marks Redis down) and comes back as `Err(None)`; a command Redis refused comes back
    /// as it is, uncounted.
    async fn bounded<T>(
        &self,
        what: &str,
        timeout: Duration,
        answer: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Option<redis::RedisError>> {
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.code().is_some() => Err(Some(e)),
            Ok(Err(e)) => {
                self.failed(what, Some(&e));
                Err(None)
            }
            Err(_) => {
                self.failed(what, None);
                Err(None)
            }
        }
    }

    /// A [`Link::bounded`] answer for callers with nothing to do about a refused command: it
    /// is counted too.
    fn counted<T>(&self, what: &str, answer: Result<T, Option<redis::RedisError>>) -> Option<T> {
        match answer {
            Ok(v) => Some(v),
            Err(Some(refused)) => {
                self.failed(what, Some(&refused));
                None
            }
            Err(None) => None,
        }
    }

    /// Counts a failure; one of the connection (not a command Redis refused) marks it down.
    pub fn failed(&self, what: &str, e: Option<&redis::RedisError>) {
        self.report.errors.inc();
        let connection = e.is_none_or(|e| {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
        });
        if !connection {
            tracing::debug!(
                store = self.report.what,
                operation = what,
                error = e.map_or("timeout", |e| e.category()),
                "redis command failed"
            );
            return;
        }
        self.conn.store(None);
        self.report.up.set(0);
        self.lost.notify_one();
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                store = self.report.what,
                operation = what,
                error = e.map_or("timeout", |e| e.category()),
                "redis unavailable; going on without it until it is back"
            );
        }
    }
}

/// Keeps a connection open: connects at start and whenever a command found Redis gone.
async fn keep_connected(me: Weak<Link>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(link) = me.upgrade() else { return };
        if link.conn.load().is_some() {
            let lost = link.lost.clone();
            drop(link);
            lost.notified().await;
            continue;
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(link.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(link.timeout));
        match link
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => {
                let ping: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                if ping.is_ok() {
                    link.conn.store(Some(Arc::new(conn)));
                    link.report.up.set(1);
                    pause = Duration::from_millis(100);
                    if !link.up.swap(true, Ordering::AcqRel) {
                        tracing::info!(store = link.report.what, "redis is back");
                    }
                    continue;
                }
            }
            Err(e) => {
                link.report.up.set(0);
                if link.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        store = link.report.what,
                        error = e.category(),
                        "redis unavailable; going on without it until it is back"
                    );
                }
            }
        }
        drop(link);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
