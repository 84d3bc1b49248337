//! A small YAML tree that keeps the position of every node.
//!
//! Rule files are read with `saphyr-parser` (the maintained successor of
//! yaml-rust's event parser) into this tree instead of through serde, because
//! the linter needs the exact line and column of every key and value (to say
//! "unknown key `sevrity` at 4:5; did you mean `severity`?") and the style of
//! each scalar (to map an error inside a block-scalar condition back to its
//! line in the file).

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A position in a source file: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// How a scalar was written; decides how offsets inside it map to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(String, Style),
    Seq(Vec<Node>),
    /// Keys are scalars; their order in the file is kept.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error (or a construct rule files do not allow).
#[derive(Clone, Debug, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// A word for "what is this", for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(..) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// True for an explicit YAML null (`~`, `null` or nothing, unquoted).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s, Style::Plain) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }
}

/// Parses one YAML document. An empty file is an empty mapping. Anchors are
/// ignored, aliases and multiple documents are errors (rules should be
/// readable without chasing references).
pub fn parse(src: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(src);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    while let Some(next) = parser.next_event() {
        let (ev, span) = next.map_err(|e| YamlError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let node = match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        pos,
                        message: "a rule file holds one YAML document; split it into files".into(),
                    });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(YamlError {
                    pos,
                    message:
                        "YAML aliases are not supported in rule files; use `lists` or `macros`"
                            .into(),
                });
            }
            Event::SequenceStart(..) => {
                stack.push(Frame {
                    pos,
                    kind: FrameKind::Seq(Vec::new()),
                });
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Frame {
                    pos,
                    kind: FrameKind::Map(Vec::new(), None),
                });
                continue;
            }
            Event::Scalar(text, style, _, _) => Node {
                pos,
                value: Value::Scalar(
                    text.into_owned(),
                    match style {
                        ScalarStyle::Plain => Style::Plain,
                        ScalarStyle::SingleQuoted => Style::SingleQuoted,
                        ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                        ScalarStyle::Literal => Style::Literal,
                        ScalarStyle::Folded => Style::Folded,
                    },
                ),
            },
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame {
                    pos,
                    kind: FrameKind::Seq(items),
                }) => Node {
                    pos,
                    value: Value::Seq(items),
                },
                Some(Frame {
                    pos,
                    kind: FrameKind::Map(entries, _),
                }) => Node {
                    pos,
                    value: Value::Map(entries),
                },
                None => {
                    return Err(YamlError {
                        pos,
                        message: "unbalanced YAML structure".into(),
                    });
                }
            },
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame {
                kind: FrameKind::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                kind: FrameKind::Map(entries, pending),
                ..
            }) => match pending.take() {
                None => {
                    if node.as_str().is_none() {
                        return Err(YamlError {
                            pos: node.pos,
                            message: "mapping keys must be plain strings".into(),
                        });
                    }
                    if let Some((prev, _)) =
                        entries.iter().find(|(k, _)| k.as_str() == node.as_str())
                    {
                        return Err(YamlError {
                            pos: node.pos,
                            message: format!(
                                "duplicate key `{}` (first at line {})",
                                node.as_str().unwrap_or_default(),
                                prev.pos.line
                            ),
                        });
                    }
                    *pending = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root.unwrap_or(Node {
        pos: Pos { line: 1, column: 1 },
        value: Value::Map(Vec::new()),
    }))
}

struct Frame {
    pos: Pos,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// Maps a byte offset inside a scalar's value back to a file position.
///
/// Exact for single-line scalars and literal (`|`) blocks, and for folded or
/// multi-line plain scalars as long as the offending text sits on one source
/// line (always true for tokens). Falls back to the scalar's start.
pub fn locate_in_scalar(src: &str, node: &Node, offset: usize) -> Pos {
    let Value::Scalar(value, style) = &node.value else {
        return node.pos;
    };
    let lines: Vec<&str> = src.lines().collect();
    let first = node.pos.line.saturating_sub(1);
    let mut cursor = 0usize;
    let mut idx = first;
    while idx < lines.len() {
        let raw = lines[idx];
        // Which part of this source line belongs to the value.
        let skip_chars = if idx == first {
            match style {
                Style::Literal | Style::Folded => {
                    idx += 1;
                    continue;
                }
                Style::Plain => node.pos.column - 1,
                Style::SingleQuoted | Style::DoubleQuoted => node.pos.column,
            }
        } else {
            0
        };
        let part: String = raw.chars().skip(skip_chars).collect();
        let lead = part.chars().take_while(|c| *c == ' ' || *c == '\t').count();
        let trimmed = part.trim_start_matches([' ', '\t']);
        let trimmed = match style {
            Style::SingleQuoted => trimmed.trim_end().trim_end_matches('\''),
            Style::DoubleQuoted => trimmed.trim_end().trim_end_matches('"'),
            _ => trimmed.trim_end(),
        };
        if !trimmed.is_empty() {
            let Some(found) = value.get(cursor..).and_then(|rest| rest.find(trimmed)) else {
                break;
            };
            let start = cursor + found;
            let end = start + trimmed.len();
            // The end of the value (an "unexpected end" error) belongs to its last line.
            let at_end = offset == end && end >= value.trim_end().len();
            if offset >= start && (offset < end || at_end) {
                let chars_before = value.get(start..offset).map_or(0, |s| s.chars().count());
                return Pos {
                    line: idx + 1,
                    column: skip_chars + lead + chars_before + 1,
                };
            }
            cursor = end;
            if cursor >= value.len() {
                break;
            }
        }
        idx += 1;
    }
    node.pos
}

/// The text of a 1-based line, for the caret display of diagnostics.
pub fn source_line(src: &str, line: usize) -> Option<String> {
    src.lines().nth(line.checked_sub(1)?).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_at<'a>(n: &'a Node, key: &str) -> &'a Node {
        let Value::Map(entries) = &n.value else {
            panic!("not a map")
        };
        &entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .expect("key")
            .1
    }

    #[test]
    fn positions_of_keys_and_values() {
        let src = "a: 1\nb:\n  - x\n  - 'y'\n";
        let root = parse(src).expect("parse");
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 4, column: 5 });
        assert_eq!(
            items[1].value,
            Value::Scalar("y".into(), Style::SingleQuoted)
        );
    }

    #[test]
    fn duplicate_keys_and_aliases_are_errors() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, column: 1 });
        assert_eq!(e.message, "duplicate key `a` (first at line 1)");
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }

    #[test]
    fn locate_plain_and_literal() {
        let src = "c: process.pid == 1\nd: |\n  a == 1\n    and b\n";
        let root = parse(src).expect("parse");
        let c = scalar_at(&root, "c");
        assert_eq!(locate_in_scalar(src, c, 0), Pos { line: 1, column: 4 });
        assert_eq!(
            locate_in_scalar(src, c, 15),
            Pos {
                line: 1,
                column: 19
            }
        );
        let d = scalar_at(&root, "d");
        // value = "a == 1\n  and b\n"; "b" is at byte 13
        assert_eq!(locate_in_scalar(src, d, 13), Pos { line: 4, column: 9 });
    }

    #[test]
    fn locate_folded_and_quoted() {
        let src = "d: >\n  a == 1\n  and bb\ne: \"x y\"\n";
        let root = parse(src).expect("parse");
        let d = scalar_at(&root, "d");
        // value = "a == 1 and bb\n"; "bb" at byte 11
        assert_eq!(locate_in_scalar(src, d, 11), Pos { line: 3, column: 7 });
        let e = scalar_at(&root, "e");
        assert_eq!(locate_in_scalar(src, e, 2), Pos { line: 4, column: 7 });
    }
}
