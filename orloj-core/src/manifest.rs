//! Reading manifests: YAML (several `---` documents per file) or JSON (one object or an array).
//!
//! ```
//! let text = "kind: AgentRole\nmetadata: {name: reader}\nspec: {permissions: [read]}\n---\n\
//!             kind: Worker\nmetadata: {name: w1}\n";
//! let objs = orloj_core::parse_manifests("roles.yaml", text).unwrap();
//! assert_eq!(objs.len(), 2);
//! assert_eq!(objs[1].metadata.namespace, "default");
//!
//! let err = orloj_core::parse_manifests("a.yaml", "kind: Agent\nmetadata: {name: a}\nspec:\n  model_ref: m\n  limits: {max_steps: x}\n")
//!     .unwrap_err();
//! assert!(err.to_string().starts_with("a.yaml (document 1): spec.limits.max_steps: invalid type"));
//! ```

use crate::error::Error;
use crate::kind::Kind;
use crate::object::Object;
use crate::resources;
use serde_json::Value;
use std::fmt;

/// A manifest that could not be read, naming the file, the document and the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file (or other source) name.
    pub source: String,
    /// 1-based document index within the source.
    pub document: usize,
    /// What is wrong, starting with the field path when there is one.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (document {}): {}",
            self.source, self.document, self.message
        )
    }
}

impl std::error::Error for ManifestError {}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::invalid(e.to_string())
    }
}

/// Parses and normalizes every document of a manifest source. JSON is recognised by a leading
/// `{` or `[`; anything else is YAML, split into documents at `---` lines. Empty documents are
/// skipped (but still counted, so document numbers match the file).
pub fn parse_manifests(source: &str, text: &str) -> Result<Vec<Object>, ManifestError> {
    let err = |document: usize, e: Error| ManifestError {
        source: source.to_string(),
        document,
        message: e.message().to_string(),
    };
    let mut out = Vec::new();
    for (index, doc) in documents(text)
        .map_err(|(doc, e)| err(doc, e))?
        .into_iter()
        .enumerate()
    {
        let document = index + 1;
        let Some(value) = doc else { continue };
        let obj = object_from_document(value).map_err(|e| err(document, e))?;
        out.push(resources::normalize(obj).map_err(|e| err(document, e))?);
    }
    Ok(out)
}

/// Parses an API request body holding exactly one object (JSON or YAML). The object is NOT
/// normalized: the API applies the request namespace first.
pub fn parse_object(text: &str) -> Result<Object, Error> {
    let docs = documents(text).map_err(|(_, e)| e)?;
    let mut present: Vec<Value> = docs.into_iter().flatten().collect();
    match present.len() {
        0 => Err(Error::invalid("request body is empty: expected one object")),
        1 => object_from_document(present.remove(0)),
        n => Err(Error::invalid(format!(
            "expected exactly one object, got {n} documents"
        ))),
    }
}

/// Renders a JSON value as YAML (for `-o yaml`).
pub fn to_yaml(value: &Value) -> Result<String, Error> {
    serde_saphyr::to_string(value).map_err(|e| Error::internal(format!("rendering YAML: {e}")))
}

