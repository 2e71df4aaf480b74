//! The lexer of statement text: splits SQL into tokens where PostgreSQL's own lexer
//! does (with `standard_conforming_strings` on, which marten requires), as far as
//! marten's scans of text it did not write need: where every string literal (`E'...'`
//! with its continuations), quoted name, dollar-quoted string, parameter and comment
//! ends. A scan that disagreed with the server on one of those could take a `;` or a
//! `)` for text that the server runs as code. Used by schema qualification and the raw
//! SQL checks (`tables::qualify`) and by raw query fragments (`query::render`). Pure.

/// A token of statement text, split the way PostgreSQL's lexer splits it as far as the
/// scans here need: they must agree with the server on where every literal, quoted name
/// and comment ends, or a `;` one takes for text and the other for the end of a
/// statement lets a second statement through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A keyword or an unquoted name: a letter, `_` or a non-ASCII byte first, then
    /// also digits and `$`.
    Word,
    /// Blanks.
    Blank,
    /// A `--` comment (to the end of its line) or a `/* */` comment (nested ones
    /// included).
    Comment,
    /// A string literal (`'...'`, `E'...'` with its continuations), a quoted name, a
    /// dollar-quoted string or a parameter (`$1`).
    Opaque,
    /// Any other byte: an operator's, a digit, `(`, `.`, `;`, a lone `$`.
    Byte(u8),
    /// A literal, quoted name or `/* */` comment that the text ends inside.
    Unterminated,
}

/// Whether `b` can begin a word.
fn word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Whether `b` can continue a dollar quote's tag (a word, but no `$`).
fn tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The token at `i` (below `sql.len()`) and the index after it.
pub(crate) fn token(sql: &str, i: usize) -> (Token, usize) {
    let bytes = sql.as_bytes();
    let b = bytes[i];
    if word_start(b) {
        let end = i + bytes[i..]
            .iter()
            .position(|&c| !(tag_byte(c) || c == b'$'))
            .unwrap_or(bytes.len() - i);
        if end == i + 1 && matches!(b, b'e' | b'E') && bytes.get(end) == Some(&b'\'') {
            return escape_string(bytes, end);
        }
        return (Token::Word, end);
    }
    let opaque = |end: Option<usize>| match end {
        Some(end) => (Token::Opaque, end),
        None => (Token::Unterminated, bytes.len()),
    };
    match b {
        b'\'' => opaque(skip_quoted(bytes, i, b'\'', false)),
        b'"' => opaque(skip_quoted(bytes, i, b'"', false)),
        b'-' if bytes.get(i + 1) == Some(&b'-') => (Token::Comment, line_end(bytes, i)),
        b'/' if bytes.get(i + 1) == Some(&b'*') => block_comment(bytes, i),
        b'$' => dollar(bytes, i),
        // `\v` too, which the server takes for a blank from version 16 on.
        b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
            let end = i + bytes[i..]
                .iter()
                .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c'))
                .unwrap_or(bytes.len() - i);
            (Token::Blank, end)
        }
        _ => (Token::Byte(b), i + 1),
    }
}

/// The index after the quoted text opening at `i`, `None` when the text ends inside it
/// (`quote` doubled inside is escaped; with `backslash`, so is a character after `\`).
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8, backslash: bool) -> Option<usize> {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The `E'...'` literal whose quote is at `i`, with its continuations: a `'` after
/// blanks (and `--` comments) holding a line break continues the literal, backslash
/// escapes included.
fn escape_string(bytes: &[u8], mut i: usize) -> (Token, usize) {
    loop {
        let Some(end) = skip_quoted(bytes, i, b'\'', true) else {
            return (Token::Unterminated, bytes.len());
        };
        match continuation(bytes, end) {
            Some(quote) => i = quote,
            None => return (Token::Opaque, end),
        }
    }
}

/// The index of the `'` that continues a literal ending at `i`: one after blanks and
/// `--` comments among which is a line break.
fn continuation(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut line_break = false;
    loop {
        match bytes.get(i)? {
            b'\n' | b'\r' => (line_break, i) = (true, i + 1),
            b' ' | b'\t' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = line_end(bytes, i),
            b'\'' if line_break => return Some(i),
            _ => return None,
        }
    }
}

/// The end of the `--` comment at `i`: its line feed or carriage return (or the end of
/// the text).
fn line_end(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .map_or(bytes.len(), |at| i + at)
}

/// The `/* */` comment at `i`, nested comments included.
fn block_comment(bytes: &[u8], i: usize) -> (Token, usize) {
    let (mut depth, mut j) = (1usize, i + 2);
    while j < bytes.len() {
        match (bytes[j], bytes.get(j + 1)) {
            (b'*', Some(b'/')) => {
                j += 2;
                depth -= 1;
                if depth == 0 {
                    return (Token::Comment, j);
                }
            }
            (b'/', Some(b'*')) => (depth, j) = (depth + 1, j + 2),
            _ => j += 1,
        }
    }
    (Token::Unterminated, bytes.len())
}

/// At a `$` (not inside a word): a parameter (`$1`), a dollar-quoted string (`$$...$$`,
/// `$tag$...$tag$`) or a lone `$`.
fn dollar(bytes: &[u8], i: usize) -> (Token, usize) {
    let rest = &bytes[i + 1..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 {
        return (Token::Opaque, i + 1 + digits);
    }
    let tag_len = rest.iter().take_while(|&&c| tag_byte(c)).count();
    if rest.get(tag_len) != Some(&b'$') {
        return (Token::Byte(b'$'), i + 1);
    }
    let delimiter = &bytes[i..i + tag_len + 2];
    let body = i + delimiter.len();
    match bytes[body..]
        .windows(delimiter.len())
        .position(|w| w == delimiter)
    {
        Some(at) => (Token::Opaque, body + at + delimiter.len()),
        None => (Token::Unterminated, bytes.len()),
    }
}
