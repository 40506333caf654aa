//! Rate limits: token buckets (GCRA, `governor`) per API key and, for requests without a key,
//! per client address; one bucket counts calls (a batch counts as its calls), another compute
//! units (each call's method cost, `[limits.method_costs]`).
//!
//! The buckets outlive reloads: a key whose rates did not change keeps its bucket (a SIGHUP
//! must not hand every client a fresh burst), a key whose rates changed starts a full one.
//!
//! With `[limits] backend = "redis"` the buckets live in Redis and every instance draws from
//! the same ones: one script per check (both buckets at once, on Redis's clock), so a check is
//! one round trip. When Redis cannot answer, `on_backend_error` decides: this instance's own
//! buckets (`local`), or a refusal with 503 (`deny`); logged once, counted, and Redis is taken
//! back as soon as it answers again. At high rates an instance takes a share of a bucket at
//! once (1/50 of a second's worth, used within a second) so that most checks need no round
//! trip; unused shares are lost, so instances together never admit more than the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use super::Who;
use crate::config::{AccessConfig, KeysConfig, LimitsBackend, OnBackendError, Rate};
use crate::kv::{Link, Report};
use crate::metrics::metrics;

/// GCRA over up to two buckets at once, on Redis's clock. KEYS: the buckets; ARGV per bucket:
/// emission interval and tolerance (µs), cost. Takes from every bucket or from none; returns 0,
/// or the µs until the request would fit.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local wait = 0
for i = 1, #KEYS do
  local T = tonumber(ARGV[i * 3 - 2])
  local tau = tonumber(ARGV[i * 3 - 1])
  local n = tonumber(ARGV[i * 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local nt = tat + n * T
  if nt - now > tau then
    if nt - now - tau > wait then wait = nt - now - tau end
  end
  new[i] = nt
end
if wait > 0 then return math.ceil(wait) end
for i = 1, #KEYS do
  local tau = tonumber(ARGV[i * 3 - 1])
  redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', math.floor(tau / 1000) + 1000)
end
return 0
"#;

/// Tokens taken from Redis ahead of need are used within this long, or lost (which only ever
/// under-admits).
const LEASE_FOR: Duration = Duration::from_secs(1);
/// Share of a bucket's rate taken from Redis at once: 1/50 of a second's worth (2 % of the
/// limit per instance at most held unused).
const LEASE_SHARE: u32 = 50;
/// Share fetches a request waits for before it asks on its own.
const WAIT_ROUNDS: usize = 8;
/// Leases held at once, all buckets.
const MAX_LEASES: usize = 100_000;

type Waiting = futures::future::Shared<tokio::sync::oneshot::Receiver<()>>;

/// The share fetch in flight for a bucket; done when dropped (its waiters wake either way).
struct Fetching<'a> {
    limiter: &'a Limiter,
    id: String,
    _done: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .limiter
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        inflight.remove(&self.id);
    }
}

/// What this instance took from a shared bucket ahead of need.
struct Lease {
    calls: u32,
    units: u32,
    until: std::time::Instant,
}

/// How much to take from a shared bucket for a request costing `n`: `n`, or a share of the
/// rate when that is more (never more than the bucket holds).
fn leased(r: Rate, n: u32) -> u32 {
    (r.per_second / LEASE_SHARE).min(r.burst).max(n)
}

/// Takes `calls` and `units` from the shared buckets of `id` in one script run: `Some(0)`, or
/// the µs until they would fit; `None` when Redis could not answer.
async fn take_shared(
    link: &Link,
    id: &str,
    rates: (Option<Rate>, Option<Rate>),
    calls: u32,
    units: u32,
) -> Option<u64> {
    // EVALSHA: the script is sent once (and again only if Redis lost it).
    let mut cmd = redis::cmd("EVALSHA");
    let buckets = [(rates.0, calls, "c"), (rates.1, units, "u")];
    let used = buckets.iter().filter(|(r, _, _)| r.is_some()).count();
    cmd.arg(&*GCRA_SHA).arg(used);
    for (_, _, kind) in buckets.iter().filter(|(r, _, _)| r.is_some()) {
        cmd.arg(format!("lc:1:rl:{id}:{kind}"));
    }
    for (r, n, _) in &buckets {
        if let Some(r) = r {
            let (t, tau) = gcra(*r);
            cmd.arg(t).arg(tau).arg(*n);
        }
    }
    match link.run_quiet::<u64>("limit", &cmd).await {
        Err(Some(e)) if e.code() == Some("NOSCRIPT") => {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(GCRA);
            let _: Option<String> = link.run("limit", &load).await;
            link.run::<u64>("limit", &cmd).await
        }
        Err(_) => None,
        Ok(v) => Some(v),
    }
}