/// Checks `kind` and reads the envelope, with field paths in errors.
fn object_from_document(value: Value) -> Result<Object, Error> {
    let Value::Object(map) = &value else {
        return Err(Error::invalid(format!(
            "expected a resource object (a map with apiVersion, kind, metadata, spec), got {}",
            match value {
                Value::Array(_) => "a sequence",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    };
    let kinds = Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match map.get("kind") {
        None | Some(Value::Null) => {
            return Err(Error::invalid(format!("kind is required (one of {kinds})")));
        }
        Some(Value::String(k)) if k.trim().is_empty() => {
            return Err(Error::invalid(format!("kind is required (one of {kinds})")));
        }
        Some(Value::String(k)) => {
            if Kind::from_kind_name(k).is_err() {
                return Err(Error::invalid(format!(
                    "kind: unknown kind {k:?} (expected one of {kinds})"
                )));
            }
        }
        Some(_) => return Err(Error::invalid("kind: expected a string")),
    }
    Object::from_value(value)
}

type Documents = Vec<Option<Value>>;

/// Splits and parses the documents of a source; `None` marks an empty document.
/// Errors carry the 1-based document index.
fn documents(text: &str) -> Result<Documents, (usize, Error)> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(trimmed)
            .map_err(|e| (1, Error::invalid(format!("invalid JSON: {e}"))))?;
        return Ok(match value {
            Value::Array(items) => items.into_iter().map(Some).collect(),
            v => vec![Some(v)],
        });
    }
    let mut out = Vec::new();
    for (index, chunk) in split_yaml(text).into_iter().enumerate() {
        if !has_content(chunk.text) {
            out.push(None);
            continue;
        }
        let value: Value = serde_saphyr::from_str_with_options(chunk.text, yaml_options())
            .map_err(|e| (index + 1, yaml_error(&e, chunk.first_line)))?;
        out.push(if value.is_null() { None } else { Some(value) });
    }
    Ok(out)
}

/// YAML 1.2 core-schema scalars: `yes`/`on`/`y` and `0123` stay strings, so names and
/// `map[string]string` values are read as written.
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

fn yaml_error(e: &serde_saphyr::Error, first_line: usize) -> Error {
    let inner = e.without_snippet();
    let mut msg = inner.to_string();
    // Drop advice aimed at library users (", set DuplicateKeyPolicy in Options ...").
    if let Some(cut) = msg.find(", set DuplicateKeyPolicy") {
        msg.truncate(cut);
    }
    // Locations are relative to the document; report them relative to the file.
    if let Some(loc) = inner.location() {
        let line = loc.line() as usize + first_line - 1;
        if let Some(cut) = msg.find(" at line ") {
            msg.truncate(cut);
        }
        msg = format!("invalid YAML at line {line} column {}: {msg}", loc.column());
    } else {
        msg = format!("invalid YAML: {msg}");
    }
    Error::invalid(msg)
}

struct Chunk<'a> {
    text: &'a str,
    /// 1-based line of the chunk's first line in the source.
    first_line: usize,
}

/// Splits YAML text at document-start lines (`---` alone or followed by whitespace). A
/// leading chunk with no content (before the first `---`) is not a document.
fn split_yaml(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && offset > 0 {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset;
            start_line = i + 1;
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        text: &text[start..],
        first_line: start_line,
    });
    if chunks.len() > 1
        && !has_content(chunks[0].text)
        && !chunks[0].text.trim_start().starts_with("---")
    {
        chunks.remove(0);
    }
    chunks
}

/// Whether a document has anything besides markers, directives, comments and blank lines.
fn has_content(doc: &str) -> bool {
    doc.lines().any(|line| {
        let l = line.trim();
        let l = l.strip_prefix("---").map(str::trim_start).unwrap_or(l);
        !(l.is_empty() || l.starts_with('#') || l == "..." || l.starts_with('%'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_counts_empty_ones() {
        let text = "# header\n---\nkind: Worker\nmetadata: {name: a}\n---\n# nothing\n---\nkind: Worker\nmetadata: {name: b}\n";
        let docs = documents(text).expect("parses");
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_some());
        assert!(docs[1].is_none());
        assert!(docs[2].is_some());
    }

    #[test]
    fn first_document_without_marker_counts() {
        let chunks = split_yaml("a: 1\n---\nb: 2\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].first_line, 2);
        // `----` and `---x` are not markers.
        assert_eq!(split_yaml("a: |\n  x\n----\n").len(), 1);
    }

    #[test]
    fn yaml_error_reports_file_line() {
        let text = "kind: Worker\nmetadata: {name: a}\n---\nkind: Worker\nmetadata: {name: [b\n";
        let err = parse_manifests("w.yaml", text).expect_err("bad yaml");
        assert_eq!(err.document, 2);
        assert!(err.message.contains("invalid YAML at line"), "{err}");
    }
}
