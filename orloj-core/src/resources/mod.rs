//! Typed specs of every kind, their defaults and validation rules (spec §2).
//!
//! [`normalize`] is the single entry point every write goes through.

use crate::error::Result;
use crate::object::Object;

/// Applies defaults and validation to an object of any kind; the result is what gets stored.
/// Errors name the field path (`spec.limits.max_steps: expected integer`).
pub fn normalize(object: Object) -> Result<Object> {
    // Placeholder until the typed specs land: defaults the namespace only.
    let mut object = object;
    if object.metadata.namespace.is_empty() {
        object.metadata.namespace = crate::kind::DEFAULT_NAMESPACE.to_string();
    }
    Ok(object)
}
