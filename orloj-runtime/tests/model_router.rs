//! StoreModelRouter: endpoint lookup, secrets from the store and the environment, provider
//! options, errors and the per-resourceVersion client cache (spec runtime §7.1).

use base64::Engine;
use orloj_core::model::{ChatMessage, ModelRequest, ModelRouter, ResolvedModel, Role};
use orloj_core::{ErrorKind, Kind, Object, Store, SystemClock, resources};
use orloj_runtime::model::StoreModelRouter;
use orloj_store::MemoryStore;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn store() -> Arc<dyn Store> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(MemoryStore::new(Arc::new(SystemClock)))
}

async fn put(store: &Arc<dyn Store>, kind: Kind, ns: &str, name: &str, spec: Value) -> Object {
    let mut object = Object::new(kind, ns, name);
    object.spec = spec;
    let object = resources::normalize(object).expect("valid manifest");
    store.create(object).await.expect("created")
}

async fn secret(store: &Arc<dyn Store>, ns: &str, name: &str, data: &[(&str, &str)]) {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    put(store, Kind::Secret, ns, name, json!({"data": data})).await;
}

fn router(store: &Arc<dyn Store>, env: &[(&str, &str)]) -> StoreModelRouter {
    router_with_prefix(store, "ORLOJ_SECRET_", env)
}

fn router_with_prefix(
    store: &Arc<dyn Store>,
    prefix: &str,
    env: &[(&str, &str)],
) -> StoreModelRouter {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    StoreModelRouter::with_env(
        store.clone(),
        prefix,
        Arc::new(move |name: &str| env.get(name).cloned()),
    )
    .expect("router")
}

fn request(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.into(),
        messages: vec![ChatMessage::text(Role::User, "step=1")],
        step: 1,
        ..Default::default()
    }
}

/// A fake OpenAI API answering only requests bearing `key`.
async fn openai_fake(key: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {key}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"content": "ok"}}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    server
}

async fn openai_endpoint(store: &Arc<dyn Store>, ns: &str, server: &MockServer, secret_ref: &str) {
    put(
        store,
        Kind::ModelEndpoint,
        ns,
        "gpt",
        json!({
            "provider": "openai",
            "base_url": format!("{}/v1", server.uri()),
            // The fake provider listens on loopback.
            "allowPrivate": true,
            "default_model": "gpt-4o",
            "auth": {"secretRef": secret_ref}
        }),
    )
    .await;
}

async fn call(resolved: &ResolvedModel) -> String {
    resolved
        .client
        .complete(request(&resolved.model))
        .await
        .expect("model call succeeds")
        .content
}

#[tokio::test]
async fn missing_endpoint_and_empty_ref() {
    let store = store();
    let router = router(&store, &[]);
    let err = router.resolve("team", "nope").await.expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.message(),
        r#"model endpoint "nope" not found in namespace "team""#
    );
    let err = router
        .resolve("team", "other/nope")
        .await
        .expect_err("missing");
    assert_eq!(
        err.message(),
        r#"model endpoint "other/nope" not found in namespace "other""#
    );
    let err = router.resolve("team", "  ").await.expect_err("empty");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.message(),
        "model_ref is required; configure spec.model_ref on the agent"
    );
}

