//! The parsed (not yet type-checked) condition.
//!
//! Grammar (lowest precedence first):
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | primary
//! primary := "(" expr ")" | "true" | "false"
//!          | FIELD "exists"
//!          | FIELD ["not"] OP operand
//!          | NAME                  (a macro, or a boolean field)
//! OP      := == != < <= > >= in startswith endswith contains glob matches cidr
//! operand := literal | "[" literal ("," literal)* "]" | "(" ... ")" | LIST-NAME
//! ```

use super::{
    SyntaxError,
    lex::{Tok, Token},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    StartsWith,
    EndsWith,
    Contains,
    Glob,
    Matches,
    Cidr,
}

impl Op {
    pub const WORDS: &'static [&'static str] = &[
        "in",
        "startswith",
        "endswith",
        "contains",
        "glob",
        "matches",
        "cidr",
        "exists",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::In => "in",
            Self::StartsWith => "startswith",
            Self::EndsWith => "endswith",
            Self::Contains => "contains",
            Self::Glob => "glob",
            Self::Matches => "matches",
            Self::Cidr => "cidr",
        }
    }

    /// Parses an operator as written in conditions and in structured exceptions.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "==" => Self::Eq,
            "!=" => Self::Ne,
            "<" => Self::Lt,
            "<=" => Self::Le,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "in" => Self::In,
            "startswith" => Self::StartsWith,
            "endswith" => Self::EndsWith,
            "contains" => Self::Contains,
            "glob" => Self::Glob,
            "matches" => Self::Matches,
            "cidr" => Self::Cidr,
            _ => return None,
        })
    }
}

/// A byte range in the condition text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Lit {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Str(_) => "string",
            Self::Int(_) => "integer",
            Self::Bool(_) => "boolean",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    One(Lit, Span),
    List(Vec<(Lit, Span)>, Span),
    /// A reference to a named list.
    Named(String, Span),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(bool),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// A bare name: a macro or a boolean field.
    Name(String, Span),
    Exists {
        field: String,
        span: Span,
    },
    Cmp {
        field: String,
        field_span: Span,
        op: Op,
        op_span: Span,
        negated: bool,
        operand: Operand,
    },
}

pub fn parse(tokens: &[Token], src_len: usize) -> Result<Expr, SyntaxError> {
    let mut p = P {
        toks: tokens,
        i: 0,
        src_len,
        depth: 0,
    };
    if tokens.is_empty() {
        return Err(SyntaxError::new(0, 0, "empty condition")
            .hint("write a condition such as `container.id exists`"));
    }
    let e = p.expr()?;
    if let Some(t) = p.peek() {
        return Err(SyntaxError::new(
            t.start,
            t.end - t.start,
            format!("unexpected {}", describe(&t.tok)),
        )
        .hint("join conditions with `and` / `or`".to_string()));
    }
    Ok(e)
}

/// Nesting limit: keeps hostile input from overflowing the stack.
const MAX_DEPTH: usize = 64;

struct P<'a> {
    toks: &'a [Token],
    i: usize,
    src_len: usize,
    depth: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Int(i) => format!("number {i}"),
        Tok::Cmp(c) => format!("`{c}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
    }
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s == kw)
}

const KEYWORDS: &[&str] = &["and", "or", "not", "true", "false"];

