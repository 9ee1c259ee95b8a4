//! `alerts.*` configuration.

use serde::{Deserialize, Serialize};

/// `alerts.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {}
