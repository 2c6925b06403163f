//! Maps sqlx errors onto [`orloj_core::ErrorKind`]s.

use orloj_core::Error;

/// Postgres error codes we branch on.
const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// Whether `e` is a unique-key violation (a concurrent create of the same key).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    db_code(e).as_deref() == Some(UNIQUE_VIOLATION)
}

/// Whether `e` is a foreign-key violation (e.g. a log line for a task that does not exist).
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    db_code(e).as_deref() == Some(FOREIGN_KEY_VIOLATION)
}

fn db_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The Unavailable error for an unreachable or overloaded database.
pub(crate) fn unavailable(detail: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("store unavailable: {detail}"))
}

/// Classifies a sqlx error: connection trouble is Unavailable (retryable), constraint and data
/// errors are Conflict/Invalid, everything else is Internal.
pub(crate) fn map(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed => unavailable(&e),
        sqlx::Error::Configuration(_) => Error::invalid(format!("store configuration: {e}")),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                UNIQUE_VIOLATION => Error::conflict(format!("already exists: {}", db.message())),
                // serialization failure, deadlock, lock not available: retry may succeed
                "40001" | "40P01" | "55P03" => Error::conflict(format!("store: {}", db.message())),
                // check violation (name too long), untranslatable character (\u0000 in JSONB),
                // invalid text representation, string too long
                "23514" | "22P05" | "22021" | "22P02" | "22001" => {
                    Error::invalid(format!("store rejected the object: {}", db.message()))
                }
                // connection exceptions, insufficient resources, operator intervention
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
                    unavailable(db.message())
                }
                _ => Error::internal(format!("store: {e}")),
            }
        }
        _ => Error::internal(format!("store: {e}")),
    }
}
