//! Ownership tokens: issued with a certificate, bound to the connection that asked, spent once,
//! and remembered a while after they expire.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{CertStatus, State};

/// An ownership token is valid for one hour, as on AWS.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;
/// Used and expired tokens are remembered this long after expiry, so that a late retry is told
/// why it fails instead of "not valid".
const TOKEN_MEMORY_SECS: u64 = 86_400;
const TOKEN_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TokenRecord {
    /// The certificate the token registers.
    pub(super) certificate_id: String,
    /// The client certificate of the connection that asked for it.
    pub(super) requester: String,
    /// Unix seconds.
    pub(super) expires_at: u64,
    pub(super) spent: bool,
}

/// Why an ownership token was refused. `Display` gives the reply's errorMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Empty,
    Unknown,
    /// Issued to another client certificate.
    Foreign,
    Spent,
    Expired,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Empty => "Certificate ownership token cannot be empty.",
            TokenError::Unknown => "Certificate ownership token is not valid.",
            TokenError::Foreign => {
                "Certificate ownership token was issued to a different client certificate."
            }
            TokenError::Spent => "Certificate ownership token has already been used.",
            TokenError::Expired => "Certificate ownership token has expired.",
        })
    }
}

impl std::error::Error for TokenError {}

impl State {
    pub(super) fn check_token(
        &self,
        token: &str,
        requester: &str,
        now: u64,
    ) -> Result<&TokenRecord, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let record = self.tokens.get(token).ok_or(TokenError::Unknown)?;
        if record.requester != requester {
            return Err(TokenError::Foreign);
        }
        if record.spent {
            return Err(TokenError::Spent);
        }
        if now >= record.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(record)
    }

    /// Forget what AWS forgets: tokens long expired, and certificates never registered before
    /// their token expired.
    pub(super) fn purge(&mut self, now: u64) {
        let mut dead_certs = Vec::new();
        self.tokens.retain(|_, t| {
            if !t.spent && now >= t.expires_at {
                dead_certs.push(t.certificate_id.clone());
            }
            now < t.expires_at.saturating_add(TOKEN_MEMORY_SECS)
        });
        for id in dead_certs {
            if let Some(c) = self.certificates.get(&id) {
                if c.status == CertStatus::PendingActivation {
                    self.certificates.remove(&id);
                }
            }
        }
    }
}

/// A fresh opaque token: 64 random bytes, hex.
pub(super) fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    if getrandom::getrandom(&mut bytes).is_err() {
        // The OS refused randomness; rand's generator (seeded earlier from the OS) remains.
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    }
    crate::cert::hex(&bytes)
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
