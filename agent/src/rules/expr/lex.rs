//! Tokens of the condition language.

use super::SyntaxError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// Field, macro or list name: letters, digits, `_`, `.`, `-`.
    Ident(String),
    Str(String),
    Int(i64),
    /// `==` `!=` `<` `<=` `>` `>=`
    Cmp(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

/// A token and its byte range in the condition text.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

pub fn lex(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let single = |tok| Token {
            tok,
            start,
            end: start + 1,
        };
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
            }
            b'#' => {
                // Comment to the end of the line.
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                out.push(single(Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push(single(Tok::RParen));
                i += 1;
            }
            b'[' => {
                out.push(single(Tok::LBracket));
                i += 1;
            }
            b']' => {
                out.push(single(Tok::RBracket));
                i += 1;
            }
            b',' => {
                out.push(single(Tok::Comma));
                i += 1;
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = bytes.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => "==",
                    (b'!', true) => "!=",
                    (b'<', true) => "<=",
                    (b'>', true) => ">=",
                    (b'<', false) => "<",
                    (b'>', false) => ">",
                    (b'=', false) => {
                        return Err(SyntaxError::new(start, 1, "`=` is not an operator")
                            .hint("compare with `==`"));
                    }
                    _ => {
                        return Err(SyntaxError::new(start, 1, "`!` is not an operator")
                            .hint("negate with `not`, or compare with `!=`"));
                    }
                };
                i += op.len();
                out.push(Token {
                    tok: Tok::Cmp(op),
                    start,
                    end: i,
                });
            }
            b'"' | b'\'' => {
                let (s, end) = string(src, i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    start,
                    end,
                });
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let text = &src[start..i];
                let n = parse_int(text).ok_or_else(|| {
                    SyntaxError::new(start, i - start, format!("invalid integer `{text}`"))
                        .hint("integers are decimal (`-1`, `42`) or hexadecimal (`0x1f`) and fit in 64 bits")
                })?;
                out.push(Token {
                    tok: Tok::Int(n),
                    start,
                    end: i,
                });
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.' | b'-'))
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(src[start..i].to_string()),
                    start,
                    end: i,
                });
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(SyntaxError::new(
                    start,
                    ch.len_utf8(),
                    format!("unexpected character `{ch}`"),
                )
                .hint("strings need quotes: \"...\" or '...'"));
            }
        }
    }
    Ok(out)
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let v = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// A quoted string starting at `start`; returns the value and the end offset.
fn string(src: &str, start: usize) -> Result<(String, usize), SyntaxError> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let pos = start + 1 + off;
        if c == quote {
            return Ok((out, pos + 1));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, other)) => {
                    // Keep unknown escapes verbatim: regexes (`\d`, `\.`) read naturally.
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    Err(
        SyntaxError::new(start, src.len() - start, "unterminated string")
            .hint(format!("close it with {quote}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).expect("lex").into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokens() {
        assert_eq!(
            toks(r#"a.b == "x\"y" and c<=-3 in [0x10, 'z\d']"#),
            vec![
                Tok::Ident("a.b".into()),
                Tok::Cmp("=="),
                Tok::Str("x\"y".into()),
                Tok::Ident("and".into()),
                Tok::Ident("c".into()),
                Tok::Cmp("<="),
                Tok::Int(-3),
                Tok::Ident("in".into()),
                Tok::LBracket,
                Tok::Int(16),
                Tok::Comma,
                Tok::Str("z\\d".into()),
                Tok::RBracket,
            ]
        );
    }

    #[test]
    fn errors_have_offsets() {
        let e = lex("a = 1").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (2, "`=` is not an operator")
        );
        let e = lex("a == \"x").unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (5, "unterminated string"));
        let e = lex("a == 12ab").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (5, "invalid integer `12ab`")
        );
        let e = lex("a == $").unwrap_err();
        assert_eq!(e.offset, 5);
    }
}
