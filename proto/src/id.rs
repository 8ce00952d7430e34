//! Grain identity: a stable type name plus a string key.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The address of a grain: its registered type name and its key.
///
/// A grain always exists logically; the id is all a caller needs to reach it.
/// The type name is the grain's `TYPE_NAME` (a stable wire name), never a Rust path.
/// Cloning never allocates: the type name is usually static and the key is shared
/// (every in-process call carries a copy of its target's id). On the wire the key is a
/// plain string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrainId {
    /// Registered wire name of the grain type, e.g. `"example.counter/v1"`.
    pub type_name: Cow<'static, str>,
    /// Key within the type, e.g. a user name.
    pub key: Arc<str>,
}

impl GrainId {
    /// Builds an id from a static type name (the common, allocation-free case).
    pub fn new(type_name: &'static str, key: impl Into<Arc<str>>) -> Self {
        Self {
            type_name: Cow::Borrowed(type_name),
            key: key.into(),
        }
    }

    /// Builds an id whose type name was decoded at run time (e.g. from a frame).
    pub fn from_parts(type_name: String, key: String) -> Self {
        Self {
            type_name: Cow::Owned(type_name),
            key: key.into(),
        }
    }
}

impl fmt::Display for GrainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.type_name, self.key)
    }
}

impl fmt::Debug for GrainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrainId({self})")
    }
}
