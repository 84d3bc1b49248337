//! Where a piece of rule text came from, to turn offsets into diagnostics.

use std::{path::PathBuf, sync::Arc};

use super::{
    diagnostics::Diagnostic,
    yaml::{self, Node, Pos},
};

/// A loaded rule file.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// A condition string inside a rule file (the YAML scalar holding it).
#[derive(Debug)]
pub struct ExprSource {
    pub file: Arc<SourceFile>,
    pub node: Node,
}

/// A location: inside a condition (byte offset) or at a YAML node.
#[derive(Clone, Debug)]
pub enum Loc {
    Expr(Arc<ExprSource>, usize),
    Yaml(Arc<SourceFile>, Pos),
}

impl Loc {
    pub fn pos(&self) -> Pos {
        match self {
            Self::Expr(src, offset) => yaml::locate_in_scalar(&src.file.text, &src.node, *offset),
            Self::Yaml(_, pos) => *pos,
        }
    }

    fn file(&self) -> &Arc<SourceFile> {
        match self {
            Self::Expr(src, _) => &src.file,
            Self::Yaml(f, _) => f,
        }
    }

    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        let pos = self.pos();
        let file = self.file();
        let mut d = Diagnostic::error(file.path.clone(), pos, message);
        d.source_line = yaml::source_line(&file.text, pos.line);
        d
    }

    pub fn warning(&self, message: impl Into<String>) -> Diagnostic {
        let mut d = self.error(message);
        d.level = super::diagnostics::Level::Warning;
        d
    }
}
