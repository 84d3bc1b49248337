//! auditd as a side-by-side peer: a private auditd with rules equivalent to
//! what Picket reports, and the host's previous audit state put back
//! afterwards (also on failure: [`AuditState`] restores itself on drop).
//!
//! The daemon runs with the distribution's `auditd.conf` (so its costs are
//! the ones a user gets: ENRICHED format, incremental async flush) except
//! that it logs to the harness's temporary directory and never rotates or
//! suspends, and with the Debian default backlog (`-b 8192`).

use std::{
    path::Path,
    process::{Command, Stdio},
};

use super::{BenchError, parse};

/// Key on every benchmark rule, so records are easy to count.
pub const KEY: &str = "pkb";

/// The audit rules equivalent to Picket's default sensors: exec, connect,
/// mount, the setuid family and opens of the monitored paths.
pub fn rules(monitored_paths: &[&str]) -> String {
    let mut r = String::new();
    // 64-bit syscalls only: the workloads are 64-bit programs.
    for syscalls in [
        "execve,execveat",
        "connect",
        "mount,umount2",
        "setuid,setgid,setreuid,setregid,setresuid,setresgid,setfsuid,setfsgid,capset",
    ] {
        r.push_str(&format!(
            "-a always,exit -F arch=b64 -S {syscalls} -k {KEY}\n"
        ));
    }
    for p in monitored_paths {
        r.push_str(&format!("-w {p} -p rw -k {KEY}\n"));
    }
    r
}

/// Rewrites the distribution's `auditd.conf` to log to `log_file` and to
/// never rotate, suspend or act on disk space during a benchmark.
pub fn conf(base: &str, log_file: &Path) -> String {
    let mut out = String::new();
    let mut have_log = false;
    for line in base.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let replaced = match key {
            "log_file" => {
                have_log = true;
                Some(format!("log_file = {}", log_file.display()))
            }
            "max_log_file_action"
            | "space_left_action"
            | "admin_space_left_action"
            | "disk_full_action"
            | "disk_error_action" => Some(format!("{key} = IGNORE")),
            _ => None,
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    if !have_log {
        out.push_str(&format!("log_file = {}\n", log_file.display()));
    }
    out
}

fn auditctl(args: &[&str]) -> Result<String, BenchError> {
    let out = Command::new("auditctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::Tool {
            tool: format!("auditctl {}", args.join(" ")),
            msg: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BenchError::Tool {
            tool: format!("auditctl {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `auditctl -s` value.
pub fn status_field(name: &str) -> Result<u64, BenchError> {
    let s = auditctl(&["-s"])?;
    parse::auditctl_status_field(&s, name).ok_or_else(|| BenchError::Tool {
        tool: "auditctl -s".into(),
        msg: format!("no `{name}` in: {s}"),
    })
}

/// The audit configuration found before the benchmark touched it.
#[derive(Debug)]
pub struct AuditState {
    rules: String,
    enabled: u64,
    backlog_limit: u64,
    restored: bool,
}

impl AuditState {
    /// Saves the current rules and flags. Fails when an auditd is already
    /// running: the harness never takes over a daemon it did not start.
    pub fn save() -> Result<Self, BenchError> {
        let pid = status_field("pid")?;
        if pid != 0 {
            return Err(BenchError::Tool {
                tool: "auditd".into(),
                msg: format!(
                    "an audit daemon is already running (pid {pid}); stop it or leave auditd out of --monitors"
                ),
            });
        }
        let listed = auditctl(&["-l"])?;
        let rules = if listed.trim() == "No rules" {
            String::new()
        } else {
            listed
        };
        Ok(Self {
            rules,
            enabled: status_field("enabled")?,
            backlog_limit: status_field("backlog_limit")?,
            restored: false,
        })
    }

    /// Puts the saved rules and flags back (idempotent).
    pub fn restore(&mut self, tmp: &Path) -> Result<(), BenchError> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        auditctl(&["-D"])?;
        if !self.rules.trim().is_empty() {
            let f = tmp.join("audit-rules.saved");
            std::fs::write(&f, &self.rules).map_err(|e| BenchError::io(&f, e))?;
            auditctl(&["-R", &f.to_string_lossy()])?;
        }
        auditctl(&["-b", &self.backlog_limit.to_string()])?;
        // -e 2 (locked) cannot have been changed by us: the harness never locks.
        if self.enabled <= 1 {
            auditctl(&["-e", &self.enabled.to_string()])?;
        }
        Ok(())
    }
}

/// Loads the benchmark rules (after clearing any) with the Debian default backlog.
pub fn load_rules(tmp: &Path, monitored_paths: &[&str]) -> Result<(), BenchError> {
    let f = tmp.join("audit-bench.rules");
    let text = format!("-D\n-b 8192\n{}", rules(monitored_paths));
    std::fs::write(&f, text).map_err(|e| BenchError::io(&f, e))?;
    auditctl(&["-R", &f.to_string_lossy()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_the_picket_sensors() {
        let r = rules(&["/etc/shadow", "/etc/sudoers"]);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            "-a always,exit -F arch=b64 -S execve,execveat -k pkb"
        );
        assert_eq!(lines[1], "-a always,exit -F arch=b64 -S connect -k pkb");
        assert_eq!(
            lines[2],
            "-a always,exit -F arch=b64 -S mount,umount2 -k pkb"
        );
        assert!(lines[3].starts_with("-a always,exit -F arch=b64 -S setuid,setgid,"));
        assert_eq!(lines[4], "-w /etc/shadow -p rw -k pkb");
        assert_eq!(lines[5], "-w /etc/sudoers -p rw -k pkb");
    }

    #[test]
    fn conf_redirects_the_log_and_disables_actions() {
        let base = "local_events = yes\nlog_file = /var/log/audit/audit.log\nlog_format = ENRICHED\n\
                    max_log_file_action = ROTATE\nadmin_space_left_action = SUSPEND\n# comment\n";
        let c = conf(base, Path::new("/tmp/x/audit.log"));
        assert_eq!(
            c,
            "local_events = yes\nlog_file = /tmp/x/audit.log\nlog_format = ENRICHED\n\
             max_log_file_action = IGNORE\nadmin_space_left_action = IGNORE\n# comment\n"
        );
        let c = conf("flush = NONE\n", Path::new("/l"));
        assert_eq!(c, "flush = NONE\nlog_file = /l\n");
    }
}
