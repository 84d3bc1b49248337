//! Printing events and alerts: JSON lines for machines, one readable line
//! per record for people (the default when stdout is a terminal).

use std::io::{self, Write};

use crate::model::{Alert, Event, EventKindName};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON when stdout is not a terminal, readable otherwise.
    Auto,
    Json,
    Text,
}

impl Format {
    /// Resolves `Auto` against the actual stdout.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto => {
                if io::IsTerminal::is_terminal(&io::stdout()) {
                    Self::Text
                } else {
                    Self::Json
                }
            }
            f => f,
        }
    }
}

/// Writes records to a sink in one format.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    /// Reused for every record: an event is ~3 KB of JSON, and growing a
    /// fresh `Vec` to that size per event showed in the profile.
    line: Vec<u8>,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format: format.resolve(),
            line: Vec::with_capacity(4096),
        }
    }

    /// Each record is formatted first and written with one `write_all`, so
    /// another writer of the same stdout (the spool's JSON-lines sink) never
    /// splits a line.
    pub fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Json | Format::Auto => serde_json::to_writer(&mut self.line, ev)?,
            Format::Text => self.line.extend_from_slice(event_line(ev).as_bytes()),
        }
        self.line.push(b'\n');
        let r = self.out.write_all(&self.line);
        // Do not keep a buffer grown by one huge record (a long command line).
        if self.line.capacity() > 1 << 20 {
            self.line = Vec::with_capacity(4096);
        }
        r
    }

    pub fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        let mut line = match self.format {
            // Alerts are wrapped so a stream mixing events and alerts stays
            // unambiguous: `{"alert": {...}}` vs a bare event.
            Format::Json | Format::Auto => {
                serde_json::to_vec(&serde_json::json!({ "alert": alert }))?
            }
            Format::Text => alert_line(alert).into_bytes(),
        };
        line.push(b'\n');
        self.out.write_all(&line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Where the process runs: `host`, `ctr:<id12>` or `pod:<ns>/<name>`.
fn place(ev: &Event) -> String {
    if let Some(k) = &ev.k8s {
        let ns = k.namespace.as_ref().map(|n| n.name.as_str()).unwrap_or("?");
        if !k.pod.name.is_empty() {
            return format!("pod:{ns}/{}", k.pod.name);
        }
        return format!("pod-uid:{}", k.pod.uid);
    }
    match &ev.container {
        Some(c) => format!("ctr:{}", short_id(&c.id)),
        None => "host".into(),
    }
}

/// One readable line for an event.
pub fn event_line(ev: &Event) -> String {
    let p = &ev.process;
    let head = format!(
        "{} {:<8} {} pid={} ppid={} uid={}",
        ev.time.strftime("%H:%M:%S%.3f"),
        ev.event.kind.as_str(),
        place(ev),
        p.pid,
        p.parent_pid,
        p.user.id
    );
    let detail = match ev.event.kind {
        EventKindName::Exec => format!(
            "{} [{}] cwd={}",
            p.executable.path, p.command_line, p.working_directory
        ),
        EventKindName::Fork => format!(
            "{} -> child pid={}",
            p.executable.path,
            ev.child.as_ref().map(|c| c.pid).unwrap_or(0)
        ),
        EventKindName::Exit => match p.exit {
            Some(x) if x.signal != 0 => {
                format!("{} killed by signal {}", p.executable.path, x.signal)
            }
            Some(x) => format!("{} exited with {}", p.executable.path, x.code),
            None => p.executable.path.clone(),
        },
        EventKindName::EventsLost => match &ev.lost {
            Some(l) => format!("LOST {} {} events ({})", l.count, l.kind, l.reason),
            None => String::new(),
        },
        _ => serde_json::to_string(ev).unwrap_or_default(),
    };
    format!("{head} {detail}")
}

/// One readable line for an alert.
pub fn alert_line(a: &Alert) -> String {
    format!(
        "{} ALERT {:<8} {} {} ({} pid={} {})",
        a.time.strftime("%H:%M:%S%.3f"),
        a.severity.as_str().to_uppercase(),
        a.rule.id,
        a.message,
        place(&a.event),
        a.event.process.pid,
        a.event.process.executable.path,
    )
}