/// The script's SHA-1, as `EVALSHA` names it.
static GCRA_SHA: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| redis::Script::new(GCRA).get_hash().to_owned());

/// The shared buckets' Redis, and what to do without it.
struct SharedLimits {
    backend: LimitsBackend,
    link: Option<Arc<Link>>,
    on_error: OnBackendError,
}

/// What a check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over a limit: the bucket has room again after this long.
    Limited(Duration),
    /// The shared limits could not be checked and the configuration says to refuse.
    Unavailable,
}

fn quota(r: Rate) -> Quota {
    let per = NonZeroU32::new(r.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(r.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per).allow_burst(burst)
}

/// One key's buckets, and the rates they were made for.
struct KeyBuckets {
    rates: (Option<Rate>, Option<Rate>),
    calls: Option<DefaultDirectRateLimiter>,
    units: Option<DefaultDirectRateLimiter>,
}

impl KeyBuckets {
    fn new(calls: Option<Rate>, units: Option<Rate>) -> KeyBuckets {
        KeyBuckets {
            rates: (calls, units),
            calls: calls.map(|r| DefaultDirectRateLimiter::direct(quota(r))),
            units: units.map(|r| DefaultDirectRateLimiter::direct(quota(r))),
        }
    }
}

/// Anonymous clients' buckets, by address.
struct IpBuckets {
    rates: (Option<Rate>, Option<Rate>),
    calls: Option<DefaultKeyedRateLimiter<IpAddr>>,
    units: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl IpBuckets {
    fn new(calls: Option<Rate>, units: Option<Rate>) -> IpBuckets {
        IpBuckets {
            rates: (calls, units),
            calls: calls.map(|r| DefaultKeyedRateLimiter::keyed(quota(r))),
            units: units.map(|r| DefaultKeyedRateLimiter::keyed(quota(r))),
        }
    }
}

struct Buckets {
    keys: ahash::AHashMap<String, Arc<KeyBuckets>>,
    ips: Arc<IpBuckets>,
}

/// The process's limits; [`Limiter::configure`] on start and every reload.
pub struct Limiter {
    buckets: ArcSwap<Buckets>,
    clock: DefaultClock,
    shared: ArcSwapOption<SharedLimits>,
    /// Tokens taken from the shared buckets ahead of need, by bucket id.
    leases: std::sync::Mutex<HashMap<String, Lease>>,
    /// Share fetches in flight, by bucket id.
    inflight: std::sync::Mutex<HashMap<String, Waiting>>,
    /// Forgets full anonymous buckets now and then.
    shrinking: std::sync::Once,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            buckets: ArcSwap::from_pointee(Buckets {
                keys: ahash::AHashMap::new(),
                ips: Arc::new(IpBuckets::new(None, None)),
            }),
            clock: DefaultClock::default(),
            shared: ArcSwapOption::empty(),
            leases: std::sync::Mutex::new(HashMap::new()),
            inflight: std::sync::Mutex::new(HashMap::new()),
            shrinking: std::sync::Once::new(),
        }
    }
}

/// A bucket's GCRA parameters for the script: emission interval and tolerance, in µs.
fn gcra(r: Rate) -> (u64, u64) {
    let t = 1_000_000 / u64::from(r.per_second.max(1));
    (t.max(1), t.max(1) * u64::from(r.burst.max(1)))
}

