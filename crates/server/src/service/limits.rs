//! Rate limits: a token bucket per key (a token's hash, a client's address), refilled by the
//! injected [`Clock`] so that tests drive it with a manual clock, in a table of bounded size.
//!
//! The table keeps at most `max_keys` buckets and forgets the least recently used first: a
//! forgotten key starts again with a full bucket, which only ever errs on the side of letting a
//! request through, while a flood of new keys (made-up tokens, many addresses) cannot grow memory.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dimmer_domain::Clock;

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once (the bucket's size).
    pub burst: f64,
}

impl Rate {
    /// Parses `RATE/BURST` (`50/100`) or `RATE` (burst twice the rate); the error says what is
    /// wrong.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (rate, burst) = match text.split_once('/') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text.trim(), None),
        };
        let number = |s: &str| s.parse::<f64>().ok().filter(|n| n.is_finite() && *n > 0.0);
        let per_second =
            number(rate).ok_or_else(|| format!("\"{text}\": expected RATE/BURST such as 50/100, or off"))?;
        let burst = match burst {
            Some(b) => number(b).filter(|b| *b >= 1.0).ok_or_else(|| format!("\"{text}\": the burst must be >= 1"))?,
            None => (per_second * 2.0).max(1.0),
        };
        Ok(Rate { per_second, burst })
    }
}

/// The rate limits of a server; `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Per token (keyed by the token's hash, never the token).
    pub per_token: Option<Rate>,
    /// Per client address (an IPv4 address, or an IPv6 /64).
    pub per_address: Option<Rate>,
}

impl Default for RateLimits {
    /// Generous, because OFREP asks once per evaluation and a fleet of services may share one
    /// sdk token: 1,000 requests per second with bursts of 2,000 per token, 2,000 with bursts of
    /// 4,000 per address (many clients share an address behind NAT). A flood still meets a wall.
    fn default() -> Self {
        Self {
            per_token: Some(Rate { per_second: 1000.0, burst: 2000.0 }),
            per_address: Some(Rate { per_second: 2000.0, burst: 4000.0 }),
        }
    }
}

impl RateLimits {
    /// No limits (embedded servers, benchmarks).
    pub fn off() -> Self {
        Self { per_token: None, per_address: None }
    }
}

/// The most keys one limiter tracks.
pub const MAX_TRACKED_KEYS: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
    /// Its place in the recency order.
    seq: u64,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<String, Bucket>,
    /// Recency: sequence number → key; the smallest is the least recently used.
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

/// Token buckets for one kind of key.
pub struct Limiter {
    rate: Rate,
    clock: Arc<dyn Clock>,
    max_keys: usize,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("rate", &self.rate).field("max_keys", &self.max_keys).finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter at `rate` whose buckets refill by `clock`, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        Self { rate, clock, max_keys: max_keys.max(1), table: Mutex::new(Table::default()) }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = self.clock.now_ms();
        // A poisoned lock means a panic elsewhere mid-update: let the request through rather
        // than refuse everyone.
        let Ok(mut table) = self.table.lock() else { return Ok(()) };
        let Table { buckets, order, next_seq } = &mut *table;
        let seq = *next_seq;
        *next_seq += 1;
        let bucket = match buckets.get_mut(key) {
            Some(b) => {
                order.remove(&b.seq);
                // A clock that went back refills nothing.
                let elapsed = now.saturating_sub(b.at_ms).max(0) as f64 / 1000.0;
                b.tokens = (b.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
                b.at_ms = b.at_ms.max(now);
                b
            }
            None => {
                while buckets.len() >= self.max_keys {
                    let Some((_, oldest)) = order.pop_first() else { break };
                    buckets.remove(&oldest);
                }
                buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.rate.burst, at_ms: now, seq })
            }
        };
        bucket.seq = seq;
        order.insert(seq, key.to_owned());
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate.per_second))
        }
    }

    /// How many keys are tracked.
    pub fn tracked(&self) -> usize {
        self.table.lock().map_or(0, |t| t.buckets.len())
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The token's.
    Token,
    /// The client address's.
    Address,
}

/// A refusal: which limit, and when to retry (whole seconds, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// The limit that refused.
    pub limit: Limited,
    /// Seconds until a request will pass.
    pub seconds: u64,
}

/// The server's limiters.
#[derive(Debug)]
pub struct Limiters {
    token: Option<Limiter>,
    address: Option<Limiter>,
}

