//! [`SharedList`]: a list whose entries are shared between its copies.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A list whose entries are shared between copies: cloning it copies one pointer per entry,
/// not the entries. A task's trace, messages and history grow by a few entries per step while
/// every earlier status version (the worker's, the store's and its watch history's) keeps the
/// rest; sharing them makes each version cost pointers instead of strings.
///
/// Reads go through the slice of shared entries (`list[0].field`, `list.iter()`, `len`);
/// [`SharedList::get_mut`] copies an entry another version still shares before changing it.
/// Serialized as a plain list of entries.
///
/// ```
/// use orloj_core::resources::SharedList;
///
/// let mut first: SharedList<String> = ["a".to_string()].into_iter().collect();
/// let mut second = first.clone(); // shares "a"
/// second.push("b".to_string());
/// if let Some(entry) = second.get_mut(0) {
///     entry.push('!'); // copies "a" for `second` only
/// }
/// assert_eq!(first[0].as_str(), "a");
/// assert_eq!(second.iter().map(|e| e.as_str()).collect::<Vec<_>>(), ["a!", "b"]);
/// assert_eq!(serde_json::to_string(&second)?, r#"["a!","b"]"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SharedList<T>(Vec<Arc<T>>);

impl<T> SharedList<T> {
    /// An empty list.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Whether the list has no entries (also what `skip_serializing_if` names).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends `entry`.
    pub fn push(&mut self, entry: T) {
        self.0.push(Arc::new(entry));
    }

    /// The entry at `index` to change, copied first when another list shares it.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T>
    where
        T: Clone,
    {
        self.0.get_mut(index).map(Arc::make_mut)
    }

    /// Removes the first `count` entries (all when there are fewer).
    pub fn remove_first(&mut self, count: usize) {
        self.0.drain(..count.min(self.0.len()));
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether an entry equals `entry`.
    pub fn contains_entry(&self, entry: &T) -> bool
    where
        T: PartialEq,
    {
        self.0.iter().any(|e| **e == *entry)
    }
}

impl<T> Default for SharedList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::ops::Deref for SharedList<T> {
    type Target = [Arc<T>];
    fn deref(&self) -> &[Arc<T>] {
        &self.0
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|e| &**e)).finish()
    }
}

impl<T> FromIterator<T> for SharedList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self(iter.into_iter().map(Arc::new).collect())
    }
}

impl<T> Extend<T> for SharedList<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(Arc::new));
    }
}

impl<T> From<Vec<T>> for SharedList<T> {
    fn from(entries: Vec<T>) -> Self {
        entries.into_iter().collect()
    }
}

impl<'a, T> IntoIterator for &'a SharedList<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::slice::Iter<'a, Arc<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize> Serialize for SharedList<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|e| &**e))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SharedList<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(Self::from)
    }
}

impl<T: JsonSchema> JsonSchema for SharedList<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Vec::<T>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        Vec::<T>::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Vec::<T>::json_schema(generator)
    }

    fn inline_schema() -> bool {
        Vec::<T>::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_entries_until_one_is_changed() {
        let mut a: SharedList<String> = vec!["x".to_string(), "y".to_string()].into();
        let b = a.clone();
        assert!(Arc::ptr_eq(&a[0], &b[0]));
        if let Some(e) = a.get_mut(1) {
            *e = "z".into();
        }
        assert!(Arc::ptr_eq(&a[0], &b[0]));
        assert_eq!(b[1].as_str(), "y");
        assert_eq!(a[1].as_str(), "z");
        assert!(a.get_mut(2).is_none());
    }

    #[test]
    fn remove_first_and_contains() {
        let mut a: SharedList<u32> = (1..=5).collect();
        a.remove_first(2);
        assert_eq!(a.iter().map(|e| **e).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(a.contains_entry(&4));
        assert!(!a.contains_entry(&1));
        a.remove_first(10);
        assert!(a.is_empty());
    }

    #[test]
    fn serializes_as_a_plain_list() -> serde_json::Result<()> {
        let a: SharedList<u32> = serde_json::from_str("[1, 2]")?;
        assert_eq!(serde_json::to_value(&a)?, serde_json::json!([1, 2]));
        assert_eq!(format!("{a:?}"), "[1, 2]");
        let bad: Result<SharedList<u32>, _> = serde_json::from_str(r#"["x"]"#);
        assert!(bad.is_err());
        Ok(())
    }
}
