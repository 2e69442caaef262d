//! Rollout strategies, as the spec states them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Analysis, Duration};

/// A percentage in 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub u8);

/// One canary step: send `weight` percent of traffic to the new server group, then wait.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Share of traffic for the new server group.
    pub weight: Percent,
    /// How long to hold this step before the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Duration>,
}

/// How many instances a rolling update may take out at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxUnavailable {
    /// A number of instances.
    Count(u32),
    /// A percentage of desired capacity, rounded down, at least one.
    Percent(u8),
}

impl Default for MaxUnavailable {
    fn default() -> Self {
        Self::Count(1)
    }
}

impl MaxUnavailable {
    /// The batch size for a server group of `desired` instances (at least 1).
    pub fn batch(self, desired: u32) -> u32 {
        match self {
            Self::Count(n) => n.max(1),
            Self::Percent(p) => (desired * u32::from(p) / 100).max(1),
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MaxUnavailable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(n) => s.serialize_u32(*n),
            Self::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Self::Count(n)),
            Raw::Text(t) => t
                .strip_suffix('%')
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| (1..=100).contains(p))
                .map(Self::Percent)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{t}` is not a count or a percentage like `25%`"
                    ))
                }),
        }
    }
}

fn one() -> u32 {
    1
}

/// How a cluster moves to a new server group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Strategy {
    /// Deploy the new group beside the old, wait healthy, enable it, disable the old.
    RedBlack {
        /// Older disabled server groups kept for fast rollback.
        #[serde(default = "one")]
        keep_disabled: u32,
        /// Destroy a disabled server group once it has been disabled this long (the time is
        /// recorded in the store); `keepDisabled` still caps how many are kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destroy_disabled_after: Option<Duration>,
    },
    /// Red-black in steps: grow the new group and shrink the old by percent of capacity.
    RollingRedBlack {
        /// Cumulative percentages; 100 is implied at the end.
        steps: Vec<Percent>,
        /// Older disabled server groups kept for fast rollback.
        #[serde(default = "one")]
        keep_disabled: u32,
        /// Destroy a disabled server group once it has been disabled this long (the time is
        /// recorded in the store); `keepDisabled` still caps how many are kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destroy_disabled_after: Option<Duration>,
        /// How long to hold each step below 100% (the analysis window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pause: Option<Duration>,
        /// Judge the new group against the old during each pause.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        analysis: Option<Box<Analysis>>,
    },
    /// Red-black, then destroy every older server group.
    Highlander {},
    /// Replace the instances of the serving group in place, in batches.
    RollingUpdate {
        /// Instances out of service at once.
        #[serde(default)]
        max_unavailable: MaxUnavailable,
    },
    /// Shift traffic by weight in steps with pauses, then promote fully.
    Canary {
        /// The weighted steps.
        steps: Vec<CanaryStep>,
        /// Older disabled server groups kept for fast rollback.
        #[serde(default = "one")]
        keep_disabled: u32,
        /// Destroy a disabled server group once it has been disabled this long (the time is
        /// recorded in the store); `keepDisabled` still caps how many are kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destroy_disabled_after: Option<Duration>,
        /// Judge the new group against the one it replaces during each pause.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        analysis: Option<Box<Analysis>>,
    },
    /// Apply directly: create the new group enabled, then remove the old.
    None {},
}

impl Default for Strategy {
    fn default() -> Self {
        Self::RedBlack {
            keep_disabled: 1,
            destroy_disabled_after: None,
        }
    }
}

/// The strategy's type without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// See [`Strategy::RedBlack`].
    RedBlack,
    /// See [`Strategy::RollingRedBlack`].
    RollingRedBlack,
    /// See [`Strategy::Highlander`].
    Highlander,
    /// See [`Strategy::RollingUpdate`].
    RollingUpdate,
    /// See [`Strategy::Canary`].
    Canary,
    /// See [`Strategy::None`].
    None,
}

impl Strategy {
    /// The type of this strategy.
    pub fn kind(&self) -> StrategyKind {
        match self {
            Self::RedBlack { .. } => StrategyKind::RedBlack,
            Self::RollingRedBlack { .. } => StrategyKind::RollingRedBlack,
            Self::Highlander {} => StrategyKind::Highlander,
            Self::RollingUpdate { .. } => StrategyKind::RollingUpdate,
            Self::Canary { .. } => StrategyKind::Canary,
            Self::None {} => StrategyKind::None,
        }
    }

    /// The canary analysis, if the strategy has one.
    pub fn analysis(&self) -> Option<&Analysis> {
        match self {
            Self::Canary { analysis, .. } | Self::RollingRedBlack { analysis, .. } => {
                analysis.as_deref()
            }
            _ => None,
        }
    }

    /// How long a disabled server group is kept before it is destroyed, if the strategy says.
    pub fn destroy_disabled_after(&self) -> Option<Duration> {
        match self {
            Self::RedBlack {
                destroy_disabled_after,
                ..
            }
            | Self::RollingRedBlack {
                destroy_disabled_after,
                ..
            }
            | Self::Canary {
                destroy_disabled_after,
                ..
            } => *destroy_disabled_after,
            Self::Highlander {} | Self::RollingUpdate { .. } | Self::None {} => None,
        }
    }

    /// How many older disabled server groups this strategy keeps after a rollout.
    pub fn keep_disabled(&self) -> u32 {
        match self {
            Self::RedBlack { keep_disabled, .. }
            | Self::RollingRedBlack { keep_disabled, .. }
            | Self::Canary { keep_disabled, .. } => *keep_disabled,
            Self::Highlander {} | Self::RollingUpdate { .. } | Self::None {} => 0,
        }
    }
}

impl StrategyKind {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RedBlack => "red-black",
            Self::RollingRedBlack => "rolling-red-black",
            Self::Highlander {} => "highlander",
            Self::RollingUpdate => "rolling-update",
            Self::Canary => "canary",
            Self::None {} => "none",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deserializes_each_type() {
        let s: Strategy = serde_json::from_value(
            json!({"type": "canary", "steps": [{"weight": 10, "pause": "30s"}]}),
        )
        .unwrap();
        assert_eq!(s.kind(), StrategyKind::Canary);
        assert_eq!(s.keep_disabled(), 1);
        let s: Strategy =
            serde_json::from_value(json!({"type": "rolling-update", "maxUnavailable": "50%"}))
                .unwrap();
        assert_eq!(
            s,
            Strategy::RollingUpdate {
                max_unavailable: MaxUnavailable::Percent(50)
            }
        );
        let s: Strategy = serde_json::from_value(json!({"type": "highlander"})).unwrap();
        assert_eq!(s, Strategy::Highlander {});
        assert!(
            serde_json::from_value::<Strategy>(json!({"type": "highlander", "steps": []})).is_err()
        );
    }

    #[test]
    fn batch_sizes() {
        assert_eq!(MaxUnavailable::Percent(25).batch(10), 2);
        assert_eq!(MaxUnavailable::Percent(10).batch(3), 1);
        assert_eq!(MaxUnavailable::Count(2).batch(3), 2);
    }
}
