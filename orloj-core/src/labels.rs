//! Label selectors: `k=v,k2=v2` (equality, also `==`) and `k!=v`.

use crate::error::Error;
use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The label must be present with this value.
    Equals(String, String),
    /// The label must be absent or have another value.
    NotEquals(String, String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `k=v,k2==v2,k3!=v3`. Whitespace around terms is ignored.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value, negate) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, v, false)
            } else {
                return Err(Error::invalid(format!(
                    "invalid label selector term {term:?}: expected key=value"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(Error::invalid(format!(
                    "invalid label selector term {term:?}: empty key"
                )));
            }
            let bad = |s: &str| s.chars().any(|c| c.is_whitespace() || "=!,".contains(c));
            if bad(key) || bad(value) {
                return Err(Error::invalid(format!(
                    "invalid label selector term {term:?}"
                )));
            }
            requirements.push(if negate {
                Requirement::NotEquals(key.into(), value.into())
            } else {
                Requirement::Equals(key.into(), value.into())
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = LabelSelector::parse("a=1, b==2,c!=3").expect("valid");
        let mut l = BTreeMap::new();
        l.insert("a".to_string(), "1".to_string());
        l.insert("b".to_string(), "2".to_string());
        assert!(s.matches(&l));
        l.insert("c".to_string(), "3".to_string());
        assert!(!s.matches(&l));
        assert!(LabelSelector::parse("").expect("empty").matches(&l));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a", "=b", "a=b c", "a=b=c"] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert!(err.message().contains("label selector"), "{err}");
        }
    }
}