impl Limiter {
    /// Applies `[limits]` and the keys (a key's bucket is kept when its rates are unchanged).
    /// Needs a Tokio runtime that lives as long as the process (the Redis link's task, the
    /// periodic clean-up run on it).
    pub fn configure(self: &Arc<Self>, access: &AccessConfig, keys: &KeysConfig) {
        self.configure_shared(access);
        self.shrinking.call_once(|| {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let Some(me) = me.upgrade() else { return };
                    me.shrink();
                }
            });
        });
        let old = self.buckets.load();
        let mut fresh = ahash::AHashMap::with_capacity(keys.keys.len());
        for k in &keys.keys {
            if k.rate.is_none() && k.units.is_none() {
                continue;
            }
            let kept = old
                .keys
                .get(&k.id)
                .filter(|b| b.rates == (k.rate, k.units))
                .cloned();
            fresh.insert(
                k.id.clone(),
                kept.unwrap_or_else(|| Arc::new(KeyBuckets::new(k.rate, k.units))),
            );
        }
        let anonymous = (access.anonymous_rate, access.anonymous_units);
        let ips = if old.ips.rates == anonymous {
            old.ips.clone()
        } else {
            Arc::new(IpBuckets::new(anonymous.0, anonymous.1))
        };
        self.buckets.store(Arc::new(Buckets { keys: fresh, ips }));
    }

    fn configure_shared(&self, access: &AccessConfig) {
        let current = self.shared.load();
        if let Some(c) = current.as_deref() {
            if c.backend == access.backend {
                if c.on_error != access.on_backend_error {
                    self.shared.store(Some(Arc::new(SharedLimits {
                        backend: c.backend.clone(),
                        link: c.link.clone(),
                        on_error: access.on_backend_error,
                    })));
                }
                return;
            }
        }
        let link = match &access.backend {
            LimitsBackend::Memory => None,
            LimitsBackend::Redis { url, timeout } => {
                let m = metrics();
                let report = Report {
                    what: "limits",
                    up: m.limits_backend_up.clone(),
                    errors: m.limits_backend_errors.clone(),
                };
                match Link::start(url, *timeout, report) {
                    Ok(link) => Some(link),
                    Err(e) => {
                        // Never the URL itself in the log.
                        tracing::error!(
                            error = e.category(),
                            "limits.redis_url refused; every check goes by on_backend_error"
                        );
                        None
                    }
                }
            }
        };
        self.shared.store(Some(Arc::new(SharedLimits {
            backend: access.backend.clone(),
            link,
            on_error: access.on_backend_error,
        })));
    }

    /// Takes `calls` calls and `units` compute units from `who`'s buckets.
    pub async fn check(&self, who: &Who, calls: u32, units: u32) -> Verdict {
        let shared = self.shared.load_full();
        let Some(shared) = shared.filter(|s| s.backend != LimitsBackend::Memory) else {
            return self.check_local(who, calls, units);
        };
        let (rates, id) = match who {
            Who::Key(key, _) => ((key.rate, key.units), format!("k:{}", key.id)),
            Who::Anonymous(ip) => (self.buckets.load().ips.rates, format!("i:{ip}")),
        };
        if rates == (None, None) {
            return Verdict::Allowed;
        }
        // A bucket the key does not have takes nothing (and leases none).
        let calls = if rates.0.is_some() { calls } else { 0 };
        let units = if rates.1.is_some() { units } else { 0 };
        if self.take_leased(&id, calls, units) {
            return Verdict::Allowed;
        }
        let Some(link) = shared.link.as_ref().filter(|l| l.is_up()) else {
            return self.without_redis(&shared, who, calls, units);
        };
        // One share fetch per bucket at a time: requests arriving meanwhile wait for it and
        // take from it (thousands of requests at once must not each fetch a share); one the
        // share did not cover waits for the next fetch, or makes it. Bounded: after a few
        // rounds a request asks on its own.
        let mut fetching = None;
        for _ in 0..WAIT_ROUNDS {
            match self.fetch_turn(&id) {
                Ok(turn) => {
                    fetching = turn;
                    break;
                }
                Err(wait) => {
                    let _ = wait.await;
                    if self.take_leased(&id, calls, units) {
                        return Verdict::Allowed;
                    }
                }
            }
        }
        let _fetching = fetching;
        // A share of the rate at once, kept here for the next requests: at a high rate most
        // checks then need no round trip. Near the limit, the exact cost is asked.
        let lease = (
            rates.0.map_or(0, |r| leased(r, calls)),
            rates.1.map_or(0, |r| leased(r, units)),
        );
        let mut answer = take_shared(link, &id, rates, lease.0, lease.1).await;
        if matches!(answer, Some(us) if us > 0) && lease != (calls, units) {
            answer = take_shared(link, &id, rates, calls, units).await;
            if answer == Some(0) {
                return Verdict::Allowed;
            }
        } else if answer == Some(0) {
            self.keep_lease(
                id,
                lease.0 - calls.min(lease.0),
                lease.1 - units.min(lease.1),
            );
        }
        match answer {
            Some(0) => Verdict::Allowed,
            Some(us) => Verdict::Limited(Duration::from_micros(us)),
            None => self.without_redis(&shared, who, calls, units),
        }
    }

    fn without_redis(&self, shared: &SharedLimits, who: &Who, calls: u32, units: u32) -> Verdict {
        match shared.on_error {
            OnBackendError::Local => self.check_local(who, calls, units),
            OnBackendError::Deny => Verdict::Unavailable,
        }
    }

    /// Becomes the one fetching a share of `id`'s buckets (`Ok`, dropped when done), or the
    /// wait for the fetch in flight (`Err`).
    fn fetch_turn(&self, id: &str) -> Result<Option<Fetching<'_>>, Waiting> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = inflight.get(id) {
            return Err(w.clone());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        inflight.insert(id.to_owned(), futures::FutureExt::shared(rx));
        Ok(Some(Fetching {
            limiter: self,
            id: id.to_owned(),
            _done: tx,
        }))
    }

    /// Takes from what this instance holds of `id`'s buckets, when it holds enough.
    fn take_leased(&self, id: &str, calls: u32, units: u32) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = leases.get_mut(id) else {
            return false;
        };
        if l.until < std::time::Instant::now() {
            leases.remove(id);
            return false;
        }
        if l.calls < calls || l.units < units {
            return false;
        }
        l.calls -= calls;
        l.units -= units;
        true
    }

    fn keep_lease(&self, id: String, calls: u32, units: u32) {
        if calls == 0 && units == 0 {
            return;
        }
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: ids are keys, or client addresses with anonymous limits.
        if leases.len() >= MAX_LEASES {
            let now = std::time::Instant::now();
            leases.retain(|_, l| l.until > now);
            if leases.len() >= MAX_LEASES {
                return;
            }
        }
        leases.insert(
            id,
            Lease {
                calls,
                units,
                until: std::time::Instant::now() + LEASE_FOR,
            },
        );
    }

    fn check_local(&self, who: &Who, calls: u32, units: u32) -> Verdict {
        let buckets = self.buckets.load();
        let now = self.clock.now();
        let wait =
            |r: Result<Result<(), governor::NotUntil<_>>, governor::InsufficientCapacity>| {
                match r {
                    Ok(Ok(())) => None,
                    Ok(Err(not_until)) => Some(not_until.wait_time_from(now)),
                    // More than the bucket holds at all: never fits; a second is as good an answer
                    // as any (the client must send less at once).
                    Err(_) => Some(Duration::from_secs(1)),
                }
            };
        let n = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
        let limited = match who {
            Who::Key(key, _) => {
                let Some(b) = buckets.keys.get(&key.id) else {
                    return Verdict::Allowed;
                };
                b.calls
                    .as_ref()
                    .and_then(|l| wait(l.check_n(n(calls))))
                    .or_else(|| b.units.as_ref().and_then(|l| wait(l.check_n(n(units)))))
            }
            Who::Anonymous(ip) => {
                let b = &buckets.ips;
                b.calls
                    .as_ref()
                    .and_then(|l| wait(l.check_key_n(ip, n(calls))))
                    .or_else(|| {
                        b.units
                            .as_ref()
                            .and_then(|l| wait(l.check_key_n(ip, n(units))))
                    })
            }
        };
        match limited {
            None => Verdict::Allowed,
            Some(after) => Verdict::Limited(after),
        }
    }

    /// Forgets addresses whose buckets are full again (a keyed limiter grows with every
    /// client address it has seen).
    pub fn shrink(&self) {
        let buckets = self.buckets.load();
        if let Some(l) = &buckets.ips.calls {
            l.retain_recent();
        }
        if let Some(l) = &buckets.ips.units {
            l.retain_recent();
        }
    }
}
