//! Glue to `orloj_core` resource functions. Each function here is the single call site the API
//! uses, so switching a fallback to the core implementation is a one-line change.

use orloj_core::{Error, Kind, Object, Result};
use serde_json::Value;

/// Parses a write body holding one object (JSON or one YAML document) with
/// `orloj_core::manifest::parse_object`; a body without `kind` gets `default_kind` (the kind of
/// the request path).
pub(crate) fn parse_object(text: &str, default_kind: Kind) -> Result<Object> {
    let err = match orloj_core::manifest::parse_object(text) {
        Ok(object) => return Ok(object),
        Err(err) => err,
    };
    // Only a missing kind is repaired; every other error is core's, unchanged.
    let Ok(Value::Object(mut map)) = parse_body(text) else {
        return Err(err);
    };
    let missing = match map.get("kind") {
        None | Some(Value::Null) => true,
        Some(Value::String(k)) => k.trim().is_empty(),
        Some(_) => false,
    };
    if !missing {
        return Err(err);
    }
    map.insert("kind".into(), Value::String(default_kind.as_str().into()));
    orloj_core::manifest::parse_object(&Value::Object(map).to_string())
}

/// Parses a request body (JSON, or a single YAML document) into a JSON value.
pub(crate) fn parse_body(text: &str) -> Result<Value> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(Error::invalid("request body is empty"));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(json_err) if trimmed.starts_with('{') || trimmed.starts_with('[') => Err(
            Error::invalid(format!("request body is not valid JSON: {json_err}")),
        ),
        Err(_) => {
            // YAML 1.2 booleans only: a name like `y` or `on` must stay a string.
            let mut options = serde_saphyr::Options::default();
            options.strict_booleans = true;
            serde_saphyr::from_str_with_options::<Value>(text, options)
                .map_err(|e| Error::invalid(format!("request body is not valid JSON or YAML: {e}")))
        }
    }
}

/// Applies defaults and validation to an object (spec §1 normalize-on-write).
pub(crate) fn normalize(object: Object) -> Result<Object> {
    orloj_core::resources::normalize(object)
}

/// Validates and defaults a status written through the status subresource.
pub(crate) fn normalize_status(kind: Kind, status: Value) -> Result<Value> {
    orloj_core::resources::normalize_status(kind, status)
}

/// Replaces every `spec.data` value of a Secret with `***` (no-op for other kinds).
pub(crate) fn redact(object: &mut Object) {
    orloj_core::resources::redact_secret(object);
}

/// Replaces `***` values in a Secret's `spec.data` with the stored values, so a redacted object
/// read from the API can be written back unchanged. Without a stored object any `***` is
/// rejected. No-op for other kinds.
pub(crate) fn merge_redacted(new: &mut Object, stored: Option<&Object>) -> Result<()> {
    let empty;
    let stored = match stored {
        Some(s) => s,
        None => {
            empty = Object::new(new.kind, new.namespace(), new.name());
            &empty
        }
    };
    orloj_core::resources::merge_redacted_secret(new, stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_json_and_yaml() {
        let v = parse_body("{\"kind\":\"Agent\"}").expect("json");
        assert_eq!(v["kind"], "Agent");
        let v = parse_body("kind: Agent\nmetadata:\n  name: y\n").expect("yaml");
        assert_eq!(v["metadata"]["name"], "y");
        assert!(parse_body("{broken").is_err());
        assert!(parse_body("   ").is_err());
    }

    #[test]
    fn fills_missing_kind_only() {
        let o = parse_object("metadata:\n  name: a\nspec: {model_ref: m}\n", Kind::Agent)
            .expect("kind filled");
        assert_eq!(o.kind, Kind::Agent);
        let o = parse_object(
            "{\"kind\":\"Tool\",\"metadata\":{\"name\":\"t\"}}",
            Kind::Agent,
        )
        .expect("explicit kind kept");
        assert_eq!(o.kind, Kind::Tool);
        let err = parse_object("kind: Nope\nmetadata: {name: a}\n", Kind::Agent)
            .expect_err("unknown kind");
        assert!(err.message().contains("Nope"), "{err}");
    }

    #[test]
    fn redacts_and_merges_secrets() {
        let mut stored = Object::new(Kind::Secret, "default", "s");
        stored.spec = json!({"data": {"k": "c2VjcmV0", "j": "eA=="}});
        let mut shown = stored.clone();
        redact(&mut shown);
        assert_eq!(shown.spec["data"]["k"], "***");
        let mut back = shown.clone();
        back.spec["data"]["j"] = json!("eQ==");
        merge_redacted(&mut back, Some(&stored)).expect("merge");
        assert_eq!(back.spec["data"]["k"], "c2VjcmV0");
        assert_eq!(back.spec["data"]["j"], "eQ==");
        let mut orphan = shown;
        assert!(merge_redacted(&mut orphan, None).is_err());
    }
}
