//! Persistent agent memory (spec runtime §10): the [`MemoryBackend`] trait, the in-memory
//! provider, the per-process [`MemoryRegistry`] (one backend per Memory resource) and the
//! built-in `memory.*` tools ([`MemoryToolExecutor`]).
//!
//! Only the in-memory provider (`in-memory`, `memory` or empty) is built in; other providers
//! (`http`, `pgvector`, …) can be registered by embedders with [`MemoryRegistry::register`].

mod in_memory;
mod registry;
mod tools;

pub use in_memory::InMemoryBackend;
pub use registry::MemoryRegistry;
pub use tools::{MEMORY_REF_ANNOTATION, MEMORY_TOOL_TYPE, MemoryToolExecutor};

use async_trait::async_trait;
use serde::Serialize;

/// Default `chunk_size` of `memory.ingest` (runes).
pub const DEFAULT_CHUNK_SIZE: usize = 1000;
/// Default `overlap` of `memory.ingest` when the caller passes a negative one.
pub const DEFAULT_CHUNK_OVERLAP: usize = 200;

/// A memory failure: an unsupported provider or a backend error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The Memory resource names a provider this process cannot build.
    #[error("memory {memory}: unsupported memory provider {provider:?} (supported: in-memory)")]
    UnsupportedProvider {
        /// `namespace/name` of the Memory resource.
        memory: String,
        /// The provider as written.
        provider: String,
    },
    /// The Memory resource could not be read.
    #[error("memory {memory}: {message}")]
    Lookup {
        /// `namespace/name` of the Memory resource.
        memory: String,
        /// What went wrong.
        message: String,
    },
    /// The backend failed.
    #[error("memory backend failed: {0}")]
    Backend(String),
}

/// One stored entry as returned by list and search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEntry {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// Relevance (search only; `None` for plain listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A key/value store behind one Memory resource.
#[async_trait]
pub trait MemoryBackend: Send + Sync {
    /// Stores `value` under `key`, replacing any previous value.
    async fn put(&self, key: &str, value: &str) -> Result<(), MemoryError>;
    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<String>, MemoryError>;
    /// Entries whose key starts with `prefix` (all for an empty prefix), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<MemoryEntry>, MemoryError>;
    /// At most `top_k` entries matching `query`, best first, each with a score.
    async fn search(&self, query: &str, top_k: usize) -> Result<Vec<MemoryEntry>, MemoryError>;
    /// Splits `content` into chunks (see [`chunk_text`]) stored as `<source>/chunk-NNNN`;
    /// returns how many were stored.
    async fn ingest(
        &self,
        source: &str,
        content: &str,
        chunk_size: i64,
        overlap: i64,
    ) -> Result<usize, MemoryError> {
        let chunks = chunk_text(content, chunk_size, overlap);
        for (i, chunk) in chunks.iter().enumerate() {
            self.put(&format!("{source}/chunk-{i:04}"), chunk).await?;
        }
        Ok(chunks.len())
    }
}

/// Splits `content` into windows of `chunk_size` chars stepping by `chunk_size - overlap`
/// (spec runtime §10): `chunk_size <= 0` → 1000; a negative overlap → 200 (0 stays 0); an
/// overlap ≥ the size → size/5. Empty content gives no chunks.
pub fn chunk_text(content: &str, chunk_size: i64, overlap: i64) -> Vec<String> {
    let size = usize::try_from(chunk_size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_CHUNK_SIZE);
    let mut overlap = usize::try_from(overlap).unwrap_or(DEFAULT_CHUNK_OVERLAP);
    if overlap >= size {
        overlap = size / 5;
    }
    let step = (size - overlap).max(1);
    let chars: Vec<char> = content.chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let end = (start + size).min(chars.len());
        chunks.push(chars[start..end].iter().collect());
        if end == chars.len() {
            break;
        }
        start += step;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_follows_size_and_overlap_rules() {
        assert_eq!(chunk_text("abcdefghij", 4, 1), vec!["abcd", "defg", "ghij"]);
        assert_eq!(chunk_text("abcdef", 3, 0), vec!["abc", "def"]);
        // overlap >= size → size/5 = 1
        assert_eq!(chunk_text("abcdefg", 5, 9), vec!["abcde", "efg"]);
        assert!(chunk_text("", 10, 2).is_empty());
        let long = "x".repeat(1500);
        let c = chunk_text(&long, 0, -1);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].chars().count(), 1000);
        assert_eq!(c[1].chars().count(), 700);
        // multi-byte chars are split on char boundaries
        assert_eq!(chunk_text("ééééé", 2, 0), vec!["éé", "éé", "é"]);
    }
}
