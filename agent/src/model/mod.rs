//! Picket's event and alert schema: the one source of truth.
//!
//! Field names follow the OpenTelemetry semantic conventions as nested JSON
//! (`process.executable.path`, `container.id`, `k8s.pod.uid`, ...). The JSON
//! printed by `picket run --events`, rule conditions, fixtures, the gRPC API
//! and OTLP attributes all derive from these types; `docs/schema.md`
//! documents them. Types deserialize with `deny_unknown_fields` so a typo in a
//! fixture is an error, not a silently ignored field.

mod alert;
mod event;
mod sections;

pub use alert::{Alert, RuleRef, Severity};
pub use event::{Event, EventKindName, EventMeta, Host};
pub use sections::*;
