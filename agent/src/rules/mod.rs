//! Detection rules: the language, the compiler, the engine, hot reload, the
//! learned egress baseline and the `picket rules` tooling.
//!
//! ```no_run
//! use picket::rules::{Engine, RuleSet};
//! let set = RuleSet::load(&["rules"]).map_err(|d| picket::rules::diagnostics::render(&d))?;
//! let engine = Engine::new(set);
//! # let event: picket::model::Event = unimplemented!();
//! for alert in engine.evaluate(&event) {
//!     println!("{} {}", alert.rule.id, alert.message);
//! }
//! # Ok::<(), String>(())
//! ```
//!
//! The language reference and the guide to writing, testing and tuning
//! rules is `docs/rules.md`.

pub mod baseline;
pub mod cli;
pub mod compile;
pub mod control;
pub mod correlate;
pub mod diagnostics;
pub mod engine;
pub mod expr;
pub mod falco;
pub mod fields;
pub mod fixtures;
pub mod metrics;
pub mod parse;
pub mod reload;
pub mod source;
pub mod template;
pub mod yaml;

pub use baseline::{Anomaly, Baseline, BaselineError};
pub use compile::{Rule, RuleSet};
pub use diagnostics::{Diagnostic, Level};
pub use engine::{Engine, EngineOptions, Evaluation, Suppression};
pub use metrics::RulesMetrics;
pub use parse::{Action, Mode};

pub use reload::{ReloadError, ReloadHandle, RuleWatcher};

#[cfg(test)]
mod tests;
