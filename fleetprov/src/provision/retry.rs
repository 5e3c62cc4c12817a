//! Which failures are retried and how long to wait: pure functions, no I/O and no clock.
//!
//! Retries follow [`RetryPolicy`]: exponential backoff with full jitter, bounded by attempts
//! and an overall deadline, for throttling, service-side 5xx, lost connections and timeouts
//! only. RegisterThing is retried with the same ownership token first, also when its answer
//! was lost (timeout, lost connection, a throttling service closing the connection): on a new
//! connection, while the token is young enough. Only when the service says the token is spent
//! (an earlier try went through and its answer was lost) does the next attempt start again from
//! the create call, and the certificate of that earlier try is reported as abandoned.

use std::time::Duration;

use super::options::RetryPolicy;
use crate::error::{Error, ErrorKind};

/// Whether and how a failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not retryable: end now.
    Fatal,
    /// Retry; `restart` drops the create result (its token may be spent), `reconnect` drops
    /// the connection.
    Retry { restart: bool, reconnect: bool },
}

/// A rejection that says "try later": throttling or a service-side failure.
fn transient_rejection(e: &Error) -> bool {
    let Some(r) = &e.rejection else {
        return false;
    };
    let code = r.error_code.to_ascii_lowercase();
    r.status_code == 429
        || (500..600).contains(&r.status_code)
        || code.contains("throttl")
        || code.contains("serviceunavailable")
        || code.contains("internalfailure")
        || code.contains("internalerror")
}

/// A CONNACK refusal that says "try later" (MQTT 5 reason names, 3.1.1 return code name).
fn transient_refusal(e: &Error) -> bool {
    e.kind == ErrorKind::ConnectionRefused
        && [
            "ServerUnavailable",
            "ServiceUnavailable",
            "ServerBusy",
            "QuotaExceeded",
            "ConnectionRateExceeded",
        ]
        .iter()
        .any(|name| e.message.contains(name))
}

/// The classification of connection-level failures, shared by every step: `Some` (a retry
/// with a new connection) for a lost or failed connection, a timeout or a "try later"
/// refusal.
pub(super) fn connection_verdict(e: &Error) -> Option<Verdict> {
    match e.kind {
        ErrorKind::Connection | ErrorKind::Disconnected | ErrorKind::Timeout => {
            Some(Verdict::Retry {
                restart: false,
                reconnect: true,
            })
        }
        _ if transient_refusal(e) => Some(Verdict::Retry {
            restart: false,
            reconnect: true,
        }),
        _ => None,
    }
}

/// The deadline's own timeout, which is never retried.
pub(super) fn deadline_error(e: &Error) -> bool {
    e.kind == ErrorKind::Timeout && e.message.starts_with("provisioning deadline")
}

/// A rejection of the ownership token.
fn spent_token(e: &Error) -> bool {
    e.rejection
        .as_ref()
        .is_some_and(|r| r.error_code == "InvalidCertificateOwnershipToken")
}

/// The verdict on a failed try of the claim half (connect, create, register); `token_sent`:
/// RegisterThing was sent at least once with the token of the create result in hand. The
/// caller drops a create result whose token has grown too old, whatever the verdict.
pub(super) fn claim_verdict(e: &Error, token_sent: bool) -> Verdict {
    if deadline_error(e) {
        Verdict::Fatal
    } else if let Some(v) = connection_verdict(e) {
        // A lost answer, or a throttling service that closed the connection: the same token
        // again on a new connection. If the lost try went through, the service says the token
        // is spent, and only then does the run start again from the create call.
        v
    } else if transient_rejection(e) {
        // The service refused the request: a token it refused is not spent.
        Verdict::Retry {
            restart: false,
            reconnect: false,
        }
    } else if spent_token(e) && token_sent {
        // Refused after an earlier try with it whose answer may have been lost.
        Verdict::Retry {
            restart: true,
            reconnect: false,
        }
    } else {
        Verdict::Fatal
    }
}

impl RetryPolicy {
    /// The upper bound of the backoff after `failures` failed tries (1 or more).
    pub(super) fn ceiling(&self, failures: u32) -> Duration {
        let doubled = self
            .base_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max_delay)
    }
}

/// After try `attempt` failed with the retryable `e`: the delay before the next try, drawn by
/// `draw` from 0 to the backoff's ceiling, or the error to give up with when the attempts are
/// used up or the delay would not end before the deadline (`remaining`).
pub(super) fn plan_retry(
    policy: &RetryPolicy,
    attempt: u32,
    remaining: Duration,
    draw: impl FnOnce(Duration) -> Duration,
    e: Error,
) -> Result<Duration, Error> {
    if attempt >= policy.max_attempts {
        return Err(Error {
            message: format!("gave up after {attempt} attempts: {}", e.message),
            ..e
        });
    }
    let delay = draw(policy.ceiling(attempt));
    if delay >= remaining {
        return Err(Error {
            kind: ErrorKind::Timeout,
            message: format!(
                "gave up: the provisioning deadline of {:?} leaves no time to retry after: {}",
                policy.deadline, e.message
            ),
            ..e
        });
    }
    Ok(delay)
}

