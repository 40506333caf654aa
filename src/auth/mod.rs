//! Who a request is, and whether it may be served: API keys (presented in the path, as
//! `Authorization: Bearer` or as `X-Api-Key`), anonymous clients by address (as trusted
//! proxies report it), the admin token, and the rate limits ([`limit`]).
//!
//! [`Access`] is the immutable part (keys and settings, swapped whole on reload with the
//! routing table); [`limit::Limiter`] keeps the buckets across reloads. A key is never kept or
//! shown: only its SHA-256, compared in constant time against every configured key's.

pub mod audit;
pub mod limit;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{sha256, AccessConfig, ApiKey, KeysConfig};

/// Keys and access settings, as of the last (re)load.
#[derive(Debug, Default)]
pub struct Access {
    pub config: AccessConfig,
    keys: Vec<Arc<ApiKey>>,
    /// Each key's SHA-256 with its place in `keys`, sorted by hash: a request's key is found
    /// by a binary search, then compared in constant time. The search's timing can tell at
    /// most how a hash of the presented key orders against configured hashes, which says
    /// nothing about any key (SHA-256 cannot be steered); comparing against every configured
    /// key instead cost a 100-key file 3 KB of comparisons per request.
    by_hash: Vec<([u8; 32], usize)>,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Who {
    Anonymous(IpAddr),
    Key(Arc<ApiKey>, IpAddr),
}

impl Who {
    /// What logs, metrics and the audit log show.
    pub fn label(&self) -> &str {
        match self {
            Who::Anonymous(_) => "anonymous",
            Who::Key(k, _) => &k.id,
        }
    }

    pub fn ip(&self) -> IpAddr {
        match self {
            Who::Anonymous(ip) | Who::Key(_, ip) => *ip,
        }
    }

    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Who::Key(k, _) => Some(k),
            Who::Anonymous(_) => None,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key where one is required.
    NoKey,
    /// A key that is not configured.
    UnknownKey,
    /// A configured key turned off.
    Disabled,
    /// The key may not use this chain.
    Chain,
    /// The key may not call this method.
    Method,
    /// The key does not allow this browser origin.
    Origin,
    /// The key does not allow this client address.
    Ip,
    /// Over a limit: try again after this long.
    Limited(Duration),
    /// The shared limits cannot be checked and `on_backend_error = "deny"`.
    Unavailable,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoKey | Refusal::UnknownKey | Refusal::Disabled => 401,
            Refusal::Chain | Refusal::Method | Refusal::Origin | Refusal::Ip => 403,
            Refusal::Limited(_) => 429,
            Refusal::Unavailable => 503,
        }
    }

    /// The `reason` label of `livechain_auth_failures_total` (and the audit log's decision).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Disabled => "disabled_key",
            Refusal::Chain => "chain",
            Refusal::Method => "method",
            Refusal::Origin => "origin",
            Refusal::Ip => "ip",
            Refusal::Limited(_) => "limited",
            Refusal::Unavailable => "limits_unavailable",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoKey => {
                "an API key is required: /CHAIN/KEY, Authorization: Bearer KEY or X-Api-Key"
            }
            Refusal::UnknownKey => "unknown API key",
            Refusal::Disabled => "this API key is disabled",
            Refusal::Chain => "this API key may not use this chain",
            Refusal::Method => "this API key may not call this method",
            Refusal::Origin => "this API key does not allow this origin",
            Refusal::Ip => "this API key does not allow this client address",
            Refusal::Limited(_) => "rate limit exceeded",
            Refusal::Unavailable => "rate limits cannot be checked right now",
        }
    }
}

/// Constant-time equality of two hashes: the time taken does not tell how much matched.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

impl Access {
    pub fn new(config: &AccessConfig, keys: &KeysConfig) -> Access {
        let keys: Vec<Arc<ApiKey>> = keys.keys.iter().cloned().map(Arc::new).collect();
        let mut by_hash: Vec<([u8; 32], usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.sha256, i))
            .collect();
        by_hash.sort_unstable();
        Access {
            config: config.clone(),
            keys,
            by_hash,
        }
    }

    /// Whether requests get an audit line: access control is on, or a file is named.
    pub fn audits(&self) -> bool {
        !self.is_open() || self.config.admin_token.is_some() || self.config.audit_log.is_some()
    }

    /// Whether anything here can refuse a request (keys configured, anonymous turned off, or
    /// a limit): when not, requests skip every check.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
            && self.config.anonymous
            && self.config.anonymous_rate.is_none()
            && self.config.anonymous_units.is_none()
    }

    pub fn keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.keys.iter().map(|k| &**k)
    }

    /// Who presents `key` (if any) from `ip`, before the chain and methods are known.
    pub fn identify(&self, key: Option<&[u8]>, ip: IpAddr) -> Result<Who, Refusal> {
        let Some(key) = key else {
            return if self.config.anonymous {
                Ok(Who::Anonymous(ip))
            } else {
                Err(Refusal::NoKey)
            };
        };
        let hash = sha256(key);
        let key = self
            .by_hash
            .binary_search_by(|(h, _)| h.cmp(&hash))
            .ok()
            .map(|at| &self.by_hash[at])
            .filter(|(h, _)| same(h, &hash))
            .map(|&(_, i)| &self.keys[i])
            .ok_or(Refusal::UnknownKey)?;
        if !key.enabled {
            return Err(Refusal::Disabled);
        }
        if !key.allows_ip(ip) {
            return Err(Refusal::Ip);
        }
        Ok(Who::Key(key.clone(), ip))
    }

    /// Whether `who` may use `chain` from `origin` (a browser's `Origin`).
    pub fn admit(&self, who: &Who, chain: &str, origin: Option<&str>) -> Result<(), Refusal> {
        let Some(key) = who.key() else { return Ok(()) };
        if !key.allows_chain(chain) {
            return Err(Refusal::Chain);
        }
        if let Some(origin) = origin {
            if !key.allows_origin(origin) {
                return Err(Refusal::Origin);
            }
        }
        Ok(())
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    /// address in `X-Forwarded-For` (or `Forwarded: for=`) that is not one.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        let trusted = |ip: IpAddr| self.config.trusted_proxies.iter().any(|c| c.contains(ip));
        let Some(list) = forwarded_for.filter(|_| trusted(peer)) else {
            return peer;
        };
        let Ok(list) = std::str::from_utf8(list) else {
            return peer;
        };
        let mut client = peer;
        // Right to left: each hop appended the address it saw.
        for hop in list.rsplit(',') {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !trusted(ip) {
                return ip;
            }
        }
        client
    }

    /// Whether `token` is the admin token (constant time); `None` when none is configured.
    pub fn is_admin(&self, token: Option<&[u8]>) -> Option<bool> {
        let want = self.config.admin_token.as_ref()?;
        Some(token.is_some_and(|t| same(&sha256(t), &sha256(want.as_bytes()))))
    }
}