impl Limiters {
    /// Limiters for `limits`, refilled by `clock`.
    pub fn new(limits: RateLimits, clock: Arc<dyn Clock>) -> Self {
        let make = |rate: Option<Rate>| rate.map(|r| Limiter::new(r, clock.clone(), MAX_TRACKED_KEYS));
        Self { token: make(limits.per_token), address: make(limits.per_address) }
    }

    /// Admits one request from `address` presenting a token with `token_hash` (if any): the
    /// address's limit first, then the token's.
    pub fn admit(&self, address: Option<IpAddr>, token_hash: Option<&str>) -> Result<(), RetryAfter> {
        let refuse =
            |limit: Limited, wait: Duration| RetryAfter { limit, seconds: wait.as_secs_f64().ceil().max(1.0) as u64 };
        if let (Some(limiter), Some(address)) = (&self.address, address) {
            limiter.check(&address_key(address)).map_err(|w| refuse(Limited::Address, w))?;
        }
        if let (Some(limiter), Some(hash)) = (&self.token, token_hash) {
            limiter.check(hash).map_err(|w| refuse(Limited::Token, w))?;
        }
        Ok(())
    }
}

/// The key of a client address: an IPv4 address as it is; an IPv6 address by its /64, since
/// one host commonly holds a whole /64 and could otherwise rotate through it.
pub fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dimmer_domain::ManualClock;

    fn limiter(clock: &Arc<ManualClock>, per_second: f64, burst: f64, max_keys: usize) -> Limiter {
        Limiter::new(Rate { per_second, burst }, clock.clone(), max_keys)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate_by_the_clock() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let l = limiter(&clock, 2.0, 4.0, 10);
        for _ in 0..4 {
            assert_eq!(l.check("a"), Ok(()));
        }
        assert_eq!(l.check("a"), Err(Duration::from_millis(500)));
        assert_eq!(l.check("b"), Ok(()), "keys have buckets of their own");
        clock.advance_ms(500);
        assert_eq!(l.check("a"), Ok(()));
        assert!(l.check("a").is_err());
        clock.advance_ms(60_000);
        for _ in 0..4 {
            assert_eq!(l.check("a"), Ok(()), "refilled to the burst, no further");
        }
        assert!(l.check("a").is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recently_used() {
        let clock = Arc::new(ManualClock::new(0));
        let l = limiter(&clock, 1.0, 1.0, 3);
        assert_eq!(l.check("a"), Ok(()));
        assert_eq!(l.check("b"), Ok(()));
        assert_eq!(l.check("c"), Ok(()));
        assert!(l.check("a").is_err(), "a is used again, so b is now the oldest");
        for i in 0..1000 {
            let _ = l.check(&format!("flood-{i}"));
            assert!(l.tracked() <= 3);
        }
        assert_eq!(l.check("b"), Ok(()), "forgotten: a fresh bucket");
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let clock = Arc::new(ManualClock::new(10_000));
        let l = limiter(&clock, 1.0, 1.0, 3);
        assert_eq!(l.check("a"), Ok(()));
        clock.advance_ms(-10_000);
        assert!(l.check("a").is_err());
        clock.advance_ms(11_000);
        assert_eq!(l.check("a"), Ok(()));
    }

    #[test]
    fn refusals_name_the_limit_and_round_the_wait_up_to_seconds() {
        let clock = Arc::new(ManualClock::new(0));
        let limits = RateLimits {
            per_token: Some(Rate { per_second: 0.25, burst: 1.0 }),
            per_address: Some(Rate { per_second: 100.0, burst: 2.0 }),
        };
        let l = Limiters::new(limits, clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(l.admit(Some(ip), Some("hash")), Ok(()));
        assert_eq!(l.admit(Some(ip), Some("hash")), Err(RetryAfter { limit: Limited::Token, seconds: 4 }));
        assert_eq!(l.admit(Some(ip), None), Err(RetryAfter { limit: Limited::Address, seconds: 1 }));
        assert_eq!(Limiters::new(RateLimits::off(), clock).admit(Some(ip), Some("hash")), Ok(()));
    }

    #[test]
    fn rates_parse_and_bad_ones_say_why() {
        assert_eq!(Rate::parse("50/100"), Ok(Rate { per_second: 50.0, burst: 100.0 }));
        assert_eq!(Rate::parse("0.5"), Ok(Rate { per_second: 0.5, burst: 1.0 }));
        assert!(Rate::parse("fast").unwrap_err().contains("RATE/BURST"));
        assert!(Rate::parse("10/0").unwrap_err().contains("burst"));
        assert!(Rate::parse("-1/2").is_err());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
