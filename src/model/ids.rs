//! Identities: cluster names, cluster ids, sequences and server group names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::{AppName, EnvName, TargetName};

/// A cluster name, Spinnaker's `app-stack-detail` (`app--detail` when there is no stack).
/// Checked on every deserialisation: it names files and objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl TryFrom<String> for ClusterName {
    type Error = crate::spec::NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<ClusterName> for String {
    fn from(n: ClusterName) -> String {
        n.0
    }
}

impl ClusterName {
    /// Builds the name from its parts.
    pub fn compose(app: &AppName, stack: Option<&str>, detail: Option<&str>) -> Self {
        let mut s = app.as_str().to_string();
        match (stack, detail) {
            (Some(st), Some(d)) => s.push_str(&format!("-{st}-{d}")),
            (Some(st), None) => s.push_str(&format!("-{st}")),
            (None, Some(d)) => s.push_str(&format!("--{d}")),
            (None, None) => {}
        }
        Self(s)
    }

    /// A name read from a provider's label or a file, checked (never parsed apart).
    pub fn parse(s: impl Into<String>) -> Result<Self, crate::spec::NameError> {
        let s = s.into();
        crate::spec::names::check_compound(&s)?;
        Ok(Self(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a cluster lives and what it is called: environment, target and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId {
    /// The environment.
    pub environment: EnvName,
    /// The target within it.
    pub target: TargetName,
    /// The cluster name.
    pub name: ClusterName,
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.environment, self.target, self.name)
    }
}

impl ClusterId {
    /// Whether a user's selector (`name`, `env/name` or `env/target/name`) picks this cluster.
    pub fn matches(&self, selector: &str) -> bool {
        let parts: Vec<&str> = selector.split('/').collect();
        match parts.as_slice() {
            [n] => self.name.as_str() == *n,
            [e, n] => self.environment.as_str() == *e && self.name.as_str() == *n,
            [e, t, n] => {
                self.environment.as_str() == *e
                    && self.target.as_str() == *t
                    && self.name.as_str() == *n
            }
            _ => false,
        }
    }
}

/// A server group's sequence number, 0..=999; it wraps after 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Sequence(u16);

/// A sequence outside 0..=999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sequence {0} is outside 0..=999")]
pub struct SequenceError(pub u32);

impl Sequence {
    /// The first sequence, `v000`.
    pub const FIRST: Self = Self(0);
    /// The largest sequence.
    pub const MAX: u16 = 999;

    /// A sequence, if within range.
    pub fn new(n: u32) -> Result<Self, SequenceError> {
        u16::try_from(n)
            .ok()
            .filter(|&v| v <= Self::MAX)
            .map(Self)
            .ok_or(SequenceError(n))
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The next sequence, wrapping after 999.
    pub fn next(self) -> Self {
        if self.0 >= Self::MAX {
            Self(0)
        } else {
            Self(self.0 + 1)
        }
    }

    /// Parses the value of a sequence label (`"7"` or `"007"`).
    pub fn parse_label(s: &str) -> Option<Self> {
        s.parse::<u32>().ok().and_then(|n| Self::new(n).ok())
    }
}

impl TryFrom<u16> for Sequence {
    type Error = SequenceError;
    fn try_from(v: u16) -> Result<Self, Self::Error> {
        Self::new(u32::from(v))
    }
}

impl From<Sequence> for u16 {
    fn from(s: Sequence) -> u16 {
        s.0
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{:03}", self.0)
    }
}

/// A server group name, `<cluster>-vNNN`; checked on every deserialisation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerGroupName(String);

impl TryFrom<String> for ServerGroupName {
    type Error = crate::spec::NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        crate::spec::names::check_compound(&s)?;
        Ok(Self(s))
    }
}

impl From<ServerGroupName> for String {
    fn from(n: ServerGroupName) -> String {
        n.0
    }
}

impl ServerGroupName {
    /// The name of sequence `seq` of `cluster`.
    pub fn new(cluster: &ClusterName, seq: Sequence) -> Self {
        Self(format!("{cluster}-{seq}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerGroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sequences() {
        let app = AppName::new("product-catalog").unwrap();
        assert_eq!(
            ClusterName::compose(&app, Some("prod"), Some("canary")).as_str(),
            "product-catalog-prod-canary"
        );
        assert_eq!(
            ClusterName::compose(&app, None, Some("canary")).as_str(),
            "product-catalog--canary"
        );
        let c = ClusterName::compose(&app, Some("prod"), None);
        assert_eq!(
            ServerGroupName::new(&c, Sequence::new(7).unwrap()).as_str(),
            "product-catalog-prod-v007"
        );
        assert_eq!(Sequence::new(999).unwrap().next(), Sequence::FIRST);
        assert!(Sequence::new(1000).is_err());
        assert_eq!(
            Sequence::parse_label("012"),
            Some(Sequence::new(12).unwrap())
        );
    }
}
