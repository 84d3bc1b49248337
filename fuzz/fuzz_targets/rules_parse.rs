//! Fuzzes the rule compiler (YAML reader, condition lexer/parser, type
//! checker, template compiler) and, when the input compiles, the evaluator
//! on events of every kind. Any panic, overflow or hang is a bug: rule files
//! come from ConfigMaps that an attacker with namespace rights may edit.
//!
//! `cargo +nightly fuzz run rules_parse -- -max_total_time=60`

#![no_main]

use std::{path::PathBuf, sync::Arc};

use libfuzzer_sys::fuzz_target;
use picket::{
    model::*,
    rules::{Engine, EngineOptions, RuleSet, RulesMetrics},
};

fn events() -> Vec<Event> {
    let t = jiff::Timestamp::from_second(1_800_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    EventKindName::ALL
        .iter()
        .map(|k| {
            let mut ev = Event::new(*k, t);
            ev.process.executable = Executable {
                path: "/bin/sh".into(),
                name: "sh".into(),
                ..Default::default()
            };
            ev.process.command_args = vec!["sh".into(), "-c".into(), "id".into()];
            ev.container = Some(Container {
                id: "c".into(),
                ..Default::default()
            });
            ev.network = Some(Network {
                transport: "tcp".into(),
                r#type: "ipv4".into(),
                peer: Some(Endpoint {
                    address: "10.0.0.1".into(),
                    port: 443,
                }),
                local: None,
            });
            ev.file = Some(FileAccess {
                path: "/etc/shadow".into(),
                ..Default::default()
            });
            ev
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    // The condition language on its own (no YAML around it).
    let _ = picket::rules::expr::parse(&text);
    // A whole rule file.
    if let Ok(set) = RuleSet::from_sources(vec![(PathBuf::from("fuzz.yaml"), text)]) {
        let opts = EngineOptions {
            metrics: RulesMetrics::unregistered(),
            ..Default::default()
        };
        let engine = Engine::with_shared(Arc::new(set), opts);
        for ev in events() {
            let _ = engine.evaluate(&ev);
        }
    }
});
