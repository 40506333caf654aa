//! Reload on file change (`server.watch_config`): the main config file, the upstreams file and
//! the keys file are looked at every [`POLL`]; once one has changed and then stayed unchanged
//! for [`QUIET`] (an editor's several writes, a deploy tool's copy of three files), the reload
//! runs, the same one SIGHUP runs.
//!
//! Why a poll of the files' contents rather than inotify (the `notify` crate and a debouncer):
//! Kubernetes updates a ConfigMap volume by writing a new `..2024_xx` directory and renaming
//! the `..data` symlink onto it; the files are symlinks through `..data`, so nothing happens to
//! the inode an inotify watch on the file holds, and a watch on the old directory dies with it
//! (it must be re-armed on the right event, in the right order). Editors replace files by
//! rename, NFS and some overlay filesystems send no events at all. Reading the path (through
//! its symlinks) sees all of these the same way. Three small files four times a second cost
//! nothing measurable, and the poll needs no dependency (`notify` with its debouncer would
//! bring a dozen crates). Comparing contents, not modification times, also means a `touch`
//! or a copy of the same text does not reload.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

/// How often the files are read while nothing is changing.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the files must stay as they are after a change before the reload.
pub const QUIET: Duration = Duration::from_millis(250);
/// How often they are read while waiting for that quiet.
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// Files that never stop changing are reloaded anyway after this long.
const MAX_SETTLE: Duration = Duration::from_secs(5);

/// What a file held when last read: enough to see that it changed, nothing of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Missing or unreadable (mid-replacement, or deleted).
    Missing,
    Content {
        len: u64,
        hash: u64,
    },
}

/// A change seen but not yet settled.
struct Pending {
    first: Instant,
    last_change: Instant,
    now: Vec<Seen>,
}

/// The watched files and what they held at the last reload they caused.
pub struct FileWatch {
    paths: Vec<PathBuf>,
    seen: Vec<Seen>,
    pending: Option<Pending>,
}

impl FileWatch {
    /// Watches `paths` from what they hold now.
    pub async fn new(paths: Vec<PathBuf>) -> FileWatch {
        let seen = read_all(&paths).await;
        FileWatch {
            paths,
            seen,
            pending: None,
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Watches `paths` from now on (after a reload named other files): files watched before
    /// keep what they were last seen to hold, new ones start from what they hold now.
    pub async fn set_paths(&mut self, paths: Vec<PathBuf>) {
        if paths == self.paths {
            return;
        }
        let now = read_all(&paths).await;
        self.seen = paths
            .iter()
            .zip(now)
            .map(|(p, now)| match self.paths.iter().position(|q| q == p) {
                Some(i) => self.seen[i],
                None => now,
            })
            .collect();
        self.paths = paths;
        self.pending = None;
    }

    /// Waits until a watched file has changed and then stayed unchanged for [`QUIET`]; the
    /// files that changed. Cancel-safe: dropped while waiting (a SIGHUP came first), the next
    /// call goes on from where it was.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            let now_seen = read_all(&self.paths).await;
            let now = Instant::now();
            let wait = match &mut self.pending {
                None if now_seen == self.seen => POLL,
                None => {
                    self.pending = Some(Pending {
                        first: now,
                        last_change: now,
                        now: now_seen,
                    });
                    SETTLE_POLL
                }
                Some(p) => {
                    if now_seen != p.now {
                        p.now = now_seen;
                        p.last_change = now;
                    }
                    let settled = now.duration_since(p.last_change) >= QUIET
                        || now.duration_since(p.first) >= MAX_SETTLE;
                    if settled {
                        let settled = std::mem::take(&mut p.now);
                        self.pending = None;
                        let changed: Vec<PathBuf> = self
                            .paths
                            .iter()
                            .zip(self.seen.iter().zip(&settled))
                            .filter(|(_, (before, after))| before != after)
                            .map(|(path, _)| path.clone())
                            .collect();
                        self.seen = settled;
                        // Changed and changed back: nothing to reload.
                        if !changed.is_empty() {
                            return changed;
                        }
                        POLL
                    } else {
                        SETTLE_POLL
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Reads every file off the runtime's threads (a hung network mount must not stall the
/// control runtime, which also answers SIGHUP).
async fn read_all(paths: &[PathBuf]) -> Vec<Seen> {
    let paths = paths.to_vec();
    let n = paths.len();
    tokio::task::spawn_blocking(move || paths.iter().map(|p| read(p)).collect())
        .await
        .unwrap_or_else(|_| vec![Seen::Missing; n])
}

fn read(path: &std::path::Path) -> Seen {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            Seen::Content {
                len: bytes.len() as u64,
                hash: h.finish(),
            }
        }
        Err(_) => Seen::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("livechain-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `changed()` within `within`, or `None`.
    async fn next(w: &mut FileWatch, within: Duration) -> Option<Vec<PathBuf>> {
        tokio::time::timeout(within, w.changed()).await.ok()
    }

    #[tokio::test]
    async fn several_writes_are_one_change_and_the_same_text_is_none() {
        let d = dir("writes");
        let (a, b) = (d.join("a.toml"), d.join("b.toml"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "b").unwrap();
        let mut w = FileWatch::new(vec![a.clone(), b.clone()]).await;
        // Rewritten with the same text: not a change.
        std::fs::write(&a, "one").unwrap();
        assert_eq!(next(&mut w, Duration::from_millis(800)).await, None);
        let started = Instant::now();
        for i in 0..5 {
            std::fs::write(&a, format!("two {i}")).unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let changed = next(&mut w, Duration::from_secs(3)).await;
        assert_eq!(changed, Some(vec![a.clone()]));
        assert!(
            started.elapsed() >= Duration::from_millis(300) + QUIET,
            "waited for the writes to stop"
        );
        // Settled: no second change for the same writes.
        assert_eq!(next(&mut w, Duration::from_millis(800)).await, None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_kubernetes_style_symlink_swap_is_a_change() {
        let d = dir("k8s");
        let v1 = d.join("..2024_01");
        let v2 = d.join("..2024_02");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v1.join("u.toml"), "old").unwrap();
        std::fs::write(v2.join("u.toml"), "new").unwrap();
        std::os::unix::fs::symlink("..2024_01", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/u.toml", d.join("u.toml")).unwrap();
        let path = d.join("u.toml");
        let mut w = FileWatch::new(vec![path.clone()]).await;
        // Kubernetes' atomic swap: a new symlink renamed over `..data`.
        std::os::unix::fs::symlink("..2024_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(&v1).unwrap();
        assert_eq!(next(&mut w, Duration::from_secs(3)).await, Some(vec![path]));
        let _ = std::fs::remove_dir_all(&d);
    }
}
