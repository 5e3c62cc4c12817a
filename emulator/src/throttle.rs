//! AWS's request throttling, so retry logic can be tested: a token bucket per API for the
//! account (the emulator serves one account), off unless a rate is set, and the way a
//! throttled request is answered, a 429 rejection or a closed connection (users report
//! both). Also counts connections by the kind of certificate, so a test can see whether a
//! device made a claim connection at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::request_topic::Operation;

/// The APIs that can be limited, named as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    CreateKeysAndCertificate,
    CreateCertificateFromCsr,
    RegisterThing,
}

impl Api {
    /// Parses `CreateKeysAndCertificate`, `CreateCertificateFromCsr` or `RegisterThing`.
    pub fn parse(name: &str) -> Option<Api> {
        match name {
            "CreateKeysAndCertificate" => Some(Api::CreateKeysAndCertificate),
            "CreateCertificateFromCsr" => Some(Api::CreateCertificateFromCsr),
            "RegisterThing" => Some(Api::RegisterThing),
            _ => None,
        }
    }

    /// The name AWS gives it, as [`Api::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Api::CreateKeysAndCertificate => "CreateKeysAndCertificate",
            Api::CreateCertificateFromCsr => "CreateCertificateFromCsr",
            Api::RegisterThing => "RegisterThing",
        }
    }

    /// The API a request topic calls, if it is one.
    fn of_topic(topic: &str) -> Option<Api> {
        Some(match crate::request_topic::parse(topic)?.0 {
            Operation::CreateKeys => Api::CreateKeysAndCertificate,
            Operation::CreateFromCsr => Api::CreateCertificateFromCsr,
            Operation::Register(_) => Api::RegisterThing,
        })
    }
}

/// How a throttled request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThrottleMode {
    /// On the request's `/rejected` topic:
    /// `{"statusCode":429,"errorCode":"ThrottlingException","errorMessage":"Rate exceeded"}`.
    #[default]
    Reject,
    /// The connection is closed without an answer.
    Disconnect,
}

