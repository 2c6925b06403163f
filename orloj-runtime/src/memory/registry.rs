//! One backend per Memory resource, shared by every agent and the API of this process.

use super::{InMemoryBackend, MemoryBackend, MemoryError};
use orloj_core::resources::{MemorySpec, spec_of};
use orloj_core::{ErrorKind, Kind, Store, scoped_key};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The process's memory backends keyed by `namespace/name` of the Memory resource.
///
/// Share it as `Arc<MemoryRegistry>` between the worker's
/// [`MemoryToolExecutor`](super::MemoryToolExecutor) and the API. In-memory backends are created on first use;
/// other providers must be [`register`](Self::register)ed by the embedder. Like the
/// reference, a backend is built once per resource: later spec changes do not rebuild it.
#[derive(Default)]
pub struct MemoryRegistry {
    backends: Mutex<HashMap<String, Arc<dyn MemoryBackend>>>,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("backends", &self.lock().keys().cloned().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MemoryRegistry {
    /// A registry that treats every Memory as `in-memory` (it cannot read the resources).
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that reads `spec.provider` of Memory resources from `store` on first use.
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        Self {
            backends: Mutex::default(),
            store: Some(store),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn MemoryBackend>>> {
        // Map operations are single inserts/lookups, so a poisoned map is still consistent.
        self.backends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers (or replaces) the backend of Memory `namespace/name`.
    pub fn register(&self, namespace: &str, name: &str, backend: Arc<dyn MemoryBackend>) {
        self.lock().insert(scoped_key(namespace, name), backend);
    }

    /// The backend already built for Memory `namespace/name`, if any (never creates one).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<dyn MemoryBackend>> {
        self.lock().get(&scoped_key(namespace, name)).cloned()
    }

    /// The backend of Memory `namespace/name`, creating an in-memory one when `provider` is
    /// `in-memory`, `memory` or empty; any other unregistered provider is an error.
    pub fn get_or_create(
        &self,
        namespace: &str,
        name: &str,
        provider: &str,
    ) -> Result<Arc<dyn MemoryBackend>, MemoryError> {
        let key = scoped_key(namespace, name);
        let mut backends = self.lock();
        if let Some(backend) = backends.get(&key) {
            return Ok(backend.clone());
        }
        match provider.trim().to_lowercase().as_str() {
            "" | "in-memory" | "memory" => {
                let backend: Arc<dyn MemoryBackend> = Arc::new(InMemoryBackend::new());
                backends.insert(key, backend.clone());
                Ok(backend)
            }
            _ => Err(MemoryError::UnsupportedProvider {
                memory: key,
                provider: provider.to_string(),
            }),
        }
    }

    /// The backend of Memory `namespace/name`: the registered one, else one built from the
    /// resource's `spec.provider` (read from the store when the registry has one).
    pub async fn resolve(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<dyn MemoryBackend>, MemoryError> {
        if let Some(backend) = self.get(namespace, name) {
            return Ok(backend);
        }
        let provider = match &self.store {
            None => String::new(),
            Some(store) => {
                let memory = scoped_key(namespace, name);
                let obj = store
                    .get(Kind::Memory, namespace, name)
                    .await
                    .map_err(|e| MemoryError::Lookup {
                        memory: memory.clone(),
                        message: if e.kind() == ErrorKind::NotFound {
                            "memory resource not found".to_string()
                        } else {
                            e.to_string()
                        },
                    })?;
                spec_of::<MemorySpec>(&obj)
                    .map_err(|e| MemoryError::Lookup {
                        memory,
                        message: format!("invalid spec: {e}"),
                    })?
                    .provider
            }
        };
        self.get_or_create(namespace, name, &provider)
    }
}
