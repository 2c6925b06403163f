//! A writer that sends the writes waiting for it at one moment as one statement.
//!
//! Under load, many callers write at once, each with its own statement, commit and round trip
//! (and, for writes that take the store revision, each queuing on its lock). A batcher runs one
//! statement at a time: a write that finds it idle goes out alone at once (with the one-row
//! statement, which costs less than the batch statement for one row), and the writes arriving
//! while a statement runs go out together with the next one. It adds no wait. Writes are sent
//! in the order they were queued.

use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one statement.
const MAX_BATCH: usize = 64;

/// One kind of write that can be sent several at a time.
pub(super) trait Batch: Send + Sync + 'static {
    /// What to write.
    type Write: Send + Sync + 'static;
    /// What each write's caller is told.
    type Outcome: Send + 'static;

    /// Writes one write with the one-row statement.
    fn write_one(
        &self,
        write: &Self::Write,
    ) -> impl Future<Output = Result<Self::Outcome, sqlx::Error>> + Send;

    /// Writes several in one statement: the outcome of each, in order. A database error fails
    /// the statement as a whole; then each write is tried alone, so that a bad one fails alone.
    fn write_many(
        &self,
        writes: &[&Self::Write],
    ) -> impl Future<Output = Result<Vec<Self::Outcome>, sqlx::Error>> + Send;
}

/// A queued write and where its outcome goes.
pub(super) struct Queued<B: Batch> {
    write: B::Write,
    reply: oneshot::Sender<Result<B::Outcome, sqlx::Error>>,
}

impl<B: Batch> Queued<B> {
    fn answer(self, outcome: Result<B::Outcome, sqlx::Error>) {
        // Let go of the write first: a caller sharing what it wrote takes it back without a copy.
        let Queued { write, reply } = self;
        drop(write);
        // The caller may have given up (its operation timed out).
        let _ = reply.send(outcome);
    }
}

/// Where a batcher takes its writes.
pub(super) type Sender<B> = mpsc::UnboundedSender<Queued<B>>;

/// Starts a batcher for `batch`; it runs until the returned sender is dropped.
pub(super) fn start<B: Batch>(batch: B) -> Sender<B> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(batch, rx));
    tx
}

/// Queues `write` and waits for its outcome; `None` when the batcher has stopped.
pub(super) async fn submit<B: Batch>(
    sender: &Sender<B>,
    write: B::Write,
) -> Option<Result<B::Outcome, sqlx::Error>> {
    let (reply, outcome) = oneshot::channel();
    sender.send(Queued { write, reply }).ok()?;
    outcome.await.ok()
}

async fn run<B: Batch>(batch: B, mut queue: mpsc::UnboundedReceiver<Queued<B>>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        // A caller that gave up (its operation timed out) was told so: its write is not made.
        waiting.retain(|q: &Queued<B>| !q.reply.is_closed());
        let each = match waiting.as_slice() {
            [] => continue,
            [_] => Each::Write,
            _ => {
                let writes: Vec<&B::Write> = waiting.iter().map(|q| &q.write).collect();
                match batch.write_many(&writes).await {
                    Ok(outcomes) => {
                        let mut outcomes = outcomes.into_iter();
                        for queued in waiting.drain(..) {
                            let outcome = outcomes.next().ok_or_else(|| {
                                sqlx::Error::Protocol("the batch statement left a write out".into())
                            });
                            queued.answer(outcome);
                        }
                        continue;
                    }
                    // The database refused the statement: one of the writes may be to blame.
                    Err(sqlx::Error::Database(_)) => Each::Write,
                    // No connection, or it broke: the one-row statements would fare no better.
                    Err(e) => Each::Fail(e.to_string()),
                }
            }
        };
        for queued in waiting.drain(..) {
            let outcome = match &each {
                Each::Write => batch.write_one(&queued.write).await,
                Each::Fail(e) => Err(sqlx::Error::Io(std::io::Error::other(e.clone()))),
            };
            queued.answer(outcome);
        }
    }
}

/// What becomes of each write of a batch not written as one statement.
enum Each {
    /// Written on its own, so that one bad write fails alone.
    Write,
    /// Fails with this (connection trouble).
    Fail(String),
}
