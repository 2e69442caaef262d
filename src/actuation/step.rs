//! A step of a plan or a rollback: an operation a provider runs, or a gate the engine waits on.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Gate, Op, SpecRef};

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step<S = SpecRef> {
    /// A provider does something.
    Op(Op<S>),
    /// The engine waits for something.
    Gate(Gate),
}

impl<S> Step<S> {
    /// The operation, if it is one.
    pub fn op(&self) -> Option<&Op<S>> {
        match self {
            Self::Op(op) => Some(op),
            Self::Gate(_) => None,
        }
    }

    /// The gate, if it is one.
    pub fn gate(&self) -> Option<&Gate> {
        match self {
            Self::Gate(g) => Some(g),
            Self::Op(_) => None,
        }
    }

    /// What must hold before it runs.
    pub fn guard(&self) -> String {
        match self {
            Self::Op(op) => op.guard(),
            Self::Gate(_) => "cluster still serves from a healthy enabled group".into(),
        }
    }
}

impl<S> From<Op<S>> for Step<S> {
    fn from(op: Op<S>) -> Self {
        Self::Op(op)
    }
}

impl<S> From<Gate> for Step<S> {
    fn from(g: Gate) -> Self {
        Self::Gate(g)
    }
}

impl<S: fmt::Display> fmt::Display for Step<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Op(op) => op.fmt(f),
            Self::Gate(g) => g.fmt(f),
        }
    }
}
