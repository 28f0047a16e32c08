//! A likely cause for a Rhai syntax error whose own message points elsewhere: a missing
//! `}` at line 50 makes the parser complain "Expecting ';'" at line 52. This module
//! matches the brackets of the source (outside strings and comments) and names the one
//! that is most likely unclosed or mismatched.

/// What one open bracket is waiting for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    /// `(`, `[` or `{`, opened on `line`, whose line starts with `indent` columns.
    Bracket {
        ch: char,
        line: usize,
        indent: usize,
    },
    /// `${` inside a back-tick string: its `}` returns to the string.
    Interp,
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// A hint like "unclosed `{` opened at line 50", or `None` when the brackets match.
pub fn bracket_hint(source: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let indent_of = |line: usize| {
        lines
            .get(line.saturating_sub(1))
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or(0)
    };
    let mut stack: Vec<Open> = Vec::new();
    // The first closer indented less than its opener's line: the opener probably lacks
    // its own closer (the one found belongs to an outer block).
    let mut suspect: Option<(char, usize, usize)> = None;
    let chars: Vec<char> = source.chars().collect();
    let (mut i, mut line) = (0usize, 1usize);
    let mut in_backtick = false;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if in_backtick {
            match (c, next) {
                ('\\', Some(_)) => i += 1,
                ('`', _) => in_backtick = false,
                ('$', Some('{')) => {
                    stack.push(Open::Interp);
                    in_backtick = false;
                    i += 1;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ('/', Some('*')) => {
                // Block comments nest in Rhai.
                let mut depth = 0usize;
                while i < chars.len() {
                    match (chars[i], chars.get(i + 1).copied()) {
                        ('/', Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        ('*', Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        ('\n', _) => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            ('"', _) | ('\'', _) => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    match chars[i] {
                        '\\' => i += 1,
                        '\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            ('`', _) => in_backtick = true,
            ('(' | '[' | '{', _) => stack.push(Open::Bracket {
                ch: c,
                line,
                indent: indent_of(line),
            }),
            (')' | ']' | '}', _) => match stack.pop() {
                Some(Open::Interp) if c == '}' => in_backtick = true,
                Some(Open::Bracket {
                    ch,
                    line: opened,
                    indent,
                }) => {
                    if closer(ch) != c {
                        return Some(format!(
                            "`{ch}` opened at line {opened} is closed by `{c}` at line {line}"
                        ));
                    }
                    if suspect.is_none() && c == '}' && indent_of(line) < indent {
                        let here = lines.get(line - 1).map(|l| l.trim_start());
                        // Only a line that starts with the closer says something about
                        // indentation.
                        if here.is_some_and(|l| l.starts_with('}')) {
                            suspect = Some((ch, opened, line));
                        }
                    }
                }
                _ => return Some(format!("`{c}` at line {line} closes nothing")),
            },
            _ => {}
        }
        i += 1;
    }
    let unclosed: Vec<(char, usize)> = stack
        .iter()
        .filter_map(|o| match o {
            Open::Bracket { ch, line, .. } => Some((*ch, *line)),
            Open::Interp => None,
        })
        .collect();
    if unclosed.is_empty() {
        return None;
    }
    if let Some((ch, opened, closed)) = suspect {
        return Some(format!(
            "unclosed `{ch}` opened at line {opened} (the `}}` at line {closed} is indented like an outer block)"
        ));
    }
    let (ch, opened) = unclosed[unclosed.len() - 1];
    Some(format!("unclosed `{ch}` opened at line {opened}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_source_has_no_hint() {
        let src = "fn a(x) {\n  let s = \"{ not a brace\";\n  let t = `v: ${x + [1][0]} }`;\n  // }\n  /* { /* } */ */\n  if x { [1, (2)] } else { #{a: 1} }\n}\n";
        assert_eq!(bracket_hint(src), None);
    }

    #[test]
    fn missing_brace_is_found_by_indentation() {
        let src = "fn a(x) {\n    if x {\n        log(\"x\");\n}\n\nfn b() {\n    1\n}\n";
        assert_eq!(
            bracket_hint(src).as_deref(),
            Some(
                "unclosed `{` opened at line 2 (the `}` at line 4 is indented like an outer block)"
            )
        );
    }

    #[test]
    fn unclosed_at_end_and_mismatches_are_named() {
        assert_eq!(
            bracket_hint("fn a() {\n  let x = [1, 2;\n}\n").as_deref(),
            Some("`[` opened at line 2 is closed by `}` at line 3")
        );
        assert_eq!(
            bracket_hint("fn a() {\n  1\n").as_deref(),
            Some("unclosed `{` opened at line 1")
        );
        assert_eq!(
            bracket_hint("fn a() {\n  1\n}\n}\n").as_deref(),
            Some("`}` at line 4 closes nothing")
        );
    }
}
