//! Secrets sealed at rest (spec §6.5, DESIGN "Decisions"): [`SealedStore`] wraps any
//! [`Store`] and encrypts every value of a Secret's `spec.data` (and any `spec.stringData`)
//! before it reaches the inner store, and decrypts on the way out.
//!
//! # Format
//!
//! A sealed value is `orlojenc:v1:` + base64std(nonce ‖ ciphertext ‖ tag), where the cipher is
//! XChaCha20-Poly1305 under the 32-byte [`SecretKey`] with a random 24-byte nonce per value.
//! The associated data binds the value to its Secret's namespace, name and data key, so a
//! sealed value copied into another Secret (or under another key) does not decrypt. The
//! `v1` tag lets the scheme change later: values with an unknown `orlojenc:` version are
//! refused, never passed through.
//!
//! # Migration from unsealed data
//!
//! Values without the `orlojenc:` prefix (written before a key was configured) are returned as
//! they are on read, and sealed on their next write. Plain `data` values are base64, which
//! never contains `:`, so the prefix cannot be confused with a legacy value. Values that
//! already carry the prefix are stored as given (no double sealing).
//!
//! # Failures
//!
//! Reads (`get`, `list`, `watch`) of a value that does not decrypt — a wrong key, a tampered
//! row, a value moved between Secrets — fail with [`ErrorKind::Internal`] and a message naming
//! the Secret and data key, never the value. The objects returned by writes (`create`,
//! `update`, `upsert`, `update_status`, `delete`) show such values as `***` instead, because
//! the write itself has already happened. Every other kind passes through untouched.
//!
//! ```
//! use std::sync::Arc;
//! use orloj_core::{Kind, Object, Store, SystemClock};
//! use orloj_store::sealed::{SealedStore, SecretKey};
//! use orloj_store::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let inner: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
//! let key = SecretKey::parse(&"11".repeat(32)).unwrap();
//! let store = SealedStore::new(inner.clone(), key);
//! let mut secret = Object::new(Kind::Secret, "default", "api");
//! secret.spec = serde_json::json!({"data": {"value": "aHVudGVyMg=="}});
//! store.create(secret).await.unwrap();
//! let raw = inner.get(Kind::Secret, "default", "api").await.unwrap();
//! assert!(raw.spec["data"]["value"].as_str().unwrap().starts_with("orlojenc:v1:"));
//! let read = store.get(Kind::Secret, "default", "api").await.unwrap();
//! assert_eq!(read.spec["data"]["value"], "aHVudGVyMg==");
//! # });
//! ```

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::StreamExt;
use futures::stream::BoxStream;
use orloj_core::{
    ChangeMarker, ClaimRequest, Error, ErrorKind, Kind, ListOptions, Object, ObjectList, Result,
    Store, WatchEvent,
};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretBox};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Prefix shared by every version of the sealed format.
pub const SEALED_MARKER: &str = "orlojenc:";
/// Prefix of values sealed with the current scheme (XChaCha20-Poly1305, see module docs).
pub const SEALED_PREFIX_V1: &str = "orlojenc:v1:";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AD_DOMAIN: &[u8] = b"orloj.dev/v1 Secret value v1";
/// What a value that cannot be shown is replaced with in write results.
const REDACTED: &str = "***";

