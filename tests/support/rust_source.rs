//! Rust source as the compiler reads it, for the tests that read tagfence's own sources: the
//! code without comments and literals (tests/layers.rs, which follows imports) and the contents
//! of the string literals (tests/settings.rs, which finds the settings the code reads). One
//! lexer for both, so that a comment or a string cannot fool one of them and not the other.
// Each test crate that includes this module uses one of its two views.
#![allow(dead_code)]

/// A source split into its code and its string literals.
struct Lexed {
    /// The code with every comment a space and every string or char literal empty (`""`,
    /// `' '`).
    code: String,
    /// The contents of the string literals (plain, byte and raw), escapes as written.
    literals: Vec<String>,
}

/// The code of `source` without comments and literals.
pub fn without_comments_and_literals(source: &str) -> String {
    lex(source).code
}

/// The contents of the string literals of `source`, comments and char literals skipped.
pub fn string_literals(source: &str) -> Vec<String> {
    lex(source).literals
}

fn lex(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Lexed {
        code: String::with_capacity(source.len()),
        literals: Vec::new(),
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = block_comment_end(&chars, i);
            out.code.push(' ');
        } else if c == '"' {
            let (text, end) = plain_string(&chars, i + 1);
            out.literals.push(text);
            out.code.push_str("\"\"");
            i = end;
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && (i == 0 || !is_ident(chars[i - 1]))
            && raw_string_start(&chars, if c == 'b' { i + 2 } else { i + 1 }).is_some()
        {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = raw_string_start(&chars, start).expect("checked above");
            let body = start + hashes + 1;
            let mut j = body;
            while j < chars.len()
                && !(chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')))
            {
                j += 1;
            }
            out.literals
                .push(chars[body..j.min(chars.len())].iter().collect());
            out.code.push_str("\"\"");
            i = j + 1 + hashes;
        } else if c == '\'' {
            match char_literal_end(&chars, i) {
                Some(end) => {
                    out.code.push_str("' '");
                    i = end + 1;
                }
                // A lifetime or a label.
                None => {
                    out.code.push(c);
                    i += 1;
                }
            }
        } else if is_ident(c) {
            // The whole identifier, so that an `r` or `b` inside one is not a prefix.
            while i < chars.len() && is_ident(chars[i]) {
                out.code.push(chars[i]);
                i += 1;
            }
        } else {
            out.code.push(c);
            i += 1;
        }
    }
    out
}

/// The index after a (nested) block comment starting at `at`.
fn block_comment_end(chars: &[char], mut at: usize) -> usize {
    let mut depth = 0;
    while at < chars.len() {
        if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
            depth += 1;
            at += 2;
        } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
            depth -= 1;
            at += 2;
            if depth == 0 {
                break;
            }
        } else {
            at += 1;
        }
    }
    at
}

/// A string's contents from `at` (after its opening quote), and the index after its closing one.
fn plain_string(chars: &[char], mut at: usize) -> (String, usize) {
    let mut text = String::new();
    while at < chars.len() && chars[at] != '"' {
        if chars[at] == '\\' {
            text.push(chars[at]);
            at += 1;
        }
        if let Some(&ch) = chars.get(at) {
            text.push(ch);
        }
        at += 1;
    }
    (text, at + 1)
}

/// With `chars[at..]` = `#…#"`, the number of `#`s.
fn raw_string_start(chars: &[char], at: usize) -> Option<usize> {
    let hashes = chars[at.min(chars.len())..]
        .iter()
        .take_while(|&&c| c == '#')
        .count();
    (chars.get(at + hashes) == Some(&'"')).then_some(hashes)
}

/// The index of the closing quote of a char literal starting at `at` ('x', '\n', '\u{1F600}'),
/// or `None` for a lifetime or a label.
fn char_literal_end(chars: &[char], at: usize) -> Option<usize> {
    if chars.get(at + 1) == Some(&'\\') {
        (at + 3..chars.len()).find(|&k| chars[k] == '\'')
    } else if chars.get(at + 2) == Some(&'\'') {
        Some(at + 2)
    } else {
        None
    }
}
