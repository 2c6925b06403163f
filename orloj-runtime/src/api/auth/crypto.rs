//! Secrets handling: Argon2id password hashes (PHC strings), random tokens, SHA-256 token
//! hashes and constant-time comparison.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use orloj_core::Error;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Argon2id cost parameters for new password hashes (verification reads them from the hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (spec: 65536).
    pub m_cost: u32,
    /// Iterations (spec: 3).
    pub t_cost: u32,
    /// Lanes (spec: 2).
    pub p_cost: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            m_cost: 65536,
            t_cost: 3,
            p_cost: 2,
        }
    }
}

impl PasswordParams {
    /// The cheapest parameters Argon2 accepts: for tests only, never for real passwords.
    pub fn insecure_fast() -> Self {
        Self {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }
}

/// Minimum password length (spec §6.3).
pub const MIN_PASSWORD_LEN: usize = 12;

const KEY_LEN: usize = 32;

/// `n` random bytes from the OS.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; n];
    getrandom::fill(&mut out)
        .map_err(|e| Error::internal(format!("the OS random source failed: {e}")))?;
    Ok(out)
}

/// A fresh opaque token: 32 random bytes, base64url without padding.
pub fn random_token() -> Result<String, Error> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes(32)?))
}

/// SHA-256 hex of a token (what stores keep).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two strings (length may leak, content does not).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn argon(params: PasswordParams) -> Result<Argon2<'static>, Error> {
    let params = Params::new(params.m_cost, params.t_cost, params.p_cost, Some(KEY_LEN))
        .map_err(|e| Error::invalid(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` into `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>` (16-byte salt).
pub fn hash_password(password: &str, params: PasswordParams) -> Result<String, Error> {
    let salt = random_bytes(16)?;
    let mut out = [0u8; KEY_LEN];
    argon(params)?
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .map_err(|e| Error::internal(format!("argon2: {e}")))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost,
        params.t_cost,
        params.p_cost,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Whether `password` matches the PHC string `encoded`. Malformed hashes never match.
pub fn verify_password(password: &str, encoded: &str) -> bool {
    let Some((params, salt, expected)) = parse_phc(encoded) else {
        return false;
    };
    let Ok(argon) = argon(params) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if argon
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .is_err()
    {
        return false;
    }
    out.ct_eq(&expected).into()
}

fn parse_phc(encoded: &str) -> Option<(PasswordParams, Vec<u8>, Vec<u8>)> {
    let mut parts = encoded.split('$');
    if !parts.next()?.is_empty() || parts.next()? != "argon2id" || parts.next()? != "v=19" {
        return None;
    }
    let mut params = PasswordParams::default();
    for kv in parts.next()?.split(',') {
        let (k, v) = kv.split_once('=')?;
        let v: u32 = v.parse().ok()?;
        match k {
            "m" => params.m_cost = v,
            "t" => params.t_cost = v,
            "p" => params.p_cost = v,
            _ => return None,
        }
    }
    let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    let hash = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    if parts.next().is_some() || hash.len() < 16 || hash.len() > 64 {
        return None;
    }
    Some((params, salt, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip_and_format() {
        let params = PasswordParams::insecure_fast();
        let h = hash_password("correct horse battery", params).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(
            h,
            hash_password("correct horse battery", params).expect("hash")
        );
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token().expect("token");
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token().expect("token"));
        assert_eq!(token_hash("abc").len(), 64);
        assert!(ct_eq("abc", "abc") && !ct_eq("abc", "abd") && !ct_eq("abc", "ab"));
    }
}
