//! The scanner of a raw SQL fragment: finds its `$n` placeholders outside string
//! literals, escape strings, dollar-quoted strings, quoted identifiers, comments and
//! identifiers, checks they are exactly `$1..=$count` and that its parentheses balance,
//! and shifts them by an offset.
//! Pure; uses nothing else of `render`.

use crate::sql_lexer::{token, Token};

/// What a token the text ends inside is, by its first byte.
fn unterminated(first: u8) -> &'static str {
    match first {
        b'"' => "quoted identifier",
        b'/' => "comment",
        b'$' => "dollar-quoted string",
        _ => "string",
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
/// escape strings (with their continuations), dollar-quoted strings, quoted identifiers,
/// comments and identifiers (`a$1`) is left alone: the fragment is read with
/// [`crate::sql_lexer`], which ends each of those where the server does. Its
/// parentheses outside those must balance: the fragment is wrapped in a pair of its own
/// and joined to the statement's other conditions (the tenant's among them), and a `)`
/// it did not open would end that pair early and let the rest of the fragment widen the
/// match (`TRUE) OR (TRUE`).
pub(crate) fn renumber(fragment: &str, offset: usize, count: usize) -> Result<String, String> {
    let b = fragment.as_bytes();
    let mut out = String::with_capacity(fragment.len() + 8);
    let mut used = vec![false; count];
    let (mut i, mut copied, mut depth) = (0, 0, 0usize);
    while i < b.len() {
        let (token, end) = token(fragment, i);
        match token {
            Token::Unterminated => {
                return Err(format!("unterminated {} in raw SQL", unterminated(b[i])));
            }
            Token::Opaque if b[i] == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let (n, digits_end) = placeholder_at(fragment, i, count)?;
                used[n - 1] = true;
                out.push_str(&fragment[copied..i]);
                out.push('$');
                out.push_str(&(n + offset).to_string());
                copied = digits_end;
            }
            Token::Byte(b'(') => depth += 1,
            Token::Byte(b')') => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!("raw SQL closes a parenthesis it did not open (at byte {i})")
                })?;
            }
            _ => {}
        }
        i = end;
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
