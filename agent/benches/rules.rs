//! ns/event of the default rule set on a realistic event mix: mostly benign
//! exec, file_open and connect events from containers and the host, with
//! about 2% of events matching a rule.
//!
//! `cargo bench -p picket --bench rules` (criterion reports the time per
//! evaluated event).

use std::{hint::black_box, path::PathBuf, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use picket::{
    model::*,
    rules::{Engine, EngineOptions, RuleSet, RulesMetrics},
};

fn base(kind: EventKindName, i: u32, in_container: bool) -> Event {
    let mut ev = Event::new(
        kind,
        Timestamp::from_second(1_800_000_000 + i64::from(i / 50)).expect("ts"),
    );
    let names = [
        "python3", "node", "java", "nginx", "postgres", "sh", "ls", "cat", "curl", "app",
    ];
    let name = names[(i as usize) % names.len()];
    ev.process.executable = Executable {
        path: format!("/usr/bin/{name}"),
        name: name.to_string(),
        ..Default::default()
    };
    ev.process.command_args = vec![
        name.to_string(),
        "--config".into(),
        "/etc/app/config.yaml".into(),
    ];
    ev.process.command_line = ev.process.command_args.join(" ");
    ev.process.pid = 1000 + i;
    ev.process.vpid = 10 + (i % 50);
    ev.process.parent_vpid = 1;
    ev.process.user.id = 1000;
    ev.process.real_user.id = 1000;
    ev.process.stdio = Stdio {
        stdin: FdType::Pipe,
        stdout: FdType::Pipe,
        stderr: FdType::Pipe,
        ..Default::default()
    };
    ev.process.ancestors = vec![std::sync::Arc::new(Ancestor {
        exec_id: "a".into(),
        pid: 1,
        executable: Executable {
            path: "/usr/bin/tini".into(),
            name: "tini".into(),
            ..Default::default()
        },
        command_line: "tini".into(),
    })];
    if in_container {
        ev.process.in_init_tree = Some(true);
        ev.container = Some(Container {
            id: format!("{:064x}", i % 20),
            runtime: "containerd".into(),
            name: "app".into(),
            image: Some(Image {
                name: "registry.example/app:1".into(),
            }),
            privileged: None,
        });
        ev.k8s = Some(K8s {
            pod: Pod {
                name: format!("app-{}", i % 20),
                uid: format!("uid-{}", i % 20),
                ..Default::default()
            },
            namespace: Some(K8sNamespace {
                name: "shop".into(),
                ..Default::default()
            }),
            deployment: Some(Named {
                name: format!("app-{}", i % 5),
            }),
            ..Default::default()
        });
    }
    ev
}

fn mix() -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let in_container = i % 4 != 0;
        let ev = match i % 10 {
            0..=3 => base(EventKindName::Exec, i, in_container),
            4..=6 => {
                let mut ev = base(EventKindName::FileOpen, i, in_container);
                let paths = [
                    "/etc/app/config.yaml",
                    "/etc/passwd",
                    "/var/lib/app/data.db",
                    "/etc/hosts",
                ];
                ev.file = Some(FileAccess {
                    path: paths[(i as usize) % paths.len()].into(),
                    ..Default::default()
                });
                ev
            }
            _ => {
                let mut ev = base(EventKindName::Connect, i, in_container);
                ev.network = Some(Network {
                    transport: "tcp".into(),
                    r#type: "ipv4".into(),
                    peer: Some(Endpoint {
                        address: format!("10.0.{}.{}", i % 3, i % 200),
                        port: [443, 5432, 6379][(i as usize) % 3],
                    }),
                    local: None,
                });
                ev
            }
        };
        out.push(ev);
    }
    // ~2% matching: shells with socket stdio, /tmp execs, shadow reads, IMDS.
    for i in (0..1000).step_by(50) {
        let ev = &mut out[i];
        match (i / 50) % 4 {
            0 => {
                ev.event.kind = EventKindName::Exec;
                ev.process.executable = Executable {
                    path: "/bin/sh".into(),
                    name: "sh".into(),
                    ..Default::default()
                };
                ev.process.stdio.stdin = FdType::Socket;
            }
            1 => {
                ev.event.kind = EventKindName::Exec;
                ev.process.executable = Executable {
                    path: "/tmp/x".into(),
                    name: "x".into(),
                    ..Default::default()
                };
            }
            2 => {
                ev.event.kind = EventKindName::FileOpen;
                ev.file = Some(FileAccess {
                    path: "/etc/shadow".into(),
                    ..Default::default()
                });
            }
            _ => {
                ev.event.kind = EventKindName::Connect;
                ev.network = Some(Network {
                    transport: "tcp".into(),
                    r#type: "ipv4".into(),
                    peer: Some(Endpoint {
                        address: "169.254.169.254".into(),
                        port: 80,
                    }),
                    local: None,
                });
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let set = RuleSet::load(&[dir]).expect("default rules compile");
    let engine = Engine::with_shared(
        Arc::new(set),
        EngineOptions {
            metrics: RulesMetrics::unregistered(),
            ..Default::default()
        },
    );
    let events = mix();
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(1));
    g.bench_function("default_set_per_event", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % events.len();
            black_box(engine.evaluate(black_box(&events[i])))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
