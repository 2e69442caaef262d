//! Keelson: a declarative desired-state reconciler for application delivery.
//!
//! The flow: [`source`] reads files, [`load`] parses them with positions, [`validate`] checks
//! them, [`compile`] turns them into a [`model::DesiredState`]. The core never does I/O.

#![warn(missing_docs)]

pub mod actuation;
pub mod analysis;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod controls;
pub mod credentials;
pub mod daemon;
pub mod dashboard;
pub mod demo;
pub mod diag;
pub mod engine;
pub mod forge;
pub mod http_client;
pub mod identity;
pub mod load;
pub mod model;
pub mod notify;
pub mod observe;
pub mod par;
pub mod pipeline;
pub mod plan;
pub mod pr;
pub mod private;
pub mod provider;
pub mod render;
pub mod report;
pub mod review;
pub mod server;
pub mod source;
pub mod spec;
pub mod store;
pub mod suggest;
pub mod validate;
pub mod verify;
