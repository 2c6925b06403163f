//! The raw baselines that bound the durable dispatch path: what Postgres and JetStream do with
//! no Orloj code in between.

use async_nats::jetstream::{self, consumer::pull, stream::StorageType};
use futures::StreamExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Errors of the baselines, as text.
pub type Result<T> = std::result::Result<T, String>;

fn err(what: &str) -> impl Fn(sqlx::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

pub use orloj_store::testing::with_database;

/// A fresh database on the server of `admin_url` with `synchronous_commit = off`; dropped by
/// [`BenchDb::drop_database`].
pub struct BenchDb {
    admin: String,
    name: String,
    /// Connection URL of the new database.
    pub url: String,
}

impl BenchDb {
    /// Creates the database.
    pub async fn create(admin_url: &str) -> Result<Self> {
        let name = format!("orloj_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .map_err(err("connecting to TEST_DATABASE_URL"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(err("creating the bench database"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        )))
        .execute(&mut conn)
        .await
        .map_err(err("setting synchronous_commit"))?;
        Ok(Self {
            admin: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        })
    }

    /// `synchronous_commit` and `fsync` as a new session of the database sees them.
    pub async fn commit_mode(&self) -> Result<(String, String)> {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .map_err(err("connecting to the bench database"))?;
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut conn)
            .await
            .map_err(err("SHOW synchronous_commit"))?;
        let fsync: String = sqlx::query_scalar("SHOW fsync")
            .fetch_one(&mut conn)
            .await
            .map_err(err("SHOW fsync"))?;
        Ok((sync, fsync))
    }

    /// `VACUUM (ANALYZE)` of the whole database: the deleted tasks and events of the last
    /// scenario are cleaned up now rather than by an autovacuum during the next one.
    pub async fn vacuum(&self) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .map_err(err("connecting to the bench database"))?;
        sqlx::query("VACUUM (ANALYZE)")
            .execute(&mut conn)
            .await
            .map_err(err("VACUUM"))?;
        Ok(())
    }

    /// Drops the database (with FORCE).
    pub async fn drop_database(&self) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin)
            .await
            .map_err(err("connecting to TEST_DATABASE_URL"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .map_err(err("dropping the bench database"))?;
        Ok(())
    }
}

/// The raw Postgres task loop: insert a task row, claim the oldest pending one with
/// `FOR UPDATE SKIP LOCKED`, mark it complete.
pub struct RawPostgres {
    pool: PgPool,
}

const CLAIM: &str = "UPDATE bench_raw_tasks SET phase = 'Running', claimed_by = $1, \
    status = status || jsonb_build_object('phase', 'Running', 'claimedBy', $1::text) \
    WHERE id = (SELECT id FROM bench_raw_tasks WHERE phase = 'Pending' ORDER BY id \
    LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id";