#[tokio::test]
async fn mock_endpoint_by_name_and_by_namespace_ref() {
    let store = store();
    put(
        &store,
        Kind::ModelEndpoint,
        "shared",
        "fake",
        json!({"provider": "mock", "default_model": "gpt-4o"}),
    )
    .await;
    let router = router(&store, &[]);
    let resolved = router
        .resolve("team", "shared/fake")
        .await
        .expect("resolves");
    assert_eq!(resolved.endpoint, "shared/fake");
    assert_eq!(resolved.model, "gpt-4o");
    assert_eq!(resolved.provider, "mock");
    assert_eq!(call(&resolved).await, "model=gpt-4o step=1");

    let resolved = router.resolve("shared", "fake").await.expect("by name");
    assert_eq!(resolved.endpoint, "shared/fake");
    let err = router.resolve("team", "fake").await.expect_err("other ns");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn api_key_from_the_secret_store() {
    let store = store();
    let server = openai_fake("sk-from-store").await;
    openai_endpoint(&store, "team", &server, "openai-key").await;
    secret(&store, "team", "openai-key", &[("value", "sk-from-store")]).await;
    // The store wins over the environment.
    let router = router(&store, &[("ORLOJ_SECRET_OPENAI_KEY", "sk-from-env")]);
    let resolved = router.resolve("team", "gpt").await.expect("resolves");
    assert_eq!(resolved.provider, "openai");
    assert_eq!(resolved.endpoint, "team/gpt");
    assert_eq!(call(&resolved).await, "ok");
}

#[tokio::test]
async fn api_key_from_a_named_secret_key() {
    let store = store();
    let server = openai_fake("sk-keyed").await;
    openai_endpoint(&store, "team", &server, "creds:openai").await;
    secret(
        &store,
        "team",
        "creds",
        &[("value", "wrong"), ("openai", "sk-keyed")],
    )
    .await;
    let resolved = router(&store, &[])
        .resolve("team", "gpt")
        .await
        .expect("resolves");
    assert_eq!(call(&resolved).await, "ok");
}

#[tokio::test]
async fn api_key_from_the_environment_with_prefix() {
    let store = store();
    let server = openai_fake("sk-from-env").await;
    openai_endpoint(&store, "team", &server, "openai-key").await;
    let router = router(&store, &[("ORLOJ_SECRET_OPENAI_KEY", "sk-from-env")]);
    let resolved = router.resolve("team", "gpt").await.expect("resolves");
    assert_eq!(call(&resolved).await, "ok");

    let store2 = self::store();
    let server = openai_fake("sk-custom").await;
    openai_endpoint(&store2, "team", &server, "openai-key").await;
    let router = router_with_prefix(&store2, "MYAPP_", &[("MYAPP_OPENAI_KEY", "sk-custom")]);
    let resolved = router.resolve("team", "gpt").await.expect("custom prefix");
    assert_eq!(call(&resolved).await, "ok");
}

#[tokio::test]
async fn key_errors() {
    let store = store();
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "gpt",
        json!({"provider": "openai", "default_model": "gpt-4o"}),
    )
    .await;
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "claude",
        json!({"provider": "anthropic", "default_model": "claude-x", "auth": {"secretRef": "absent"}}),
    )
    .await;
    let router = router(&store, &[]);
    let err = router
        .resolve("team", "gpt")
        .await
        .expect_err("no secretRef");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.message(),
        r#"model endpoint "gpt" requires auth.secretRef"#
    );

    let err = router
        .resolve("team", "claude")
        .await
        .expect_err("unresolvable");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        err.message()
            .starts_with(r#"model endpoint "claude": secret "absent" could not be resolved"#),
        "{err}"
    );

    // An empty environment variable is an error, not a fall-through.
    let router = self::router(&store, &[("ORLOJ_SECRET_ABSENT", "")]);
    let err = router
        .resolve("team", "claude")
        .await
        .expect_err("empty env");
    assert!(err.message().contains("is empty"), "{err}");
}

#[tokio::test]
async fn unsupported_provider() {
    let store = store();
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "br",
        json!({"provider": "bedrock", "default_model": "x"}),
    )
    .await;
    let err = router(&store, &[])
        .resolve("team", "br")
        .await
        .expect_err("unsupported");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        err.message()
            .starts_with("unsupported model endpoint provider"),
        "{err}"
    );
}

#[tokio::test]
async fn provider_options_reach_the_requests() {
    let store = store();
    secret(&store, "team", "key", &[("value", "k-1")]).await;

    let azure = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/deployments/prod-4o/chat/completions"))
        .and(query_param("api-version", "2025-02-01"))
        .and(header("api-key", "k-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"content": "azure ok"}}]
        })))
        .expect(1)
        .mount(&azure)
        .await;
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "az",
        json!({
            "provider": "azure",
            "base_url": azure.uri(),
            // The fake provider listens on loopback.
            "allowPrivate": true,
            "default_model": "prod-4o",
            "options": {"api_version": "2025-02-01"},
            "auth": {"secretRef": "key"}
        }),
    )
    .await;

    let anthropic = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "k-1"))
        .and(header("anthropic-version", "2024-10-22"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "content": [{"type": "text", "text": "claude ok"}]
        })))
        .expect(1)
        .mount(&anthropic)
        .await;
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "claude",
        json!({
            "provider": "anthropic",
            "base_url": format!("{}/v1", anthropic.uri()),
            // The fake provider listens on loopback.
            "allowPrivate": true,
            "default_model": "claude-sonnet",
            "options": {"anthropic_version": "2024-10-22", "max_tokens": "2048"},
            "auth": {"secretRef": "key"}
        }),
    )
    .await;

    let ollama = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message": {"content": "llama ok"}, "done": true
        })))
        .expect(1)
        .mount(&ollama)
        .await;
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "local",
        json!({"provider": "ollama", "base_url": ollama.uri(), "default_model": "llama3"}),
    )
    .await;

    let router = router(&store, &[]);
    let resolved = router.resolve("team", "az").await.expect("azure");
    assert_eq!(resolved.provider, "azure-openai");
    assert_eq!(call(&resolved).await, "azure ok");

    let resolved = router.resolve("team", "claude").await.expect("anthropic");
    assert_eq!(resolved.provider, "anthropic");
    assert_eq!(call(&resolved).await, "claude ok");
    let requests = anthropic.received_requests().await.expect("recorded");
    let body: Value = requests[0].body_json().expect("json");
    assert_eq!(body["max_tokens"], 2048);
    assert_eq!(body["model"], "claude-sonnet");

    let resolved = router
        .resolve("team", "local")
        .await
        .expect("ollama needs no key");
    assert_eq!(resolved.provider, "ollama");
    assert_eq!(call(&resolved).await, "llama ok");
}