/// A delay drawn uniformly from 0 to `ceiling` (full jitter).
pub(super) fn jitter(ceiling: Duration) -> Duration {
    let mut b = [0u8; 8];
    // Without randomness, the ceiling itself: still a backoff, just not spread.
    if getrandom::getrandom(&mut b).is_err() {
        return ceiling;
    }
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(u64::from_le_bytes(b) % ms.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Rejection;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(500));
        assert_eq!(p.ceiling(2), Duration::from_secs(1));
        assert_eq!(p.ceiling(4), Duration::from_secs(4));
        assert_eq!(p.ceiling(10), Duration::from_secs(20));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(20));
        let draws: Vec<Duration> = (0..200).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(1)));
        // Spread over the range, not a constant.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(300)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(700)));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    fn rejected(status: i64, code: &str) -> Error {
        Error::rejected(
            "RegisterThing",
            Rejection {
                status_code: status,
                error_code: code.into(),
                error_message: String::new(),
            },
        )
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(transient_rejection(&rejected(429, "ThrottlingException")));
        assert!(transient_rejection(&rejected(400, "Throttling")));
        assert!(transient_rejection(&rejected(503, "ServiceUnavailable")));
        assert!(transient_rejection(&rejected(500, "InternalFailure")));
        assert!(!transient_rejection(&rejected(400, "InvalidParameters")));
        assert!(!transient_rejection(&rejected(404, "ResourceNotFound")));
        assert!(!transient_rejection(&Error::new(ErrorKind::Tls, "x")));
        for kind in [
            ErrorKind::Connection,
            ErrorKind::Disconnected,
            ErrorKind::Timeout,
        ] {
            assert!(connection_verdict(&Error::new(kind, "x")).is_some());
        }
        for kind in [
            ErrorKind::Tls,
            ErrorKind::InvalidArgument,
            ErrorKind::SubscribeRefused,
            ErrorKind::BadReply,
        ] {
            assert!(connection_verdict(&Error::new(kind, "x")).is_none());
        }
        let busy = Error::new(
            ErrorKind::ConnectionRefused,
            "h refused the connection: ServerBusy",
        );
        assert!(connection_verdict(&busy).is_some());
        let denied = Error::new(ErrorKind::ConnectionRefused, "h refused: NotAuthorized");
        assert!(connection_verdict(&denied).is_none());
        assert!(deadline_error(&Error::new(
            ErrorKind::Timeout,
            "provisioning deadline of 1s passed while registering"
        )));
    }

    #[test]
    fn claim_failures_keep_or_drop_the_token_by_what_the_service_can_have_seen() {
        use Verdict::*;
        let retry = |restart, reconnect| Retry { restart, reconnect };
        let lost = Error::new(ErrorKind::Disconnected, "x");
        // Lost before or after RegisterThing was sent: the create result and its token stay,
        // and the next try is on a new connection (a throttling disconnect is the same).
        assert_eq!(claim_verdict(&lost, false), retry(false, true));
        assert_eq!(claim_verdict(&lost, true), retry(false, true));
        let stalled = Error::new(ErrorKind::Timeout, "no reply to RegisterThing within 20s");
        assert_eq!(claim_verdict(&stalled, true), retry(false, true));
        // A throttled or failing service did not spend the token: same token, same connection.
        assert_eq!(
            claim_verdict(&rejected(429, "Throttling"), true),
            retry(false, false)
        );
        // A refused token is retried from the create call only if an earlier answer was lost.
        let spent = rejected(400, "InvalidCertificateOwnershipToken");
        assert_eq!(claim_verdict(&spent, true), retry(true, false));
        assert_eq!(claim_verdict(&spent, false), Fatal);
        assert_eq!(
            claim_verdict(&rejected(400, "InvalidParameters"), true),
            Fatal
        );
        let deadline = Error::new(ErrorKind::Timeout, "provisioning deadline of 1s passed");
        assert_eq!(claim_verdict(&deadline, false), Fatal);
        assert_eq!(
            claim_verdict(&Error::new(ErrorKind::Tls, "x"), false),
            Fatal
        );
    }

    #[test]
    fn retries_end_with_the_attempts_or_the_deadline() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let e = || Error::new(ErrorKind::Timeout, "no reply");
        let ceiling = |c: Duration| c;
        let long = Duration::from_secs(60);
        assert_eq!(
            plan_retry(&p, 1, long, ceiling, e()).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            plan_retry(&p, 2, long, ceiling, e()).unwrap(),
            Duration::from_secs(1)
        );
        let given_up = plan_retry(&p, 3, long, ceiling, e()).unwrap_err();
        assert_eq!(given_up.message, "gave up after 3 attempts: no reply");
        assert_eq!(given_up.kind, ErrorKind::Timeout);
        let refused = Error::new(ErrorKind::ConnectionRefused, "busy");
        let late = plan_retry(&p, 1, Duration::from_millis(500), ceiling, refused).unwrap_err();
        assert_eq!(late.kind, ErrorKind::Timeout);
        assert!(late
            .message
            .starts_with("gave up: the provisioning deadline"));
        assert!(late.message.ends_with("busy"));
        assert_eq!(
            plan_retry(&p, 1, Duration::from_millis(1), |_| Duration::ZERO, e()).unwrap(),
            Duration::ZERO
        );
    }
}