impl RawPostgres {
    /// Creates the `bench_raw_tasks` table in the database at `url` (a pool of `connections`).
    pub async fn setup(url: &str, connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(url)
            .await
            .map_err(err("connecting the raw Postgres pool"))?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS bench_raw_tasks (id bigserial PRIMARY KEY, \
             name text NOT NULL UNIQUE, phase text NOT NULL, claimed_by text, \
             spec jsonb NOT NULL, status jsonb NOT NULL DEFAULT '{}')",
            "CREATE INDEX IF NOT EXISTS bench_raw_tasks_pending ON bench_raw_tasks (id) \
             WHERE phase = 'Pending'",
        ] {
            sqlx::query(ddl)
                .execute(&pool)
                .await
                .map_err(err("creating the raw task table"))?;
        }
        Ok(Self { pool })
    }

    async fn insert(&self, seq: usize) -> Result<()> {
        sqlx::query(
            "INSERT INTO bench_raw_tasks (name, phase, spec, status) \
             VALUES ($1, 'Pending', $2, '{\"phase\": \"Pending\"}')",
        )
        .bind(format!("raw-{}-{seq}", uuid::Uuid::new_v4().simple()))
        .bind(serde_json::json!({"system": "pipeline-3", "input": {"topic": "benchmarks"}}))
        .execute(&self.pool)
        .await
        .map_err(err("inserting a raw task"))?;
        Ok(())
    }

    async fn claim_and_complete(&self, worker: &str) -> Result<bool> {
        let claimed: Option<i64> = sqlx::query_scalar(CLAIM)
            .bind(worker)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("claiming a raw task"))?;
        let Some(id) = claimed else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE bench_raw_tasks SET phase = 'Succeeded', claimed_by = NULL, \
             status = status || '{\"phase\": \"Succeeded\"}' WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("completing a raw task"))?;
        Ok(true)
    }

    /// Runs `n` tasks through `loops` concurrent insert → claim → complete loops; returns the
    /// wall time. The table is emptied afterwards (not timed).
    pub async fn run_batch(self: &Arc<Self>, n: usize, loops: usize) -> Result<Duration> {
        let inserted = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for l in 0..loops {
            let (me, inserted, completed) = (self.clone(), inserted.clone(), completed.clone());
            set.spawn(async move {
                let worker = format!("raw-{l}");
                while completed.load(Ordering::SeqCst) < n {
                    let seq = inserted.fetch_add(1, Ordering::SeqCst);
                    if seq < n {
                        me.insert(seq).await?;
                    }
                    if me.claim_and_complete(&worker).await? {
                        completed.fetch_add(1, Ordering::SeqCst);
                    } else {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
                Ok::<(), String>(())
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| format!("raw loop panicked: {e}"))??;
        }
        let elapsed = start.elapsed();
        sqlx::query("TRUNCATE bench_raw_tasks")
            .execute(&self.pool)
            .await
            .map_err(err("emptying the raw task table"))?;
        Ok(elapsed)
    }

    /// One task through insert → claim → complete with nothing else in flight.
    pub async fn one(&self) -> Result<Duration> {
        let start = Instant::now();
        self.insert(0).await?;
        if !self.claim_and_complete("raw-single").await? {
            return Err("the inserted raw task was not claimable".into());
        }
        Ok(start.elapsed())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The raw JetStream loop: publish (waiting for the PubAck) → pull consume → ack, on a
/// file-storage stream of its own.
pub struct RawJetStream {
    js: jetstream::Context,
    stream: String,
    subject: String,
    /// `None` once the stream is deleted.
    messages: tokio::sync::Mutex<Option<pull::Stream>>,
}

impl RawJetStream {
    /// Creates a fresh stream and a durable pull consumer (explicit ack) on it.
    pub async fn setup(url: &str) -> Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("connecting to TEST_NATS_URL: {e}"))?;
        let js = jetstream::new(client);
        let stream = format!("BENCH_RAW_{id}");
        let subject = format!("benchraw.{id}.inbox");
        let s = js
            .create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![subject.clone()],
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the raw stream: {e}"))?;
        let consumer = s
            .create_consumer(pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the raw consumer: {e}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(10)
            .messages()
            .await
            .map_err(|e| format!("opening the raw pull stream: {e}"))?;
        Ok(Self {
            js,
            stream,
            subject,
            messages: tokio::sync::Mutex::new(Some(messages)),
        })
    }

    async fn publish(&self, payload: &'static [u8]) -> Result<()> {
        self.js
            .publish(self.subject.clone(), payload.into())
            .await
            .map_err(|e| format!("publishing: {e}"))?
            .await
            .map_err(|e| format!("waiting for the PubAck: {e}"))?;
        Ok(())
    }

    async fn consume(&self, n: usize) -> Result<()> {
        let mut messages = self.messages.lock().await;
        let messages = messages.as_mut().ok_or("the raw stream was deleted")?;
        for _ in 0..n {
            let m = messages
                .next()
                .await
                .ok_or("the raw pull stream ended")?
                .map_err(|e| format!("pulling: {e}"))?;
            m.ack().await.map_err(|e| format!("acking: {e}"))?;
        }
        Ok(())
    }

    /// Publishes `n` messages from `publishers` concurrent publishers while consuming and
    /// acking them; returns the time until the last ack.
    pub async fn run_batch(self: &Arc<Self>, n: usize, publishers: usize) -> Result<Duration> {
        let start = Instant::now();
        let me = self.clone();
        let consumer = tokio::spawn(async move { me.consume(n).await });
        let published: Vec<Result<()>> = futures::stream::iter(0..n)
            .map(|_| self.publish(PAYLOAD))
            .buffer_unordered(publishers)
            .collect()
            .await;
        published.into_iter().collect::<Result<Vec<()>>>()?;
        consumer
            .await
            .map_err(|e| format!("raw consumer panicked: {e}"))??;
        Ok(start.elapsed())
    }

    /// One message published, consumed and acked with nothing else in flight.
    pub async fn one(&self) -> Result<Duration> {
        let start = Instant::now();
        self.publish(PAYLOAD).await?;
        self.consume(1).await?;
        Ok(start.elapsed())
    }

    /// Closes the pull consumer and deletes the stream.
    pub async fn delete(&self) -> Result<()> {
        self.messages.lock().await.take();
        self.js
            .delete_stream(&self.stream)
            .await
            .map(|_| ())
            .map_err(|e| format!("deleting the raw stream: {e}"))
    }
}

/// A payload about the size of an agent message envelope.
const PAYLOAD: &[u8] = br#"{"message_id":"default/raw/a001/h001/system/p3-a1","idempotency_key":"","task_id":"default/raw","attempt":1,"system":"pipeline-3","namespace":"default","from_agent":"system","to_agent":"p3-a1","branch_id":"b001","parent_branch_id":"","type":"task_start","payload":"benchmarks","timestamp":"2026-01-01T00:00:00Z","trace_id":"t","parent_id":""}"#;
