//! Grain identity: a stable type name plus a string key.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The address of a grain: its registered type name and its key.
///
/// A grain always exists logically; the id is all a caller needs to reach it.
/// The type name is the grain's `TYPE_NAME` (a stable wire name), never a Rust path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrainId {
    /// Registered wire name of the grain type, e.g. `"example.counter/v1"`.
    pub type_name: Cow<'static, str>,
    /// Key within the type, e.g. a user name.
    pub key: String,
}

impl GrainId {
    /// Builds an id from a static type name (the common, allocation-free case).
    pub fn new(type_name: &'static str, key: impl Into<String>) -> Self {
        Self {
            type_name: Cow::Borrowed(type_name),
            key: key.into(),
        }
    }

    /// Builds an id whose type name was decoded at run time (e.g. from a frame).
    pub fn from_parts(type_name: String, key: String) -> Self {
        Self {
            type_name: Cow::Owned(type_name),
            key,
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