/// The 32-byte secret encryption key (`--secret-encryption-key`), kept in a zeroizing box and
/// never printed.
#[derive(Clone)]
pub struct SecretKey(Arc<SecretBox<[u8; 32]>>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Arc::new(SecretBox::new(Box::new(bytes))))
    }

    /// Parses a key given as 64 hex characters or as base64 (standard or URL-safe alphabet,
    /// with or without padding) of exactly 32 bytes. The error never repeats the input.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let invalid = |why: &str| {
            Error::invalid(format!(
                "secret encryption key is invalid ({why}): give exactly 32 bytes as 64 hex \
                 characters or as base64 (44 characters, 43 without padding)"
            ))
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        let mut decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| invalid("bad hex"))?
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .ok_or_else(|| {
                    invalid(&format!(
                        "{} characters, neither hex nor base64",
                        text.len()
                    ))
                })?
        };
        let result = <[u8; 32]>::try_from(decoded.as_slice())
            .map(Self::from_bytes)
            .map_err(|_| invalid(&format!("it decodes to {} bytes, not 32", decoded.len())));
        decoded.zeroize();
        result
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0.expose_secret()).into())
    }

    /// Seals `value` (a Secret's data value) for `namespace/name` key `key`.
    pub fn seal(&self, namespace: &str, name: &str, key: &str, value: &str) -> Result<String> {
        let nonce = XNonce::generate();
        let aad = associated_data(namespace, name, key);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| {
                Error::internal(format!(
                    "secret {namespace}/{name} key {key}: cannot be encrypted"
                ))
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&ciphertext);
        Ok(format!("{SEALED_PREFIX_V1}{}", STANDARD.encode(blob)))
    }

    /// Opens a value produced by [`seal`](Self::seal) for the same Secret and key. Values
    /// without the `orlojenc:` marker are returned as they are (legacy, unsealed data).
    pub fn unseal(&self, namespace: &str, name: &str, key: &str, value: &str) -> Result<String> {
        if !is_sealed(value) {
            return Ok(value.to_string());
        }
        let what = format!("secret {namespace}/{name} key {key}");
        let Some(body) = value.strip_prefix(SEALED_PREFIX_V1) else {
            return Err(Error::internal(format!(
                "{what}: sealed with an unsupported scheme (only {SEALED_PREFIX_V1} is known)"
            )));
        };
        let blob = STANDARD
            .decode(body)
            .map_err(|_| Error::internal(format!("{what}: sealed value is not valid base64")))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::internal(format!(
                "{what}: sealed value is truncated"
            )));
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| Error::internal(format!("{what}: sealed value is truncated")))?;
        let aad = associated_data(namespace, name, key);
        let plain = self
            .cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                Error::internal(format!(
                    "{what}: cannot be decrypted (wrong secret encryption key?)"
                ))
            })?;
        String::from_utf8(plain).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            Error::internal(format!("{what}: decrypted value is not UTF-8"))
        })
    }
}

/// Whether `value` carries the sealed marker (any version).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_MARKER)
}

/// Length-prefixed namespace, name and key, so no two different triples share bytes.
fn associated_data(namespace: &str, name: &str, key: &str) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(AD_DOMAIN.len() + 12 + namespace.len() + name.len() + key.len());
    aad.extend_from_slice(AD_DOMAIN);
    for part in [namespace, name, key] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// The value maps of a Secret spec that hold secret material.
const SECRET_FIELDS: [&str; 2] = ["data", "stringData"];

/// Applies `f(key, value)` to every string value of the Secret's data maps.
fn map_values(
    object: &mut Object,
    mut f: impl FnMut(&str, &str, &str, &str) -> Result<Option<String>>,
) -> Result<()> {
    let namespace = object.namespace().to_string();
    let name = object.name().to_string();
    for field in SECRET_FIELDS {
        let Some(Value::Object(map)) = object.spec.get_mut(field) else {
            continue;
        };
        for (key, value) in map.iter_mut() {
            if let Value::String(text) = value
                && let Some(new) = f(&namespace, &name, key, text)?
            {
                *value = Value::String(new);
            }
        }
    }
    Ok(())
}

/// A [`Store`] that seals Secret values on write and unseals them on read; see the module docs.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    key: SecretKey,
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore").finish_non_exhaustive()
    }
}

impl SealedStore {
    /// Wraps `inner`; every Secret written through the wrapper is sealed under `key`.
    pub fn new(inner: Arc<dyn Store>, key: SecretKey) -> Self {
        Self { inner, key }
    }

    /// The wrapped store (sees sealed values).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn seal(&self, mut object: Object) -> Result<Object> {
        if object.kind == Kind::Secret {
            map_values(&mut object, |ns, name, key, value| {
                if is_sealed(value) {
                    Ok(None)
                } else {
                    self.key.seal(ns, name, key, value).map(Some)
                }
            })?;
        }
        Ok(object)
    }

    /// For reads: any value that does not open is an error.
    fn unseal(&self, mut object: Object) -> Result<Object> {
        if object.kind == Kind::Secret {
            map_values(&mut object, |ns, name, key, value| {
                if is_sealed(value) {
                    self.key.unseal(ns, name, key, value).map(Some)
                } else {
                    Ok(None)
                }
            })?;
        }
        Ok(object)
    }

    /// For results of writes that already happened: values that do not open become `***`.
    fn unseal_or_redact(&self, mut object: Object) -> Object {
        if object.kind == Kind::Secret {
            let _ = map_values(&mut object, |ns, name, key, value| {
                if !is_sealed(value) {
                    return Ok(None);
                }
                Ok(Some(match self.key.unseal(ns, name, key, value) {
                    Ok(plain) => plain,
                    Err(e) => {
                        tracing::warn!(error = %e, "showing a sealed secret value as ***");
                        REDACTED.to_string()
                    }
                }))
            });
        }
        object
    }
}

