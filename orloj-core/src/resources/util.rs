//! Small helpers shared by the per-kind normalizers.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// Trims every entry, drops empty ones and removes exact duplicates (first occurrence wins).
pub(crate) fn dedupe(list: &mut Vec<String>) {
    let mut seen = HashSet::new();
    list.retain_mut(|s| {
        *s = s.trim().to_string();
        !s.is_empty() && seen.insert(s.clone())
    });
}

/// Like [`dedupe`] but compares case-insensitively, keeping the first spelling.
pub(crate) fn dedupe_ci(list: &mut Vec<String>) {
    let mut seen = HashSet::new();
    list.retain_mut(|s| {
        *s = s.trim().to_string();
        !s.is_empty() && seen.insert(s.to_lowercase())
    });
}

/// Trims in place.
pub(crate) fn trim(s: &mut String) {
    let t = s.trim();
    if t.len() != s.len() {
        *s = t.to_string();
    }
}

/// Trims and lowercases in place.
pub(crate) fn lower(s: &mut String) {
    *s = s.trim().to_lowercase();
}

/// Lowercases an enum field, applies its default when empty, and checks it is allowed.
pub(crate) fn check_enum(
    field: &str,
    value: &mut String,
    default: &str,
    allowed: &[&str],
) -> Result<()> {
    lower(value);
    if value.is_empty() {
        *value = default.to_string();
    }
    if allowed.contains(&value.as_str()) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{field}: unsupported value {value:?} (expected one of {})",
            allowed.join(", ")
        )))
    }
}

/// Fails with `<field> is required` when the (trimmed) value is empty.
pub(crate) fn require(field: &str, value: &mut String) -> Result<()> {
    trim(value);
    if value.is_empty() {
        Err(Error::invalid(format!("{field} is required")))
    } else {
        Ok(())
    }
}

/// Fails when an integer field is negative.
pub(crate) fn non_negative(field: &str, value: i64) -> Result<()> {
    if value < 0 {
        Err(Error::invalid(format!("{field} must be >= 0, got {value}")))
    } else {
        Ok(())
    }
}

/// Applies a default to an integer field that is 0 (unset); negative values are an error.
pub(crate) fn default_int(field: &str, value: &mut i64, default: i64) -> Result<()> {
    non_negative(field, *value)?;
    if *value == 0 {
        *value = default;
    }
    Ok(())
}

/// Applies a default to an empty string field.
pub(crate) fn default_str(value: &mut String, default: &str) {
    trim(value);
    if value.is_empty() {
        *value = default.to_string();
    }
}

/// A scalar (string, number, bool, null) as a string; null becomes "".
fn scalar_to_string<E: serde::de::Error>(v: Value) -> std::result::Result<String, E> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(E::custom(format!(
            "invalid type: {}, expected a string",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    }
}

/// Deserializes `map[string]string`, accepting numbers and booleans as values (YAML writes
/// `count: 3` without quotes) by converting them to their string form.
pub(crate) fn lenient_string_map<'de, D, K, V>(
    d: D,
) -> std::result::Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: From<String> + Ord,
    V: From<String>,
{
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match scalar_to_string::<D::Error>(v) {
            Ok(s) => Ok((K::from(k), V::from(s))),
            Err(e) => Err(serde::de::Error::custom(format!("{k}: {e}"))),
        })
        .collect()
}

/// Deserializes a string, accepting a number or boolean scalar (e.g. `cpus: 0.5`).
pub(crate) fn lenient_string<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    scalar_to_string(Value::deserialize(d)?)
}

/// Deserializes text that may also be written as structured JSON (objects and arrays are
/// kept as their compact JSON text; scalars as in [`lenient_string`]).
pub(crate) fn json_text<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    match Value::deserialize(d)? {
        v @ (Value::Object(_) | Value::Array(_)) => Ok(v.to_string()),
        v => scalar_to_string(v),
    }
}

/// serde `skip_serializing_if` helper.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// serde `skip_serializing_if` helper.
pub(crate) fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// serde default helper.
pub(crate) fn default_true() -> bool {
    true
}

/// serde `skip_serializing_if` helper for fields that default to true.
pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes() {
        let mut v = vec![
            " a".to_string(),
            "A".into(),
            "a".into(),
            "".into(),
            "b ".into(),
        ];
        let mut ci = v.clone();
        dedupe(&mut v);
        assert_eq!(v, vec!["a", "A", "b"]);
        dedupe_ci(&mut ci);
        assert_eq!(ci, vec!["a", "b"]);
    }

    #[test]
    fn enums() {
        let mut v = " Contract ".to_string();
        check_enum("spec.x", &mut v, "dynamic", &["dynamic", "contract"]).expect("valid");
        assert_eq!(v, "contract");
        let mut e = String::new();
        check_enum("spec.x", &mut e, "dynamic", &["dynamic", "contract"]).expect("default");
        assert_eq!(e, "dynamic");
        let mut bad = "weird".to_string();
        let err = check_enum("spec.x", &mut bad, "dynamic", &["dynamic"]).expect_err("bad");
        assert!(
            err.message()
                .contains("spec.x: unsupported value \"weird\"")
        );
    }
}