impl ThrottleMode {
    /// Parses `reject` or `disconnect`.
    pub fn parse(name: &str) -> Option<ThrottleMode> {
        match name {
            "reject" => Some(ThrottleMode::Reject),
            "disconnect" => Some(ThrottleMode::Disconnect),
            _ => None,
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Serve it.
    Pass,
    /// Answer with this payload on the `/rejected` topic.
    Reject(Vec<u8>),
    /// Close the connection.
    Close,
}

/// The rejection body of a throttled request.
pub const THROTTLED_BODY: &[u8] =
    br#"{"statusCode":429,"errorCode":"ThrottlingException","errorMessage":"Rate exceeded"}"#;

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A burst of one second's worth of requests (at least one), refilled at `rate`.
    fn capacity(&self) -> f64 {
        self.rate.max(1.0)
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limits and counters of one emulator.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<Api, Bucket>>,
    mode: Mutex<ThrottleMode>,
    throttled: AtomicU64,
    claim_connections: AtomicU64,
    device_connections: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Throttle {
    /// Limits `api` to `tps` requests per second (`None` or a rate that is not above zero:
    /// no limit). The bucket starts full.
    pub fn set_rate_limit(&self, api: Api, tps: Option<f64>) {
        let mut buckets = lock(&self.buckets);
        match tps.filter(|r| r.is_finite() && *r > 0.0) {
            Some(rate) => {
                let mut b = Bucket {
                    rate,
                    tokens: 0.0,
                    at: Instant::now(),
                };
                b.tokens = b.capacity();
                buckets.insert(api, b);
            }
            None => {
                buckets.remove(&api);
            }
        }
    }

    /// How throttled requests are answered from now on.
    pub fn set_mode(&self, mode: ThrottleMode) {
        *lock(&self.mode) = mode;
    }

    /// Decides about one request on `topic`.
    pub fn admit(&self, topic: &str) -> Admission {
        let Some(api) = Api::of_topic(topic) else {
            return Admission::Pass;
        };
        let allowed = match lock(&self.buckets).get_mut(&api) {
            None => true,
            Some(b) => b.take(Instant::now()),
        };
        if allowed {
            return Admission::Pass;
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        match *lock(&self.mode) {
            ThrottleMode::Reject => Admission::Reject(THROTTLED_BODY.to_vec()),
            ThrottleMode::Disconnect => Admission::Close,
        }
    }

    /// Requests throttled so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Counts a TLS-authenticated connection by its certificate's kind.
    pub fn count_connection(&self, claim: bool) {
        let counter = if claim {
            &self.claim_connections
        } else {
            &self.device_connections
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections made with a claim certificate so far.
    pub fn claim_connections(&self) -> u64 {
        self.claim_connections.load(Ordering::Relaxed)
    }

    /// Connections made with any other certificate so far.
    pub fn device_connections(&self) -> u64 {
        self.device_connections.load(Ordering::Relaxed)
    }
}

/// Parses a `--rate-limit` value, `OP=TPS`.
pub fn parse_rate_limit(text: &str) -> Result<(Api, f64), String> {
    let (op, tps) = text
        .split_once('=')
        .ok_or_else(|| format!("--rate-limit {text:?}: expected OP=TPS"))?;
    let api = Api::parse(op).ok_or_else(|| {
        format!(
            "--rate-limit: unknown API {op:?} (CreateKeysAndCertificate, CreateCertificateFromCsr, RegisterThing)"
        )
    })?;
    match tps.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok((api, r)),
        _ => Err(format!(
            "--rate-limit {text:?}: TPS must be a number above 0"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const REGISTER: &str = "$aws/provisioning-templates/FleetTemplate/provision/json";

    #[test]
    fn an_api_is_named_as_it_is_parsed() {
        for api in [
            Api::CreateKeysAndCertificate,
            Api::CreateCertificateFromCsr,
            Api::RegisterThing,
        ] {
            assert_eq!(Api::parse(api.name()), Some(api));
        }
    }

    #[test]
    fn off_by_default_then_a_bucket_per_api() {
        let t = Throttle::default();
        for _ in 0..100 {
            assert_eq!(t.admit(REGISTER), Admission::Pass);
        }
        t.set_rate_limit(Api::RegisterThing, Some(10.0));
        let passed = (0..100)
            .filter(|_| t.admit(REGISTER) == Admission::Pass)
            .count();
        // A full bucket of 10, plus whatever refilled during the loop.
        assert!((10..=12).contains(&passed), "{passed}");
        assert_eq!(
            t.admit("$aws/certificates/create-from-csr/json"),
            Admission::Pass
        );
        assert!(matches!(t.admit(REGISTER), Admission::Reject(b) if b == THROTTLED_BODY));
        t.set_mode(ThrottleMode::Disconnect);
        assert_eq!(t.admit(REGISTER), Admission::Close);
        assert!(t.throttled() >= 88);
        t.set_rate_limit(Api::RegisterThing, None);
        assert_eq!(t.admit(REGISTER), Admission::Pass);
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = Bucket {
            rate: 10.0,
            tokens: 0.0,
            at: start,
        };
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_millis(100)));
        assert!(!b.take(start + Duration::from_millis(150)));
        // Never more than the capacity, however long it rested.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.take(later)).count(), 10);
    }

    #[test]
    fn cli_values() {
        assert_eq!(
            parse_rate_limit("RegisterThing=10"),
            Ok((Api::RegisterThing, 10.0))
        );
        assert_eq!(
            parse_rate_limit("CreateCertificateFromCsr=0.5"),
            Ok((Api::CreateCertificateFromCsr, 0.5))
        );
        for bad in [
            "RegisterThing",
            "Register=1",
            "RegisterThing=0",
            "RegisterThing=x",
        ] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ThrottleMode::parse("disconnect"),
            Some(ThrottleMode::Disconnect)
        );
        assert_eq!(ThrottleMode::parse("drop"), None);
    }
}
