//! Reading manifests: YAML (several `---` documents per file) or JSON.

use crate::object::Object;
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

/// Parses and normalizes every document of a manifest source.
pub fn parse_manifests(source: &str, text: &str) -> Result<Vec<Object>, ManifestError> {
    let _ = text;
    Err(ManifestError {
        source: source.to_string(),
        document: 1,
        message: "manifest parsing not implemented yet".into(),
    })
}
