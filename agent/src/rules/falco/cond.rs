//! The Falco condition language: lexer and parser.
//!
//! Falco's grammar differs from Picket's in ways that matter for reading real
//! rule files unchanged: values may be bare words (`/etc/`, `runc:[0:PARENT]`),
//! lists are parenthesised and may name other lists, `=` is equality, fields
//! take an argument in brackets (`proc.aname[2]`, `k8s.pod.label[app]`), and
//! operands may be transformed (`tolower(proc.name)`, `val(fd.name)`). The
//! tree here is resolved (lists, macros) and mapped onto Picket's fields and
//! predicates by `translate`.

/// A parse error at a byte offset of the condition text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        offset,
        message: message.into(),
    })
}

/// A field reference, with its optional `[argument]` and transformers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRef {
    pub name: String,
    pub arg: Option<String>,
    /// Outermost first: `tolower(basename(x))` is `[tolower, basename]`.
    pub transformers: Vec<String>,
    pub offset: usize,
}

impl FieldRef {
    /// `proc.aname[2]` as written (without transformers).
    pub fn display(&self) -> String {
        match &self.arg {
            Some(a) => format!("{}[{a}]", self.name),
            None => self.name.clone(),
        }
    }
}

/// One right-hand value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A literal; `bare` when unquoted (it may then name a list).
    Lit { text: String, bare: bool },
    /// `val(field)`: compare with another field of the same event.
    Field(FieldRef),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rhs {
    One(Value),
    /// `(a, b, c)`: items may be list names, expanded later.
    List(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ast {
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Not(Box<Ast>),
    /// A bare name: a macro (Falco has no boolean fields used this way).
    Macro {
        name: String,
        offset: usize,
    },
    Exists(FieldRef),
    Cmp {
        field: FieldRef,
        op: String,
        op_offset: usize,
        rhs: Rhs,
    },
}

pub const OPS: &[&str] = &[
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "bstartswith",
    "endswith",
    "glob",
    "iglob",
    "in",
    "intersects",
    "pmatch",
    "regex",
];

pub const TRANSFORMERS: &[&str] = &["tolower", "toupper", "b64", "basename", "len", "val"];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    start: usize,
}

fn lex(s: &str) -> Result<Vec<Token>, ParseError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Token {
                    tok: Tok::LParen,
                    start: i,
                });
                i += 1;
            }
            b')' => {
                out.push(Token {
                    tok: Tok::RParen,
                    start: i,
                });
                i += 1;
            }
            b',' => {
                out.push(Token {
                    tok: Tok::Comma,
                    start: i,
                });
                i += 1;
            }
            b'"' | b'\'' => {
                let start = i;
                i += 1;
                let mut text = Vec::new();
                loop {
                    let Some(&d) = b.get(i) else {
                        return err(start, "unterminated string");
                    };
                    if d == c {
                        i += 1;
                        break;
                    }
                    if d == b'\\' {
                        match b.get(i + 1) {
                            Some(&e) => {
                                text.push(match e {
                                    b'n' => b'\n',
                                    b't' => b'\t',
                                    other => other,
                                });
                                i += 2;
                            }
                            None => return err(i, "unterminated string"),
                        }
                        continue;
                    }
                    text.push(d);
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Str(String::from_utf8_lossy(&text).into_owned()),
                    start,
                });
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => "==",
                    (b'=', false) => "=",
                    (b'!', true) => "!=",
                    (b'<', true) => "<=",
                    (b'<', false) => "<",
                    (b'>', true) => ">=",
                    (b'>', false) => ">",
                    _ => return err(i, "unexpected `!`"),
                };
                out.push(Token {
                    tok: Tok::Op(op),
                    start: i,
                });
                i += if two { 2 } else { 1 };
            }
            _ => {
                // A bare word: fields, keywords, macro and list names and
                // unquoted values. Brackets belong to the word (`proc.aname[2]`,
                // `runc:[0:PARENT]`); a `(` right after a transformer name starts
                // its argument.
                let start = i;
                let mut depth = 0usize;
                while i < b.len() {
                    let d = b[i];
                    if d == b'[' {
                        depth += 1;
                    } else if d == b']' {
                        depth = depth.saturating_sub(1);
                    } else if depth == 0
                        && (matches!(
                            d,
                            b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b',' | b'=' | b'<' | b'>'
                        ) || (d == b'!' && b.get(i + 1) == Some(&b'=')))
                    {
                        break;
                    }
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(s[start..i].to_string()),
                    start,
                });
            }
        }
    }
    Ok(out)
}

