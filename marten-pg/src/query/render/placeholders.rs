//! The scanner of a raw SQL fragment: finds its `$n` placeholders outside string
//! literals, escape strings, dollar-quoted strings, quoted identifiers, comments and
//! identifiers, checks they are exactly `$1..=$count` and that its parentheses balance,
//! and shifts them by an offset.
//! Pure; uses nothing else of `render`.

/// Whether `b` can continue an identifier (PostgreSQL allows `$` and any non-ASCII byte).
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Whether `b` can start an identifier (and so a dollar-quote tag).
fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The end (exclusive) of a quoted string or identifier opening at `start`: `quote`
/// doubled inside is the quote itself; in an escape string (`E'..'`) a backslash escapes
/// the next byte.
fn quoted_end(b: &[u8], start: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            c if c == quote => {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of a block comment opening at `start`; they nest.
fn comment_end(b: &[u8], start: usize) -> Option<usize> {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// At a `$` that starts no placeholder: the end of the dollar-quoted string it opens
/// (`$$..$$`, `$tag$..$tag$`), `Ok(None)` when it opens none.
fn dollar_quote_end(s: &str, start: usize) -> Result<Option<usize>, String> {
    let b = s.as_bytes();
    let mut i = start + 1;
    if i < b.len() && ident_start(b[i]) {
        i += 1;
        while i < b.len() && ident_byte(b[i]) && b[i] != b'$' {
            i += 1;
        }
    }
    if b.get(i) != Some(&b'$') {
        return Ok(None);
    }
    let tag = &s[start..=i];
    match s[i + 1..].find(tag) {
        Some(at) => Ok(Some(i + 1 + at + tag.len())),
        None => Err(format!(
            "unterminated dollar-quoted string {tag} in raw SQL"
        )),
    }
}

/// The number `n` of the placeholder `$n` at `start` and the end (exclusive) of its
/// digits; an error when it is not one of `$1..=$count`.
fn placeholder_at(fragment: &str, start: usize, count: usize) -> Result<(usize, usize), String> {
    let b = fragment.as_bytes();
    let digits_end = (start + 1..b.len())
        .find(|&j| !b[j].is_ascii_digit())
        .unwrap_or(b.len());
    let digits = &fragment[start + 1..digits_end];
    let n: usize = digits
        .parse()
        .map_err(|_| format!("placeholder ${digits} is out of range"))?;
    if n == 0 || n > count {
        return Err(format!(
            "placeholder ${n} has no parameter: {count} given, numbered from $1"
        ));
    }
    Ok((n, digits_end))
}

/// Shifts the `$n` placeholders of a raw fragment by `offset`, checking that they are
/// exactly `$1..=$count` (each parameter used, none beyond). `$` inside string literals,
/// escape strings, dollar-quoted strings, quoted identifiers, comments and identifiers
/// (`a$1`) is left alone. Its parentheses outside those must balance: the fragment is
/// wrapped in a pair of its own and joined to the statement's other conditions (the
/// tenant's among them), and a `)` it did not open would end that pair early and let the
/// rest of the fragment widen the match (`TRUE) OR (TRUE`).
pub(crate) fn renumber(fragment: &str, offset: usize, count: usize) -> Result<String, String> {
    let b = fragment.as_bytes();
    let mut out = String::with_capacity(fragment.len() + 8);
    let mut used = vec![false; count];
    let (mut i, mut copied, mut depth) = (0, 0, 0usize);
    let unterminated = |what: &str| format!("unterminated {what} in raw SQL");
    while i < b.len() {
        let prev_ident = i > 0 && ident_byte(b[i - 1]);
        match b[i] {
            b'\'' => {
                // `E'..'` (not the end of an identifier such as `name'..'`).
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && !(i > 1 && ident_byte(b[i - 2]));
                i = quoted_end(b, i, b'\'', escapes).ok_or_else(|| unterminated("string"))?;
            }
            b'"' => {
                i = quoted_end(b, i, b'"', false)
                    .ok_or_else(|| unterminated("quoted identifier"))?;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = fragment[i..].find('\n').map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = comment_end(b, i).ok_or_else(|| unterminated("comment"))?;
            }
            b'$' if prev_ident => i += 1,
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let (n, digits_end) = placeholder_at(fragment, i, count)?;
                used[n - 1] = true;
                out.push_str(&fragment[copied..i]);
                out.push('$');
                out.push_str(&(n + offset).to_string());
                copied = digits_end;
                i = digits_end;
            }
            b'$' => i = dollar_quote_end(fragment, i)?.unwrap_or(i + 1),
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!("raw SQL closes a parenthesis it did not open (at byte {i})")
                })?;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if depth > 0 {
        return Err(format!(
            "raw SQL leaves {depth} parenthes{} open",
            if depth == 1 { "is" } else { "es" }
        ));
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(format!(
            "parameter ${} is not used by the raw SQL",
            unused + 1
        ));
    }
    out.push_str(&fragment[copied..]);
    Ok(out)
}