impl<'a> P<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.i)
    }

    fn eof_err(&self, what: &str) -> SyntaxError {
        SyntaxError::new(
            self.src_len,
            0,
            format!("unexpected end of condition; expected {what}"),
        )
    }

    fn next(&mut self, what: &str) -> Result<&'a Token, SyntaxError> {
        let t = self.toks.get(self.i).ok_or_else(|| self.eof_err(what))?;
        self.i += 1;
        Ok(t)
    }

    fn expr(&mut self) -> Result<Expr, SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let at = self.peek().map_or(self.src_len, |t| t.start);
            return Err(SyntaxError::new(at, 0, "condition nested too deeply"));
        }
        let mut items = vec![self.and()?];
        while self.peek().is_some_and(|t| is_kw(&t.tok, "or")) {
            self.i += 1;
            items.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Const(false))
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut items = vec![self.unary()?];
        while self.peek().is_some_and(|t| is_kw(&t.tok, "and")) {
            self.i += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Const(false))
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        let mut nots = 0usize;
        while self.peek().is_some_and(|t| is_kw(&t.tok, "not")) {
            self.i += 1;
            nots += 1;
            if nots > MAX_DEPTH {
                return Err(SyntaxError::new(
                    self.toks[self.i - 1].start,
                    3,
                    "too many `not`",
                ));
            }
        }
        let mut e = self.primary()?;
        for _ in 0..nots {
            e = Expr::Not(Box::new(e));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        let t = self.next("a condition")?;
        match &t.tok {
            Tok::LParen => {
                let e = self.expr()?;
                let close = self.next("`)`")?;
                if close.tok != Tok::RParen {
                    return Err(SyntaxError::new(
                        close.start,
                        close.end - close.start,
                        format!("expected `)`, found {}", describe(&close.tok)),
                    ));
                }
                Ok(e)
            }
            Tok::Ident(s) if s == "true" => Ok(Expr::Const(true)),
            Tok::Ident(s) if s == "false" => Ok(Expr::Const(false)),
            Tok::Ident(s) if KEYWORDS.contains(&s.as_str()) || Op::WORDS.contains(&s.as_str()) => {
                Err(SyntaxError::new(
                    t.start,
                    t.end - t.start,
                    format!("expected a field or macro name, found keyword `{s}`"),
                ))
            }
            Tok::Ident(name) => {
                let span = Span {
                    start: t.start,
                    end: t.end,
                };
                self.after_name(name, span)
            }
            other => Err(SyntaxError::new(
                t.start,
                t.end - t.start,
                format!("expected a field or macro name, found {}", describe(other)),
            )
            .hint(
                "a condition compares a field, e.g. `process.executable.name == \"bash\"`"
                    .to_string(),
            )),
        }
    }

    fn after_name(&mut self, name: &str, span: Span) -> Result<Expr, SyntaxError> {
        let Some(t) = self.peek() else {
            return Ok(Expr::Name(name.into(), span));
        };
        let mut negated = false;
        let mut op_tok = t;
        if is_kw(&t.tok, "not") {
            // `field not in [...]`, `field not contains "x"`, ...
            let next = self
                .toks
                .get(self.i + 1)
                .ok_or_else(|| self.eof_err("an operator after `not`"))?;
            if !matches!(&next.tok, Tok::Ident(w) if Op::parse(w).is_some()) {
                return Err(SyntaxError::new(
                    next.start,
                    next.end - next.start,
                    format!(
                        "expected an operator after `not`, found {}",
                        describe(&next.tok)
                    ),
                )
                .hint("write `not field == value` or `field not in [...]`".to_string()));
            }
            negated = true;
            self.i += 1;
            op_tok = next;
        }
        let op = match &op_tok.tok {
            Tok::Cmp(c) => Op::parse(c),
            Tok::Ident(w) if w == "exists" && !negated => {
                self.i += 1;
                return Ok(Expr::Exists {
                    field: name.into(),
                    span,
                });
            }
            Tok::Ident(w) => Op::parse(w),
            _ => None,
        };
        let Some(op) = op else {
            if negated {
                return Err(SyntaxError::new(
                    op_tok.start,
                    op_tok.end - op_tok.start,
                    "`exists` cannot be negated this way",
                )
                .hint(format!("write `not {name} exists`")));
            }
            // A bare name followed by `and`, `or`, `)`: a macro or boolean field.
            return Ok(Expr::Name(name.into(), span));
        };
        self.i += 1;
        let op_span = Span {
            start: op_tok.start,
            end: op_tok.end,
        };
        let operand = self.operand(op)?;
        Ok(Expr::Cmp {
            field: name.into(),
            field_span: span,
            op,
            op_span,
            negated,
            operand,
        })
    }

    fn lit(&mut self, t: &Token) -> Result<(Lit, Span), SyntaxError> {
        let span = Span {
            start: t.start,
            end: t.end,
        };
        match &t.tok {
            Tok::Str(s) => Ok((Lit::Str(s.clone()), span)),
            Tok::Int(i) => Ok((Lit::Int(*i), span)),
            Tok::Ident(s) if s == "true" => Ok((Lit::Bool(true), span)),
            Tok::Ident(s) if s == "false" => Ok((Lit::Bool(false), span)),
            Tok::Ident(s) => Err(SyntaxError::new(
                t.start,
                t.end - t.start,
                format!("expected a value, found `{s}`"),
            )
            .hint(format!("quote strings: \"{s}\""))),
            other => Err(SyntaxError::new(
                t.start,
                t.end - t.start,
                format!("expected a value, found {}", describe(other)),
            )),
        }
    }

    fn operand(&mut self, op: Op) -> Result<Operand, SyntaxError> {
        let t = self.next(&format!("a value after `{}`", op.name()))?;
        match &t.tok {
            Tok::LBracket | Tok::LParen => {
                let close = if t.tok == Tok::LBracket {
                    Tok::RBracket
                } else {
                    Tok::RParen
                };
                let mut items = Vec::new();
                loop {
                    let v = self.next("a value or the end of the list")?;
                    if v.tok == close && items.is_empty() {
                        return Err(SyntaxError::new(t.start, v.end - t.start, "empty list"));
                    }
                    items.push(self.lit(v)?);
                    let sep = self.next("`,` or the end of the list")?;
                    if sep.tok == close {
                        return Ok(Operand::List(
                            items,
                            Span {
                                start: t.start,
                                end: sep.end,
                            },
                        ));
                    }
                    if sep.tok != Tok::Comma {
                        return Err(SyntaxError::new(
                            sep.start,
                            sep.end - sep.start,
                            format!(
                                "expected `,` or the end of the list, found {}",
                                describe(&sep.tok)
                            ),
                        ));
                    }
                }
            }
            Tok::Ident(s) if s != "true" && s != "false" => Ok(Operand::Named(
                s.clone(),
                Span {
                    start: t.start,
                    end: t.end,
                },
            )),
            _ => {
                let (l, s) = self.lit(t)?;
                Ok(Operand::One(l, s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::lex::lex, *};

    fn p(s: &str) -> Result<Expr, SyntaxError> {
        parse(&lex(s)?, s.len())
    }

    #[test]
    fn precedence_and_negation() {
        let e = p("a exists or b and not c").expect("parse");
        let Expr::Or(items) = e else { panic!("{e:?}") };
        assert!(matches!(&items[0], Expr::Exists { field, .. } if field == "a"));
        let Expr::And(and) = &items[1] else { panic!() };
        assert!(
            matches!(&and[1], Expr::Not(inner) if matches!(**inner, Expr::Name(ref n, _) if n == "c"))
        );
    }

    #[test]
    fn comparisons_and_lists() {
        let e = p("x not in [1, 2]").expect("parse");
        let Expr::Cmp {
            op,
            negated,
            operand,
            ..
        } = e
        else {
            panic!()
        };
        assert_eq!(op, Op::In);
        assert!(negated);
        assert!(matches!(operand, Operand::List(ref v, _) if v.len() == 2));
        let e = p("x in shells").expect("parse");
        assert!(matches!(e, Expr::Cmp { operand: Operand::Named(ref n, _), .. } if n == "shells"));
    }

    #[test]
    fn syntax_errors() {
        let e = p("x == ").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (
                5,
                "unexpected end of condition; expected a value after `==`"
            )
        );
        let e = p("x == ,").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (5, "expected a value, found `,`")
        );
        let e = p("(x exists").unwrap_err();
        assert_eq!(e.message, "unexpected end of condition; expected `)`");
        let e = p("x exists y exists").unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (9, "unexpected `y`"));
        let e = p("x in []").unwrap_err();
        assert_eq!(e.message, "empty list");
        let deep = "(".repeat(200) + "x exists" + &")".repeat(200);
        assert_eq!(p(&deep).unwrap_err().message, "condition nested too deeply");
    }
}
