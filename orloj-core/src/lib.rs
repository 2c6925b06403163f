//! # orloj-core
//!
//! The resource model of Orloj (`orloj.dev/v1`): kinds, the object envelope, typed specs with
//! their defaults and validation, manifest parsing, label selectors, task-claiming rules, and
//! the extension traits ([`Store`]) that the other crates implement. No I/O happens here.
//!
//! ```
//! use orloj_core::{Kind, LabelSelector};
//!
//! assert_eq!(Kind::from_cli_name("policies"), Some(Kind::AgentPolicy));
//! assert_eq!(Kind::AgentSystem.plural(), "agent-systems");
//! let sel = LabelSelector::parse("team=research").unwrap();
//! assert!(!sel.is_empty());
//! ```

pub mod auth;
pub mod bus;
pub mod clock;
pub mod error;
pub mod kind;
pub mod labels;
pub mod manifest;
pub mod model;
pub mod object;
pub mod resources;
pub mod store;
pub mod task_queue;
pub mod tool;

pub use bus::{Bus, Delivery};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use kind::{API_VERSION, DEFAULT_NAMESPACE, Kind};
pub use labels::LabelSelector;
pub use manifest::{ManifestError, parse_manifests, parse_object, to_yaml};
pub use object::{Object, ObjectList, ObjectMeta, scoped_key, split_ref};
pub use store::{ChangeMarker, ClaimRequest, ListOptions, Store, WatchEvent, WatchEventType};