#[tokio::test]
async fn bad_max_tokens_option_is_invalid() {
    let store = store();
    secret(&store, "team", "key", &[("value", "k")]).await;
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "claude",
        json!({
            "provider": "anthropic",
            "default_model": "c",
            "options": {"max_tokens": "lots"},
            "auth": {"secretRef": "key"}
        }),
    )
    .await;
    let err = router(&store, &[])
        .resolve("team", "claude")
        .await
        .expect_err("bad option");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.message().contains("max_tokens"), "{err}");
}

#[tokio::test]
async fn clients_are_cached_until_the_endpoint_changes() {
    let store = store();
    put(
        &store,
        Kind::ModelEndpoint,
        "team",
        "fake",
        json!({"provider": "mock", "default_model": "m-1"}),
    )
    .await;
    let router = router(&store, &[]);
    let first = router.resolve("team", "fake").await.expect("first");
    let again = router.resolve("team", "fake").await.expect("again");
    assert!(
        Arc::ptr_eq(&first.client, &again.client),
        "cached client reused"
    );

    let mut object = store
        .get(Kind::ModelEndpoint, "team", "fake")
        .await
        .expect("stored");
    object.spec["default_model"] = json!("m-2");
    store.update(object).await.expect("updated");

    let rebuilt = router.resolve("team", "fake").await.expect("rebuilt");
    assert!(
        !Arc::ptr_eq(&first.client, &rebuilt.client),
        "client rebuilt"
    );
    assert_eq!(rebuilt.model, "m-2");
    assert_eq!(call(&rebuilt).await, "model=m-2 step=1");

    store
        .delete(Kind::ModelEndpoint, "team", "fake", None)
        .await
        .expect("deleted");
    let err = router.resolve("team", "fake").await.expect_err("gone");
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "a deleted endpoint is not served from cache"
    );
}

#[tokio::test]
async fn private_addresses_need_allow_private() {
    let server = openai_fake("sk-test").await;
    let store = store();
    secret(&store, "team", "openai-key", &[("value", "sk-test")]).await;
    let base = format!("{}/v1", server.uri());
    let localhost = base.replace("127.0.0.1", "localhost");
    let router = router(&store, &[]);
    for (name, base_url, allow) in [
        ("literal", base.as_str(), None),
        ("named", localhost.as_str(), Some(false)),
        ("opted-in", localhost.as_str(), Some(true)),
    ] {
        let mut spec = json!({
            "provider": "openai",
            "base_url": base_url,
            "default_model": "gpt-4o",
            "auth": {"secretRef": "openai-key"}
        });
        if let Some(allow) = allow {
            spec["allowPrivate"] = json!(allow);
        }
        put(&store, Kind::ModelEndpoint, "team", name, spec).await;
    }
    // A literal loopback address is refused when the endpoint resolves.
    let err = router
        .resolve("team", "literal")
        .await
        .expect_err("loopback literal");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(
        err.message().contains("127.0.0.1 is a loopback address")
            && err
                .message()
                .contains("set spec.allowPrivate: true on the ModelEndpoint"),
        "{err}"
    );
    // A name resolving to loopback is refused when the request connects.
    let named = router.resolve("team", "named").await.expect("resolves");
    let err = named
        .client
        .complete(request(&named.model))
        .await
        .expect_err("localhost is loopback");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(
        err.message().contains("localhost resolves to") && err.message().contains("loopback"),
        "{err}"
    );
    // With allowPrivate the same server answers.
    let opted = router.resolve("team", "opted-in").await.expect("resolves");
    assert_eq!(call(&opted).await, "ok");
}