#[async_trait]
impl Store for SealedStore {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        self.unseal(self.inner.get(kind, namespace, name).await?)
    }

    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        let mut list = self.inner.list(kind, options).await?;
        if kind == Kind::Secret {
            list.items = list
                .items
                .into_iter()
                .map(|o| self.unseal(o))
                .collect::<Result<_>>()?;
        }
        Ok(list)
    }

    async fn create(&self, object: Object) -> Result<Object> {
        let stored = self.inner.create(self.seal(object)?).await?;
        Ok(self.unseal_or_redact(stored))
    }

    async fn update(&self, object: Object) -> Result<Object> {
        let stored = self.inner.update(self.seal(object)?).await?;
        Ok(self.unseal_or_redact(stored))
    }

    async fn upsert(&self, object: Object) -> Result<(Object, bool)> {
        let (stored, created) = self.inner.upsert(self.seal(object)?).await?;
        Ok((self.unseal_or_redact(stored), created))
    }

    async fn update_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
        status: Value,
    ) -> Result<Object> {
        let stored = self
            .inner
            .update_status(kind, namespace, name, expected_resource_version, status)
            .await?;
        Ok(self.unseal_or_redact(stored))
    }

    async fn update_status_of(&self, current: &Object, status: Value) -> Result<Arc<Object>> {
        if current.kind == Kind::Secret {
            // `current` holds unsealed values; the stored object is the sealed one.
            return orloj_core::store::update_status_of_read(self, current, status).await;
        }
        // Only Secrets are sealed: anything else passes through as stored.
        self.inner.update_status_of(current, status).await
    }

    async fn update_task_status_of(
        &self,
        current: &Object,
        status: &Arc<orloj_core::resources::TaskStatus>,
    ) -> Result<Arc<Object>> {
        if current.kind == Kind::Secret {
            // Through `update_status_of`, which knows how to write a Secret's.
            return orloj_core::store::update_task_status_as_json(self, current, status).await;
        }
        self.inner.update_task_status_of(current, status).await
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
    ) -> Result<Object> {
        let stored = self
            .inner
            .delete(kind, namespace, name, expected_resource_version)
            .await?;
        Ok(self.unseal_or_redact(stored))
    }

    async fn current_revision(&self) -> Result<u64> {
        self.inner.current_revision().await
    }

    async fn change_marker(&self, kinds: &[Kind]) -> Result<Option<ChangeMarker>> {
        self.inner.change_marker(kinds).await
    }

    async fn watch(
        &self,
        kind: Option<Kind>,
        after_revision: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        let stream = self.inner.watch(kind, after_revision).await?;
        let opener = SealedStore {
            inner: self.inner.clone(),
            key: self.key.clone(),
        };
        Ok(stream
            .map(move |item| {
                let mut event = item?;
                event.object = opener.unseal(event.object)?;
                Ok(event)
            })
            .boxed())
    }

    fn claim_signal(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.claim_signal()
    }

    async fn claim_task(&self, request: &ClaimRequest) -> Result<Option<Object>> {
        self.inner.claim_task(request).await
    }

    async fn claim_task_marked(
        &self,
        request: &ClaimRequest,
        kinds: &[Kind],
    ) -> Result<Option<(Object, Option<ChangeMarker>)>> {
        self.inner.claim_task_marked(request, kinds).await
    }

    async fn claim_tasks(
        &self,
        request: &ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        self.inner.claim_tasks(request, max, marker_kinds).await
    }

    async fn renew_task_lease(
        &self,
        namespace: &str,
        name: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Object> {
        self.inner
            .renew_task_lease(namespace, name, worker_id, lease)
            .await
    }

    async fn release_task(&self, namespace: &str, name: &str, worker_id: &str) -> Result<Object> {
        self.inner.release_task(namespace, name, worker_id).await
    }

    async fn append_task_log(&self, namespace: &str, name: &str, entry: &str) -> Result<()> {
        self.inner.append_task_log(namespace, name, entry).await
    }

    async fn task_logs(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.task_logs(namespace, name, limit).await
    }
}

