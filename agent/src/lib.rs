//! Picket: a runtime security agent for Kubernetes nodes.
//!
//! The library holds every part of the agent so integration tests and
//! benchmarks drive the same code as the `picket` binary.

pub mod agent;
pub mod backoff;
pub mod btf;
pub mod cli;
pub mod config;
pub mod contain;
pub mod container;
pub mod delivery;
pub mod dns;
pub mod doctor;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod node;
pub mod output;
pub mod pipeline;
pub mod process;
pub mod rules;
pub mod run;
pub mod sensor;
mod unix_connector;
