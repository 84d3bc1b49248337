//! The condition language: lexer, parser, type-checking compiler and the
//! compiled predicate tree that the engine evaluates.
//!
//! Why not CEL: a purpose-built language lets the compiler resolve every
//! field name to a typed accessor up front (so unknown fields and type errors
//! are lint errors with a line and column, and evaluation never touches a map
//! or JSON), gives `any`-element semantics for list fields without
//! comprehension syntax, and adds security-specific operators (globs, CIDR)
//! that CEL lacks. See docs/rules.md.

pub mod ast;
pub mod compile;
pub mod eval;
pub mod lex;

pub use ast::{Expr, Op};
pub use eval::{Cond, Pred, Test};

/// A syntax error at a byte range of the condition text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl SyntaxError {
    pub fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            len,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Lexes and parses a condition.
pub fn parse(text: &str) -> Result<Expr, SyntaxError> {
    let tokens = lex::lex(text)?;
    ast::parse(&tokens, text.len())
}