/// Nesting limit: hostile input must not overflow the stack.
const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Ast, ParseError> {
    let toks = lex(text)?;
    if toks.is_empty() {
        return err(0, "empty condition");
    }
    let mut p = P {
        toks: &toks,
        i: 0,
        len: text.len(),
        depth: 0,
    };
    let e = p.or()?;
    if let Some(t) = p.toks.get(p.i) {
        return err(t.start, format!("unexpected {}", describe(&t.tok)));
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Op(o) => format!("`{o}`"),
    }
}

struct P<'a> {
    toks: &'a [Token],
    i: usize,
    len: usize,
    depth: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn at(&self) -> usize {
        self.toks.get(self.i).map_or(self.len, |t| t.start)
    }

    fn or(&mut self) -> Result<Ast, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.at(), "condition nested too deeply");
        }
        let mut items = vec![self.and()?];
        while self.is_word("or") {
            self.i += 1;
            items.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Ast::Or(items)
        })
    }

    fn and(&mut self) -> Result<Ast, ParseError> {
        let mut items = vec![self.unary()?];
        while self.is_word("and") {
            self.i += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Ast::And(items)
        })
    }

    fn unary(&mut self) -> Result<Ast, ParseError> {
        if self.is_word("not") {
            self.i += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return err(self.at(), "condition nested too deeply");
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Ast::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn expect_rparen(&mut self) -> Result<(), ParseError> {
        match self.toks.get(self.i) {
            Some(Token {
                tok: Tok::RParen, ..
            }) => {
                self.i += 1;
                Ok(())
            }
            Some(t) => err(t.start, format!("expected `)`, found {}", describe(&t.tok))),
            None => err(self.len, "unexpected end of condition; expected `)`"),
        }
    }

    fn primary(&mut self) -> Result<Ast, ParseError> {
        let Some(t) = self.toks.get(self.i) else {
            return err(self.len, "unexpected end of condition; expected a check");
        };
        let start = t.start;
        match &t.tok {
            Tok::LParen => {
                self.i += 1;
                let e = self.or()?;
                self.expect_rparen()?;
                Ok(e)
            }
            Tok::Word(w) if matches!(w.as_str(), "and" | "or") => {
                err(start, format!("expected a check, found `{w}`"))
            }
            Tok::Word(_) => {
                let field = self.field_ref()?;
                self.after_field(field)
            }
            other => err(
                start,
                format!("expected a check, found {}", describe(other)),
            ),
        }
    }

    /// `name`, `name[arg]` or `transformer(field)`.
    fn field_ref(&mut self) -> Result<FieldRef, ParseError> {
        let Some(Token {
            tok: Tok::Word(w),
            start,
        }) = self.toks.get(self.i)
        else {
            return err(self.at(), "expected a field");
        };
        let start = *start;
        self.i += 1;
        if TRANSFORMERS.contains(&w.as_str()) && self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return err(start, "condition nested too deeply");
            }
            let mut inner = self.field_ref()?;
            self.depth -= 1;
            self.expect_rparen()?;
            inner.transformers.insert(0, w.clone());
            inner.offset = start;
            return Ok(inner);
        }
        let (name, arg) = match w.find('[') {
            Some(open) if w.ends_with(']') => (
                w[..open].to_string(),
                Some(w[open + 1..w.len() - 1].to_string()),
            ),
            Some(_) => return err(start, format!("malformed field argument in `{w}`")),
            None => (w.clone(), None),
        };
        Ok(FieldRef {
            name,
            arg,
            transformers: Vec::new(),
            offset: start,
        })
    }

    fn after_field(&mut self, field: FieldRef) -> Result<Ast, ParseError> {
        let op_offset = self.at();
        let op: String = match self.peek() {
            Some(Tok::Op(o)) => (*o).to_string(),
            Some(Tok::Word(w)) if w == "exists" => {
                self.i += 1;
                return Ok(Ast::Exists(field));
            }
            Some(Tok::Word(w)) if OPS.contains(&w.as_str()) => w.clone(),
            _ => {
                // A bare name is a macro reference.
                if field.arg.is_some() || !field.transformers.is_empty() {
                    return err(field.offset, "expected an operator after a field");
                }
                return Ok(Ast::Macro {
                    name: field.name,
                    offset: field.offset,
                });
            }
        };
        self.i += 1;
        let rhs = if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let mut items = Vec::new();
            if self.peek() == Some(&Tok::RParen) {
                self.i += 1;
                return Ok(Ast::Cmp {
                    field,
                    op,
                    op_offset,
                    rhs: Rhs::List(items),
                });
            }
            loop {
                items.push(self.value()?);
                match self.toks.get(self.i) {
                    Some(Token {
                        tok: Tok::Comma, ..
                    }) => self.i += 1,
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => {
                        self.i += 1;
                        break;
                    }
                    Some(t) => {
                        return err(
                            t.start,
                            format!("expected `,` or `)`, found {}", describe(&t.tok)),
                        );
                    }
                    None => return err(self.len, "unexpected end of condition in a list"),
                }
            }
            Rhs::List(items)
        } else {
            Rhs::One(self.value()?)
        };
        Ok(Ast::Cmp {
            field,
            op,
            op_offset,
            rhs,
        })
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        let Some(t) = self.toks.get(self.i) else {
            return err(self.len, "unexpected end of condition; expected a value");
        };
        match &t.tok {
            Tok::Str(s) => {
                self.i += 1;
                Ok(Value::Lit {
                    text: s.clone(),
                    bare: false,
                })
            }
            Tok::Word(w)
                if TRANSFORMERS.contains(&w.as_str())
                    && self.toks.get(self.i + 1).map(|t| &t.tok) == Some(&Tok::LParen) =>
            {
                let f = self.field_ref()?;
                Ok(Value::Field(f))
            }
            Tok::Word(w) => {
                self.i += 1;
                Ok(Value::Lit {
                    text: w.clone(),
                    bare: true,
                })
            }
            // `evt.dir = <`: a comparison sign as a bare value.
            Tok::Op(o) => {
                self.i += 1;
                Ok(Value::Lit {
                    text: (*o).to_string(),
                    bare: true,
                })
            }
            other => err(
                t.start,
                format!("expected a value, found {}", describe(other)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_falco_shapes() {
        let a = parse(
            "evt.type in (open,openat) and fd.typechar='f' and not proc.name in (shell_binaries)",
        )
        .expect("parse");
        let Ast::And(items) = a else { panic!() };
        assert_eq!(items.len(), 3);
        assert!(
            matches!(&items[0], Ast::Cmp { op, rhs: Rhs::List(v), .. } if op == "in" && v.len() == 2)
        );
        assert!(
            matches!(&items[1], Ast::Cmp { rhs: Rhs::One(Value::Lit { text, bare: false }), .. } if text == "f")
        );
        assert!(matches!(&items[2], Ast::Not(_)));
        let a = parse("proc.aname[2]=qualys-cloud-ag").expect("parse");
        assert!(
            matches!(a, Ast::Cmp { field, rhs: Rhs::One(Value::Lit { text, bare: true }), .. }
                if field.arg.as_deref() == Some("2") && text == "qualys-cloud-ag")
        );
        let a = parse("proc.pname in (runc:[0:PARENT], runc)").expect("parse");
        assert!(matches!(a, Ast::Cmp { rhs: Rhs::List(v), .. }
            if v[0] == Value::Lit { text: "runc:[0:PARENT]".into(), bare: true }));
        let a = parse("tolower(proc.name) = bash and fd.name != val(proc.exepath)").expect("parse");
        let Ast::And(items) = a else { panic!() };
        assert!(matches!(&items[0], Ast::Cmp { field, .. } if field.transformers == ["tolower"]));
        assert!(
            matches!(&items[1], Ast::Cmp { rhs: Rhs::One(Value::Field(f)), .. } if f.transformers == ["val"])
        );
        assert!(
            matches!(parse("never_true").expect("parse"), Ast::Macro { name, .. } if name == "never_true")
        );
        assert!(matches!(
            parse("proc.pname exists").expect("parse"),
            Ast::Exists(_)
        ));
        assert!(matches!(parse("(evt.num=0)").expect("parse"), Ast::Cmp { op, .. } if op == "="));
    }

    #[test]
    fn errors_have_offsets() {
        assert_eq!(parse("a = ").unwrap_err().offset, 4);
        assert_eq!(
            parse("(a exists").unwrap_err().message,
            "unexpected end of condition; expected `)`"
        );
        assert_eq!(parse("a = 'x").unwrap_err().message, "unterminated string");
        let deep = "(".repeat(500) + "a exists" + &")".repeat(500);
        assert_eq!(
            parse(&deep).unwrap_err().message,
            "condition nested too deeply"
        );
        let nots = "not ".repeat(500) + "a exists";
        assert_eq!(
            parse(&nots).unwrap_err().message,
            "condition nested too deeply"
        );
    }
}
