//! `picket rules lint|test|fields`: argument structs (wired into the main
//! CLI) and the library functions behind them.

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc};

use super::{compile::RuleSet, diagnostics::render, falco, fields, fixtures};

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Check rule files: syntax, fields, types, names. Exits non-zero on errors.
    Lint(LintArgs),
    /// Replay each rule's fixture events and compare the alerts with the expected ones.
    Test(TestArgs),
    /// List the fields conditions can use, with their types.
    Fields,
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Rule files or directories.
    #[arg(default_value = "rules")]
    pub paths: Vec<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Falco rules Picket cannot evaluate faithfully: `disable` them, or run
    /// them in `shadow` mode (counted, never alerted).
    #[arg(long, value_enum, default_value = "disable")]
    pub falco_unsupported: falco::Unsupported,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Rule files or directories; fixtures are read from `fixtures/` next to them.
    #[arg(default_value = "rules")]
    pub paths: Vec<PathBuf>,
    /// Fixture directories (default: `<rule dir>/fixtures`).
    #[arg(long = "fixtures", value_name = "DIR")]
    pub fixtures: Vec<PathBuf>,
    /// Only these rule ids.
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Fail when a rule has no fixtures.
    #[arg(long)]
    pub require_fixtures: bool,
    /// Write `expected.jsonl` from the actual alerts instead of comparing messages.
    #[arg(long)]
    pub update: bool,
}

/// Entry point of `picket rules`.
pub fn main(args: RulesArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let ok = match args.command {
        RulesCommand::Lint(a) => lint(&a, &mut out),
        RulesCommand::Test(a) => test(&a, &mut out),
        RulesCommand::Fields => {
            let _ = write_fields(&mut out);
            true
        }
    };
    let _ = out.flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Lints `args.paths`, printing diagnostics to `out`. Returns success.
pub fn lint(args: &LintArgs, out: &mut impl Write) -> bool {
    falco::set_unsupported_mode(args.falco_unsupported);
    match RuleSet::load(&args.paths) {
        Ok(set) => {
            let warnings = set.warnings();
            if !warnings.is_empty() {
                let _ = write!(out, "{}", render(warnings));
            }
            let enabled = set.rules().iter().filter(|r| r.enabled).count();
            let _ = writeln!(
                out,
                "{} rule(s) in {} file(s) OK ({enabled} enabled)",
                set.rules().len(),
                set.files().len()
            );
            if !set.falco_report().is_empty() {
                let _ = write!(out, "{}", falco_summary(set.falco_report()));
            }
            // What `picket run` would tell the kernel: a rule that keeps
            // every open (or change) flowing is worth knowing before it
            // meets a busy node's rate limit (docs/falco.md).
            let derived = crate::sensor::rule_filters::derive_filters(
                &set,
                &crate::sensor::rule_filters::FilterConfig::default(),
            );
            for w in &derived.warnings {
                if w.dimension != crate::sensor::rule_filters::Dimension::Kinds {
                    let _ = writeln!(out, "note: {w}");
                }
            }
            !args.deny_warnings || warnings.is_empty()
        }
        Err(diags) => {
            let _ = write!(out, "{}", render(&diags));
            false
        }
    }
}

/// `Falco rules: N rules active, M disabled` and one line per rule not
/// active, with its reasons.
pub fn falco_summary(report: &[falco::RuleReport]) -> String {
    use falco::Status;
    let count = |f: fn(&Status) -> bool| report.iter().filter(|r| f(&r.status)).count();
    let active = count(|s| matches!(s, Status::Active));
    let shadow = count(|s| matches!(s, Status::Shadow(_)));
    let disabled = report.len() - active - shadow;
    let mut out = format!("Falco rules: {active} rules active, {disabled} disabled");
    if shadow > 0 {
        out.push_str(&format!(", {shadow} in shadow mode"));
    }
    out.push('\n');
    for r in report {
        let (what, reasons): (&str, &[String]) = match &r.status {
            Status::Active => continue,
            Status::DisabledInFile => ("disabled", &[][..]),
            Status::Disabled(rs) => ("disabled", rs),
            Status::Shadow(rs) => ("shadow", rs),
        };
        out.push_str(&format!(
            "  {what}: {} ({}) {}:{}\n",
            r.name,
            r.id,
            r.file.display(),
            r.line
        ));
        if reasons.is_empty() {
            out.push_str("      enabled: false in the file\n");
        }
        for reason in reasons {
            out.push_str(&format!("      {reason}\n"));
        }
    }
    out
}

/// Runs the fixtures, printing the report to `out`. Returns success.
pub fn test(args: &TestArgs, out: &mut impl Write) -> bool {
    let set = match RuleSet::load(&args.paths) {
        Ok(s) => Arc::new(s),
        Err(diags) => {
            let _ = write!(out, "{}", render(&diags));
            return false;
        }
    };
    let dirs = if args.fixtures.is_empty() {
        fixtures::fixture_dirs(&args.paths)
    } else {
        args.fixtures.clone()
    };
    let report = fixtures::run(set, &dirs, &args.rules, args.update);
    let _ = write!(out, "{}", report.render());
    report.passed(args.require_fixtures)
}

/// `name  type  kinds` for every field.
pub fn write_fields(out: &mut impl Write) -> std::io::Result<()> {
    for f in fields::table() {
        let kinds = if f.kinds.is_empty() {
            "all".to_string()
        } else {
            f.kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(out, "{:<42} {:<17} {kinds}", f.name, f.ty.name())?;
    }
    writeln!(out, "{:<42} {:<17} all", "k8s.pod.labels.<key>", "string")?;
    writeln!(
        out,
        "{:<42} {:<17} all",
        "k8s.namespace.labels.<key>", "string"
    )
}
