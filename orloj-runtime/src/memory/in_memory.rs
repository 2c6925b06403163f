//! The `in-memory` provider: a sorted map living as long as the process.

use super::{MemoryBackend, MemoryEntry, MemoryError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A process-local map.
///
/// Search is deliberately simple and deterministic (spec runtime §10): an entry matches when
/// the query is a case-insensitive substring of its key or value; every match scores 1.0 and
/// results come in key order. An empty query matches nothing.
#[derive(Debug, Default)]
pub struct InMemoryBackend {
    entries: Mutex<BTreeMap<String, String>>,
}

impl InMemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A poisoned map is still consistent: every write is a single insert.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl MemoryBackend for InMemoryBackend {
    async fn put(&self, key: &str, value: &str) -> Result<(), MemoryError> {
        self.lock().insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, MemoryError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<MemoryEntry>, MemoryError> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| MemoryEntry {
                key: k.clone(),
                value: v.clone(),
                score: None,
            })
            .collect())
    }

    async fn search(&self, query: &str, top_k: usize) -> Result<Vec<MemoryEntry>, MemoryError> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .lock()
            .iter()
            .filter(|(k, v)| {
                k.to_lowercase().contains(&needle) || v.to_lowercase().contains(&needle)
            })
            .take(top_k)
            .map(|(k, v)| MemoryEntry {
                key: k.clone(),
                value: v.clone(),
                score: Some(1.0),
            })
            .collect())
    }
}
