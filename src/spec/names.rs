//! Names as types: an application name is not an environment name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name is not a DNS-1123 label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a name must not be empty")]
    Empty,
    /// The name is longer than 63 characters.
    #[error("`{0}` is longer than 63 characters")]
    TooLong(String),
    /// The name has characters other than lower-case letters, digits and dashes, or starts or
    /// ends with a dash.
    #[error(
        "`{0}` is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
    )]
    Invalid(String),
}

/// Checks that `s` is a cluster or server group name: DNS-1123 label characters, starting and
/// ending with a letter or digit, at most 253 characters (`app-stack-detail`, `app--detail`).
pub fn check_compound(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 253 {
        return Err(NameError::TooLong(s.to_string()));
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    if b.iter().all(|&c| ok_char(c) || c == b'-') && ok_char(b[0]) && ok_char(b[b.len() - 1]) {
        Ok(())
    } else {
        Err(NameError::Invalid(s.to_string()))
    }
}

/// Checks that `s` is a DNS-1123 label.
pub fn check_label(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 63 {
        return Err(NameError::TooLong(s.to_string()));
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    let valid =
        b.iter().all(|&c| ok_char(c) || c == b'-') && ok_char(b[0]) && ok_char(b[b.len() - 1]);
    if valid {
        Ok(())
    } else {
        Err(NameError::Invalid(s.to_string()))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // Checked on every deserialisation too: names come from files and sockets, and end
        // up in paths and labels.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl $name {
            /// Makes a name, checking that it is a DNS-1123 label.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_label(&s)?;
                Ok(Self(s))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// An application name, e.g. `product-catalog`.
    AppName
);
name_type!(
    /// An environment name, e.g. `prod`.
    EnvName
);
name_type!(
    /// A target name within an environment, e.g. `local` or `k8s-prod`.
    TargetName
);
name_type!(
    /// Any other DNS-1123 name.
    Name
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_label("product-catalog").is_ok());
        assert!(check_label("a").is_ok());
        assert!(matches!(check_label("Hello"), Err(NameError::Invalid(_))));
        assert!(matches!(check_label("-a"), Err(NameError::Invalid(_))));
        assert!(matches!(check_label("a-"), Err(NameError::Invalid(_))));
        assert!(matches!(check_label(""), Err(NameError::Empty)));
        assert!(matches!(
            check_label(&"a".repeat(64)),
            Err(NameError::TooLong(_))
        ));
    }
}