/// Whether `err` is the failure of a sealed value that did not open.
pub fn is_unseal_error(err: &Error) -> bool {
    err.kind() == ErrorKind::Internal && err.message().contains("cannot be decrypted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use orloj_core::SystemClock;
    use serde_json::json;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes([byte; 32])
    }

    #[test]
    fn parses_hex_and_base64_keys_only_of_32_bytes() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let hex_text = hex::encode(&bytes);
        let b64 = STANDARD.encode(&bytes);
        let raw = STANDARD_NO_PAD.encode(&bytes);
        for text in [
            hex_text.as_str(),
            &hex_text.to_uppercase(),
            &b64,
            &raw,
            &format!(" {b64}\n"),
        ] {
            let parsed = SecretKey::parse(text).expect(text);
            assert_eq!(
                parsed.0.expose_secret().as_slice(),
                bytes.as_slice(),
                "{text}"
            );
        }
        for bad in [
            "",
            "abc",
            &"0".repeat(62),
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 33]),
            "not a key at all!",
        ] {
            let err = SecretKey::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Invalid);
            assert!(err.message().contains("32 bytes"), "{err}");
            assert!(!err.message().contains('\n'), "one line: {err}");
            if bad.len() > 3 {
                assert!(!err.message().contains(bad), "the key is not echoed: {err}");
            }
        }
        assert_eq!(format!("{:?}", key(7)), "SecretKey(***)");
    }

    #[test]
    fn seal_round_trips_with_random_nonces() {
        let k = key(1);
        let a = k
            .seal("default", "x", "value", "aHVudGVyMg==")
            .expect("seal");
        let b = k
            .seal("default", "x", "value", "aHVudGVyMg==")
            .expect("seal");
        assert!(a.starts_with(SEALED_PREFIX_V1), "{a}");
        assert_ne!(a, b, "fresh nonce per value");
        assert!(!a.contains("aHVudGVyMg=="));
        assert_eq!(
            k.unseal("default", "x", "value", &a).expect("unseal"),
            "aHVudGVyMg=="
        );
        assert_eq!(
            k.unseal("default", "x", "value", &b).expect("unseal"),
            "aHVudGVyMg=="
        );
        // Legacy (unsealed) values read as they are.
        assert_eq!(
            k.unseal("default", "x", "value", "bGVnYWN5")
                .expect("legacy"),
            "bGVnYWN5"
        );
    }

    #[test]
    fn wrong_key_fails_with_a_clear_error() {
        let sealed = key(1)
            .seal("default", "x", "KEY", "c2VjcmV0")
            .expect("seal");
        let err = key(2)
            .unseal("default", "x", "KEY", &sealed)
            .expect_err("wrong key");
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(
            err.message(),
            "secret default/x key KEY: cannot be decrypted (wrong secret encryption key?)"
        );
        assert!(is_unseal_error(&err));
    }

    #[test]
    fn tampered_or_malformed_values_fail() {
        let k = key(3);
        let sealed = k.seal("ns", "x", "v", "c2VjcmV0").expect("seal");
        let mut blob = STANDARD
            .decode(&sealed[SEALED_PREFIX_V1.len()..])
            .expect("b64");
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let tampered = format!("{SEALED_PREFIX_V1}{}", STANDARD.encode(&blob));
        let err = k.unseal("ns", "x", "v", &tampered).expect_err("tampered");
        assert!(err.message().contains("cannot be decrypted"), "{err}");
        for bad in ["orlojenc:v1:!!!", "orlojenc:v1:AAAA", "orlojenc:v9:AAAA"] {
            let err = k.unseal("ns", "x", "v", bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
            assert!(err.message().starts_with("secret ns/x key v: "), "{err}");
        }
    }

    #[test]
    fn associated_data_binds_namespace_name_and_key() {
        let k = key(4);
        let sealed = k.seal("ns", "x", "v", "c2VjcmV0").expect("seal");
        for (ns, name, data_key) in [
            ("other", "x", "v"),
            ("ns", "y", "v"),
            ("ns", "x", "w"),
            ("nsx", "", "v"),
        ] {
            let err = k
                .unseal(ns, name, data_key, &sealed)
                .expect_err("moved value");
            assert!(is_unseal_error(&err), "{err}");
        }
    }

    fn secret(name: &str, data: Value) -> Object {
        let mut o = Object::new(Kind::Secret, "default", name);
        o.spec = json!({ "data": data });
        o
    }

    #[tokio::test]
    async fn store_seals_secrets_and_passes_other_kinds_through() {
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
        let store = SealedStore::new(inner.clone(), key(5));
        let created = store
            .create(secret("x", json!({"KEY": "c2VjcmV0", "other": "b3RoZXI="})))
            .await
            .expect("create");
        assert_eq!(created.spec["data"]["KEY"], "c2VjcmV0");
        let raw = inner.get(Kind::Secret, "default", "x").await.expect("raw");
        let raw_text = raw.spec.to_string();
        assert!(
            !raw_text.contains("c2VjcmV0") && !raw_text.contains("b3RoZXI="),
            "{raw_text}"
        );
        assert!(
            raw.spec["data"]["KEY"]
                .as_str()
                .expect("str")
                .starts_with(SEALED_PREFIX_V1)
        );

        let got = store.get(Kind::Secret, "default", "x").await.expect("get");
        assert_eq!(
            got.spec["data"],
            json!({"KEY": "c2VjcmV0", "other": "b3RoZXI="})
        );
        let listed = store
            .list(Kind::Secret, &ListOptions::default())
            .await
            .expect("list");
        assert_eq!(listed.items[0].spec["data"]["other"], "b3RoZXI=");

        // Already sealed values are kept as given; stringData is sealed too.
        let mut again = got.clone();
        again.spec =
            json!({"data": {"KEY": raw.spec["data"]["KEY"].clone()}, "stringData": {"p": "plain"}});
        store.update(again).await.expect("update");
        let raw2 = inner.get(Kind::Secret, "default", "x").await.expect("raw");
        assert_eq!(raw2.spec["data"]["KEY"], raw.spec["data"]["KEY"]);
        assert!(!raw2.spec.to_string().contains("plain"));
        let got2 = store.get(Kind::Secret, "default", "x").await.expect("get");
        assert_eq!(
            got2.spec,
            json!({"data": {"KEY": "c2VjcmV0"}, "stringData": {"p": "plain"}})
        );

        // Legacy rows written without a key read as they are.
        inner
            .create(secret("legacy", json!({"v": "bGVnYWN5"})))
            .await
            .expect("legacy");
        let legacy = store
            .get(Kind::Secret, "default", "legacy")
            .await
            .expect("get");
        assert_eq!(legacy.spec["data"]["v"], "bGVnYWN5");

        // Other kinds are untouched.
        let mut agent = Object::new(Kind::Agent, "default", "a");
        agent.spec = json!({"data": {"k": "dmFsdWU="}});
        store.create(agent).await.expect("agent");
        let raw_agent = inner.get(Kind::Agent, "default", "a").await.expect("raw");
        assert_eq!(raw_agent.spec["data"]["k"], "dmFsdWU=");
    }

    #[tokio::test]
    async fn another_key_fails_loudly_on_read_and_redacts_write_results() {
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
        SealedStore::new(inner.clone(), key(6))
            .create(secret("x", json!({"KEY": "c2VjcmV0"})))
            .await
            .expect("create");
        let other = SealedStore::new(inner.clone(), key(7));
        let err = other
            .get(Kind::Secret, "default", "x")
            .await
            .expect_err("wrong key");
        assert_eq!(
            err.message(),
            "secret default/x key KEY: cannot be decrypted (wrong secret encryption key?)"
        );
        assert_ne!(err.kind(), ErrorKind::NotFound);
        let err = other
            .list(Kind::Secret, &ListOptions::default())
            .await
            .expect_err("list");
        assert!(is_unseal_error(&err), "{err}");
        let deleted = other
            .delete(Kind::Secret, "default", "x", None)
            .await
            .expect("delete");
        assert_eq!(deleted.spec["data"]["KEY"], REDACTED);
    }

    #[tokio::test]
    async fn watch_unseals_and_reports_values_that_do_not_open() {
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
        let store = SealedStore::new(inner.clone(), key(8));
        let mut events = store
            .watch(Some(Kind::Secret), Some(0))
            .await
            .expect("watch");
        store
            .create(secret("x", json!({"KEY": "c2VjcmV0"})))
            .await
            .expect("create");
        let event = events.next().await.expect("event").expect("ok");
        assert_eq!(event.object.spec["data"]["KEY"], "c2VjcmV0");

        let other = SealedStore::new(inner, key(9));
        let mut events = other
            .watch(Some(Kind::Secret), Some(0))
            .await
            .expect("watch");
        let err = events.next().await.expect("event").expect_err("wrong key");
        assert!(is_unseal_error(&err), "{err}");
    }
}
