//! Lint diagnostics: what is wrong, where (file, line, column), in which rule
//! and key, and a hint how to fix it.

use std::{fmt, path::PathBuf};

use super::yaml::Pos;

/// Errors make a rule set unloadable; warnings are printed by `picket rules
/// lint` but do not fail it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warning,
    Error,
}

/// One finding of the rule compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub file: PathBuf,
    /// 1-based; 0 when the finding is about the file as a whole.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The rule (or list/macro) the finding is about, when known.
    pub rule: Option<String>,
    /// The YAML key path inside the rule, e.g. `condition` or `exceptions[1].values`.
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// The offending source line, for a caret display.
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub fn error(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            file: file.into(),
            line: pos.line,
            column: pos.column,
            rule: None,
            field: None,
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    pub fn warning(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            ..Self::error(file, pos, message)
        }
    }

    pub fn rule(mut self, rule: Option<&str>) -> Self {
        self.rule = rule.map(str::to_string);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `rules/a.yaml:12:27: error[rule reverse-shell, condition]: unknown field ...`
    /// followed by the source line with a caret and the hint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {level}",
            self.file.display(),
            self.line,
            self.column
        )?;
        match (&self.rule, &self.field) {
            (Some(r), Some(k)) => write!(f, " [rule {r}, {k}]")?,
            (Some(r), None) => write!(f, " [rule {r}]")?,
            (None, Some(k)) => write!(f, " [{k}]")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)?;
        if let Some(line) = &self.source_line
            && self.column > 0
        {
            let pad: String = line
                .chars()
                .take(self.column - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n    {line}\n    {pad}^")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// "did you mean `x`?" for a misspelled name, from the closest candidate.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > best.map_or(0.0, |b| b.0) {
            best = Some((score, c));
        }
    }
    match best {
        Some((score, c)) if score >= 0.8 => Some(format!("did you mean `{c}`?")),
        _ => None,
    }
}

/// Renders diagnostics one after another, errors and warnings counted at the end.
pub fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    out.push_str(&format!(
        "{errors} error(s), {} warning(s)\n",
        diags.len() - errors
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_caret_and_hint() {
        let mut d = Diagnostic::error(
            "r.yaml",
            Pos {
                line: 3,
                column: 14,
            },
            "unknown field `proces.pid`",
        )
        .rule(Some("x"))
        .field("condition")
        .hint(did_you_mean("proces.pid", ["process.pid", "thread.id"]));
        d.source_line = Some("  condition: proces.pid == 1".into());
        let want = concat!(
            "r.yaml:3:14: error [rule x, condition]: unknown field `proces.pid`\n",
            "      condition: proces.pid == 1\n",
            "                 ^\n",
            "  hint: did you mean `process.pid`?"
        );
        assert_eq!(d.to_string(), want);
    }

    #[test]
    fn no_suggestion_for_unrelated_names() {
        assert_eq!(did_you_mean("zzz", ["process.pid"]), None);
    }
}