/// One element of `X-Forwarded-For` (`203.0.113.5`, `[2001:db8::1]:443`) or of `Forwarded`
/// (`for=203.0.113.5`, `for="[2001:db8::1]"`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let mut hop = hop.trim();
    if let Some(for_) = hop
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("for=").or_else(|| p.strip_prefix("FOR=")))
    {
        hop = for_.trim_matches('"');
    }
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    // `1.2.3.4:5678`
    hop.rsplit_once(':')?.0.parse().ok()
}

/// The key a request presents: the path's segment after the chain (`/ethereum/KEY`), else
/// `Authorization: Bearer KEY`, else `X-Api-Key`.
pub fn presented<'a>(
    path_key: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
    api_key: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    path_key
        .or_else(|| authorization.and_then(bearer))
        .or(api_key.map(<[u8]>::trim_ascii))
        .filter(|k| !k.is_empty())
}

/// The token of `Authorization: Bearer TOKEN`.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    fn access(anonymous: bool) -> Access {
        let config = AccessConfig {
            anonymous,
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            admin_token: Some("admin-token-0123456789".into()),
            ..AccessConfig::default()
        };
        let key = |id: &str, secret: &str, enabled| ApiKey {
            id: id.into(),
            sha256: sha256(secret.as_bytes()),
            chains: Some(vec!["ethereum".into()]),
            deny: vec!["eth_send*".into()],
            rate: None,
            units: None,
            origins: Some(vec!["https://app.example.com".into()]),
            ips: Some(vec![Cidr::parse("127.0.0.0/8").unwrap()]),
            enabled,
        };
        let keys = KeysConfig {
            keys: vec![
                key("a", "secret-a-0123456789", true),
                key("off", "secret-off-0123456", false),
            ],
        };
        Access::new(&config, &keys)
    }

    #[test]
    fn keys_are_found_by_their_hash_and_checked() {
        let a = access(false);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(a.identify(None, local).unwrap_err(), Refusal::NoKey);
        assert_eq!(
            a.identify(Some(b"nope"), local).unwrap_err(),
            Refusal::UnknownKey
        );
        assert_eq!(
            a.identify(Some(b"secret-off-0123456"), local).unwrap_err(),
            Refusal::Disabled
        );
        assert_eq!(
            a.identify(Some(b"secret-a-0123456789"), "8.8.8.8".parse().unwrap())
                .unwrap_err(),
            Refusal::Ip
        );
        let who = a.identify(Some(b"secret-a-0123456789"), local).unwrap();
        assert_eq!(who.label(), "a");
        assert_eq!(a.admit(&who, "polygon", None), Err(Refusal::Chain));
        assert_eq!(
            a.admit(&who, "ethereum", Some("https://evil.example")),
            Err(Refusal::Origin)
        );
        assert!(a
            .admit(&who, "ethereum", Some("https://app.example.com"))
            .is_ok());
        assert!(who.key().unwrap().denies("eth_sendRawTransaction"));
        assert!(access(true).identify(None, local).is_ok());
        assert_eq!(a.is_admin(Some(b"admin-token-0123456789")), Some(true));
        assert_eq!(a.is_admin(Some(b"admin")), Some(false));
        assert_eq!(a.is_admin(None), Some(false));
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let a = access(true);
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let xff = b"203.0.113.9, 10.0.0.5";
        assert_eq!(a.client_ip(stranger, Some(xff)), stranger);
        assert_eq!(
            a.client_ip(proxy, Some(xff)),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A client's own forged entries left of the first untrusted hop are not believed.
        let forged = b"1.1.1.1, 203.0.113.9";
        assert_eq!(
            a.client_ip(proxy, Some(forged)),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(a.client_ip(proxy, Some(b"garbage")), proxy);
        assert_eq!(
            a.client_ip(proxy, Some(b"for=\"[2001:db8::1]:443\"")),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            presented(None, Some(b"Bearer abc"), None),
            Some(&b"abc"[..])
        );
        assert_eq!(
            presented(Some(b"k"), Some(b"Bearer abc"), None),
            Some(&b"k"[..])
        );
        assert_eq!(
            presented(None, Some(b"Basic abc"), Some(b" x ")),
            Some(&b"x"[..])
        );
        assert_eq!(presented(None, None, Some(b"")), None);
    }
}
