//! HTML output: the one escaping function ([`escape_into`]) and [`Html`], the builder every
//! page writes with. Markup goes in only as `&'static str` ([`Html::raw`]: text written in
//! the source, never a value read from a request or the database); every other value goes
//! through [`Html::text`] (escaped for element content and quoted attribute values alike)
//! or [`Html::param`] (percent-encoded for a URL query, then escaped). So a page cannot
//! write a stored value unescaped without a `'static` string it does not have.

use std::fmt::{self, Write};

/// Writes `s` escaped for HTML element content and double- or single-quoted attribute
/// values: `&`, `<`, `>`, `"` and `'` become character references. The only escaping
/// function of the console: every template uses it through [`Html`].
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `s` escaped (see [`escape_into`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// `s` percent-encoded for a URL query value or path segment (everything but unreserved
/// characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An HTML document or fragment under construction.
#[derive(Debug, Default, Clone)]
pub struct Html {
    buf: String,
}

impl Html {
    /// An empty fragment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Markup written in the source.
    pub fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.buf.push_str(markup);
        self
    }

    /// A value, escaped.
    pub fn text(&mut self, value: impl fmt::Display) -> &mut Self {
        let s = value.to_string();
        escape_into(&mut self.buf, &s);
        self
    }

    /// A value percent-encoded for a URL (query value or path segment), then escaped.
    pub fn param(&mut self, value: impl fmt::Display) -> &mut Self {
        let s = percent_encode(&value.to_string());
        escape_into(&mut self.buf, &s);
        self
    }

    /// A fragment built before.
    pub fn append(&mut self, other: &Html) -> &mut Self {
        self.buf.push_str(&other.buf);
        self
    }

    /// `<td>value</td>`, escaped.
    pub fn cell(&mut self, value: impl fmt::Display) -> &mut Self {
        self.raw("<td>").text(value).raw("</td>")
    }

    /// `<th>label</th>` for each label.
    pub fn header_row(&mut self, labels: &[&'static str]) -> &mut Self {
        self.raw("<tr>");
        for l in labels {
            self.raw("<th>").raw(l).raw("</th>");
        }
        self.raw("</tr>")
    }

    /// A link: `<a href="{base}{path}">label</a>`, the path given as static parts and
    /// encoded values (see [`Href`]).
    pub fn link(&mut self, href: &Href, label: impl fmt::Display) -> &mut Self {
        self.raw("<a href=\"")
            .text(&href.0)
            .raw("\">")
            .text(label)
            .raw("</a>")
    }

    /// The HTML.
    pub fn into_string(self) -> String {
        self.buf
    }

    /// The HTML so far.
    pub fn as_str(&self) -> &str {
        &self.buf
    }
}

/// A URL the console links to: static path parts and percent-encoded values.
#[derive(Debug, Clone)]
pub struct Href(String);

impl Href {
    /// `base` + `path` (a path written in the source).
    pub fn new(base: &str, path: &'static str) -> Self {
        Href(format!("{base}{path}"))
    }

    /// Appends a path segment, percent-encoded.
    pub fn segment(mut self, value: impl fmt::Display) -> Self {
        self.0.push('/');
        self.0.push_str(&percent_encode(&value.to_string()));
        self
    }

    /// Appends a query parameter, its value percent-encoded.
    pub fn query(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.0.push(if self.0.contains('?') { '&' } else { '?' });
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&percent_encode(&value.to_string()));
        self
    }

    /// The URL (not escaped for HTML: write it with [`Html::link`] or [`Html::text`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The navigation entries: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/streams", "Streams"),
    ("/documents", "Documents"),
    ("/projections", "Projections"),
    ("/dead-letters", "Dead letters"),
    ("/tags", "Tags"),
];

/// A whole page: the layout (navigation, embedded stylesheet and script) around `body`.
pub fn page(base: &str, title: &str, body: &Html) -> String {
    let mut h = Html::new();
    h.raw("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .text(title)
        .raw(" - marten console</title><link rel=\"stylesheet\" href=\"")
        .text(base)
        .raw("/assets/console.css\"></head><body><nav><span class=\"brand\">marten</span>");
    for (path, label) in NAV {
        h.link(&Href::new(base, path), label);
    }
    h.raw("</nav><main><h1>")
        .text(title)
        .raw("</h1>")
        .append(body)
        .raw("</main><script src=\"")
        .text(base)
        .raw("/assets/console.js\"></script></body></html>");
    h.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_raw_is_not() {
        let mut h = Html::new();
        h.raw("<p>")
            .text("<script>alert('x')</script> & \"q\"")
            .raw("</p>");
        assert_eq!(
            h.as_str(),
            "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;</p>"
        );
    }

    #[test]
    fn params_are_percent_encoded_then_escaped() {
        let href = Href::new("/c", "/streams")
            .segment("a b/\"<")
            .query("after", "x&y");
        assert_eq!(href.as_str(), "/c/streams/a%20b%2F%22%3C?after=x%26y");
        let mut h = Html::new();
        h.link(&href, "<b>");
        assert!(h.as_str().ends_with(">&lt;b&gt;</a>"), "{}", h.as_str());
    }
}
