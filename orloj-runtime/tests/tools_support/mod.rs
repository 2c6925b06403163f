//! Helpers shared by the tool runtime tests.
#![allow(dead_code)]

use orloj_core::tool::ToolInvocation;
use orloj_core::{Clock, Kind, Object, Store, SystemClock, resources};
use orloj_runtime::tools::{
    AuthInjector, ChainSecretResolver, EnvSecretResolver, SecretResolver, StoreSecretResolver,
};
use orloj_store::MemoryStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A normalized Tool named `name` with `spec`.
pub fn tool(name: &str, spec: serde_json::Value) -> Object {
    let mut obj = Object::new(Kind::Tool, "default", name);
    obj.spec = spec;
    resources::normalize(obj).expect("valid tool")
}

/// An invocation of `tool` with `input` and a 5s deadline.
pub fn invocation(tool: Object, input: &str) -> ToolInvocation {
    ToolInvocation {
        request_id: format!("default/agent/s001/{}", tool.metadata.name),
        task_id: "default/task".into(),
        namespace: "default".into(),
        agent: "agent".into(),
        tool,
        input: input.into(),
        attempt: 1,
        timeout: Duration::from_secs(5),
    }
}

/// Serves `router` on 127.0.0.1; returns the address.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A reqwest client with the ring provider installed.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}

/// A secret chain: a memory Secret store holding `secrets` (name → key → value) in namespace
/// `default`, then the fake environment `env` with prefix `ORLOJ_SECRET_`.
pub async fn secrets(
    store_secrets: &[(&str, &[(&str, &str)])],
    env: &[(&str, &str)],
) -> Arc<dyn SecretResolver> {
    let store = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    for (name, pairs) in store_secrets {
        let mut obj = Object::new(Kind::Secret, "default", name);
        let data: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        obj.spec = serde_json::json!({ "stringData": data });
        let obj = resources::normalize(obj).expect("valid secret");
        store.create(obj).await.expect("create secret");
    }
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(ChainSecretResolver::new(vec![
        Arc::new(StoreSecretResolver::new(store)),
        Arc::new(EnvSecretResolver::new(
            "ORLOJ_SECRET_",
            Arc::new(move |name: &str| env.get(name).cloned()),
        )),
    ]))
}

/// An injector over `secrets` with the system clock.
pub fn injector(secrets: Arc<dyn SecretResolver>) -> Arc<AuthInjector> {
    injector_with_clock(secrets, Arc::new(SystemClock))
}

/// An injector over `secrets` timed by `clock`.
pub fn injector_with_clock(
    secrets: Arc<dyn SecretResolver>,
    clock: Arc<dyn Clock>,
) -> Arc<AuthInjector> {
    Arc::new(AuthInjector::new(secrets, client(), clock))
}
