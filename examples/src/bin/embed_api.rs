//! Embedding the Orloj control plane in your own axum service.
//!
//! Mounts the Orloj REST API next to your own routes over an in-memory store, writes a
//! resource through the typed store API, and reads it back over HTTP.
//!
//! ```sh
//! cargo run -p orloj-examples --bin embed_api            # runs the demo and exits
//! cargo run -p orloj-examples --bin embed_api -- --serve # then keeps serving on 127.0.0.1:8090
//! ```

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use orloj_core::{Clock, Kind, Object, Store, SystemClock, resources};
use orloj_runtime::api::{ApiState, router};
use orloj_store::MemoryStore;
use std::sync::Arc;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));

    // Your service's own routes, with Orloj's API merged in.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the host service" }))
        .merge(router(ApiState::new(store.clone(), clock)));

    // Write through the store: normalize applies defaults and validation first.
    let mut agent = Object::new(Kind::Agent, "default", "writer");
    agent.spec = serde_json::json!({"model_ref": "mock-endpoint", "prompt": "Write it up."});
    let stored = store.create(resources::normalize(agent)?).await?;
    println!(
        "stored Agent/{} at resourceVersion {}",
        stored.name(),
        stored.metadata.resource_version
    );

    // Read it back over HTTP, as any client would.
    let response = app
        .clone()
        .oneshot(Request::get("/v1/agents/writer").body(Body::empty())?)
        .await?;
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    let fetched: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "GET /v1/agents/writer -> max_steps defaulted to {}",
        fetched["spec"]["limits"]["max_steps"]
    );

    if std::env::args().any(|a| a == "--serve") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:8090").await?;
        println!("serving on http://127.0.0.1:8090 (Ctrl-C to stop)");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
    }
    Ok(())
}
