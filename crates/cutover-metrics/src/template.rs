//! `{{release}}`, `{{stable}}`, `{{candidate}}`, `{{interval}}` and `{{version}}` in queries
//! and URLs, each value escaped for where it lands.
//!
//! Values come from release files and image tags, which are not trusted to be well-formed:
//! a version `v2"} or vector(1) #` pasted as it is turns an error-rate query into one that
//! always passes, and `v2&admin=1#` adds a parameter to a URL and cuts off the rest. So the
//! template is read as the language it is written in, and each value is escaped for the
//! spot its placeholder stands in:
//!
//! | destination | where the placeholder stands | what is written |
//! |---|---|---|
//! | PromQL | inside `"..."` or `'...'` | the value as a string literal's content: `\`, the quote, newlines and other control characters escaped |
//! | PromQL | inside a string after `=~` or `!~` (a regex matcher) | the same, after escaping the regex metacharacters, so the value matches only itself |
//! | PromQL | inside `` `...` `` (a raw string) | the value as it is; a value with a backtick is refused |
//! | PromQL | outside any string | the value only if it is letters, digits, `_` and `:` (a metric-name part or a duration such as `1m30s`); anything else is refused: put the placeholder in quotes |
//! | PromQL | in a `#` comment | the value, unless it holds a line break (refused) |
//! | URL | in the path, query or fragment | the value percent-encoded (RFC 3986: all but `A-Z a-z 0-9 - . _ ~`), so it stays one path segment or one parameter value |
//! | URL | in the scheme or host (before the path) | the value only if it is made of those unreserved characters; anything else is refused |
//!
//! No template is written into JSON: web metrics read JSON but send none, and their headers
//! are not templated.

use std::fmt;

use cutover_core::Duration;

/// What a measurement is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    /// The release's name (the proxy's `release` label).
    pub release: &'a str,
    /// The stable version's name (the proxy's `version` label).
    pub stable: &'a str,
    /// The candidate's name.
    pub candidate: &'a str,
    /// The measurement window.
    pub interval: Duration,
}

/// The language a template is written in, which decides how its values are escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A PromQL query (a Prometheus metric's `query`).
    PromQl,
    /// An `http(s)://` URL (a web metric's `url`).
    Url,
}

/// A value that cannot be written where its placeholder stands without changing what the
/// template means. The measurement fails with this message rather than run something
/// else than what was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// The placeholder, e.g. `version`.
    pub placeholder: String,
    /// The value it stood for.
    pub value: String,
    /// Why the value cannot go there, and what to do.
    pub reason: &'static str,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{{{}}}}} is '{}', which {}",
            self.placeholder,
            self.value.escape_debug(),
            self.reason
        )
    }
}

impl std::error::Error for TemplateError {}

/// Replaces the placeholders of `template`, escaping each value for `destination`;
/// `version` fills `{{version}}` (a query or URL that has it is run once per version).
/// `{{interval}}` is written in PromQL's range syntax (`30s`, `2m`), which is also how
/// cutover writes durations. Unknown placeholders are kept as written.
pub fn render(
    template: &str,
    context: &Context<'_>,
    version: Option<&str>,
    destination: Destination,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut lexer = match destination {
        Destination::PromQl => Lexer::PromQl(PromQl::Code),
        Destination::Url => Lexer::Url(UrlPart::Start),
    };
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        lexer.literal(&rest[..start], &mut out);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            lexer.literal(&rest[start..], &mut out);
            return Ok(out);
        };
        let name = after[..end].trim();
        let value = match name {
            "release" => Some(context.release.to_string()),
            "stable" => Some(context.stable.to_string()),
            "candidate" => Some(context.candidate.to_string()),
            "interval" => Some(context.interval.to_string()),
            "version" => version.map(str::to_string),
            _ => None,
        };
        match value {
            Some(value) => lexer
                .value(&value, &mut out)
                .map_err(|reason| TemplateError {
                    placeholder: name.to_string(),
                    value,
                    reason,
                })?,
            None => lexer.literal(&rest[start..start + 2 + end + 2], &mut out),
        }
        rest = &after[end + 2..];
    }
    lexer.literal(rest, &mut out);
    Ok(out)
}

/// Where the template's text has got to, in its own language.
enum Lexer {
    PromQl(PromQl),
    Url(UrlPart),
}

/// The PromQL lexer's states that matter for escaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PromQl {
    /// Outside strings and comments.
    Code,
    /// Inside a string opened by `quote` (`"` or `'`); `regex` when it is a regex
    /// matcher's; `escaped` right after a backslash.
    Quoted {
        quote: char,
        regex: bool,
        escaped: bool,
    },
    /// Inside a raw string (backticks).
    Raw { regex: bool },
    /// In a `#` comment, up to the end of the line.
    Comment,
}

/// The parts of a URL, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UrlPart {
    /// Before `://`: the scheme (or a template with no scheme yet).
    Start,
    /// After `://`, before the path: user, host and port.
    Authority,
    Path,
    Query,
    Fragment,
}

impl Lexer {
    /// Writes the template's own text and follows it.
    fn literal(&mut self, text: &str, out: &mut String) {
        match self {
            Lexer::PromQl(state) => {
                for ch in text.chars() {
                    *state = promql_step(*state, ch, out);
                    out.push(ch);
                }
            }
            Lexer::Url(part) => {
                let mut chars = text.char_indices().peekable();
                while let Some((i, ch)) = chars.next() {
                    *part = match (*part, ch) {
                        (UrlPart::Start, ':') if text[i..].starts_with("://") => {
                            out.push_str("://");
                            chars.next();
                            chars.next();
                            *part = UrlPart::Authority;
                            continue;
                        }
                        (UrlPart::Start | UrlPart::Authority, '/') => UrlPart::Path,
                        (UrlPart::Start | UrlPart::Authority | UrlPart::Path, '?') => {
                            UrlPart::Query
                        }
                        (UrlPart::Fragment, _) => UrlPart::Fragment,
                        (_, '#') => UrlPart::Fragment,
                        (part, _) => part,
                    };
                    out.push(ch);
                }
            }
        }
    }

    /// Writes a placeholder's value escaped for where the template has got to, or says
    /// why it cannot be.
    fn value(&self, value: &str, out: &mut String) -> Result<(), &'static str> {
        match *self {
            Lexer::PromQl(state) => promql_value(state, value, out),
            Lexer::Url(part) => url_value(part, value, out),
        }
    }
}

/// The state after `ch`, given what was written before it (`out`, to tell a regex
/// matcher's string from any other).
fn promql_step(state: PromQl, ch: char, out: &str) -> PromQl {
    match state {
        PromQl::Code => match ch {
            '"' | '\'' => PromQl::Quoted {
                quote: ch,
                regex: after_regex_operator(out),
                escaped: false,
            },
            '`' => PromQl::Raw {
                regex: after_regex_operator(out),
            },
            '#' => PromQl::Comment,
            _ => PromQl::Code,
        },
        PromQl::Quoted {
            quote,
            regex,
            escaped,
        } => {
            if escaped {
                PromQl::Quoted {
                    quote,
                    regex,
                    escaped: false,
                }
            } else if ch == '\\' {
                PromQl::Quoted {
                    quote,
                    regex,
                    escaped: true,
                }
            } else if ch == quote {
                PromQl::Code
            } else {
                state
            }
        }
        PromQl::Raw { .. } if ch == '`' => PromQl::Code,
        PromQl::Comment if ch == '\n' => PromQl::Code,
        other => other,
    }
}

/// Whether a string opening now is a regex matcher's (`=~ "..."`, `!~ "..."`).
fn after_regex_operator(out: &str) -> bool {
    let before = out.trim_end();
    before.ends_with("=~") || before.ends_with("!~")
}

fn promql_value(state: PromQl, value: &str, out: &mut String) -> Result<(), &'static str> {
    match state {
        PromQl::Quoted { escaped: true, .. } => {
            Err("follows a backslash in the query's string: remove the backslash")
        }
        PromQl::Quoted { quote, regex, .. } => {
            let text = if regex {
                regex_escape(value)
            } else {
                value.to_string()
            };
            for ch in text.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            Ok(())
        }
        PromQl::Raw { regex } => {
            if value.contains('`') {
                return Err(
                    "holds a backtick and stands in a raw (`...`) string: quote the placeholder with \"...\" instead",
                );
            }
            out.push_str(&if regex {
                regex_escape(value)
            } else {
                value.to_string()
            });
            Ok(())
        }
        PromQl::Code => {
            let plain = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':'));
            if !plain {
                return Err(
                    "stands outside a string in the query, where only letters, digits, '_' and ':' are safe: write the placeholder inside quotes, as in version=\"{{version}}\"",
                );
            }
            out.push_str(value);
            Ok(())
        }
        PromQl::Comment => {
            if value.contains(['\n', '\r']) {
                return Err("holds a line break and stands in a comment of the query");
            }
            out.push_str(value);
            Ok(())
        }
    }
}

/// `value` with RE2's metacharacters escaped, so it matches only itself.
fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// RFC 3986's unreserved characters: the only ones that mean the same in every part of a
/// URL.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn url_value(part: UrlPart, value: &str, out: &mut String) -> Result<(), &'static str> {
    match part {
        UrlPart::Start | UrlPart::Authority => {
            if value.is_empty() || !value.bytes().all(unreserved) {
                return Err(
                    "stands in the URL's scheme or host, where only letters, digits, '-', '.', '_' and '~' are safe: move it to the path or the query",
                );
            }
            out.push_str(value);
        }
        UrlPart::Path | UrlPart::Query | UrlPart::Fragment => {
            for byte in value.bytes() {
                if unreserved(byte) {
                    out.push(char::from(byte));
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
        }
    }
    Ok(())
}

/// Whether `template` asks to be run once per version.
pub(crate) fn per_version(template: &str) -> bool {
    template.split("{{").skip(1).any(|rest| {
        rest.split("}}")
            .next()
            .is_some_and(|p| p.trim() == "version")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: Context<'static> = Context {
        release: "shop",
        stable: "v1",
        candidate: "v2",
        interval: Duration::from_secs(90),
    };

    const ERROR_RATE: &str = "sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{version}}\",code_class=\"5xx\"}[{{interval}}])) / sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{version}}\"}[{{interval}}]))";

    fn promql(template: &str, version: &str) -> Result<String, TemplateError> {
        render(template, &CONTEXT, Some(version), Destination::PromQl)
    }

    fn url(template: &str, version: &str) -> Result<String, TemplateError> {
        render(template, &CONTEXT, Some(version), Destination::Url)
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_kept() {
        assert_eq!(
            promql(
                "rate(x{release=\"{{release}}\",version=\"{{ version }}\"}[{{interval}}]) {{other}}",
                "v2"
            ),
            Ok("rate(x{release=\"shop\",version=\"v2\"}[1m30s]) {{other}}".into())
        );
        assert_eq!(
            render(
                "{{stable}}-{{candidate}}-{{",
                &CONTEXT,
                None,
                Destination::PromQl
            ),
            Ok("v1-v2-{{".into())
        );
        assert!(per_version("a{{ version }}b") && !per_version("{{candidate}}"));
    }

    /// The finding: this version reached Prometheus as `version="v2"} or vector(1) #"`,
    /// which made every error query pass. It now stays one label value.
    #[test]
    fn an_injected_version_stays_inside_its_label_value() {
        let rendered = promql(ERROR_RATE, "v2\"} or vector(1) #").expect("quoted");
        assert_eq!(
            rendered,
            "sum(rate(cutover_requests_total{release=\"shop\",version=\"v2\\\"} or vector(1) #\",code_class=\"5xx\"}[1m30s])) / sum(rate(cutover_requests_total{release=\"shop\",version=\"v2\\\"} or vector(1) #\"}[1m30s]))"
        );
        // Read back with PromQL's own rules, the query has the same shape as with a plain
        // version: the injected text is inside the string.
        assert_eq!(
            outside_strings(&rendered),
            outside_strings(&promql(ERROR_RATE, "v2").expect("plain"))
        );
    }

    /// The template's text with the contents of every string removed, as PromQL reads it.
    fn outside_strings(query: &str) -> String {
        let mut out = String::new();
        let mut state = PromQl::Code;
        for ch in query.chars() {
            let next = promql_step(state, ch, &out);
            if state == PromQl::Code || next == PromQl::Code {
                out.push(ch);
            }
            state = next;
        }
        out
    }

    #[test]
    fn backslashes_newlines_and_single_quotes_are_escaped() {
        assert_eq!(
            promql("x{v=\"{{version}}\"}", "a\\b\nc\u{1}"),
            Ok("x{v=\"a\\\\b\\nc\\u0001\"}".into())
        );
        assert_eq!(
            promql("x{v='{{version}}'}", "it's \"x\""),
            Ok("x{v='it\\'s \"x\"'}".into())
        );
        // A quote escaped in the template does not end the string.
        assert_eq!(
            promql("x{v=\"a\\\"{{version}}\"}", "\""),
            Ok("x{v=\"a\\\"\\\"\"}".into())
        );
    }

    #[test]
    fn regex_matchers_match_the_version_only() {
        assert_eq!(
            promql("x{version=~\"{{version}}\"}", "v1.2+b"),
            Ok("x{version=~\"v1\\\\.2\\\\+b\"}".into())
        );
        assert_eq!(
            promql("x{version!~ `{{version}}`}", "v1.2"),
            Ok("x{version!~ `v1\\.2`}".into())
        );
        assert!(promql("x{version=`{{version}}`}", "a`b").is_err());
    }

    #[test]
    fn outside_strings_only_plain_names_are_written() {
        assert_eq!(
            promql("{{release}}_requests_total[{{interval}}]", "v2"),
            Ok("shop_requests_total[1m30s]".into())
        );
        let err = promql("x{version={{version}}}", "v2} or vector(1)").expect_err("refused");
        assert_eq!(err.placeholder, "version");
        assert!(err.to_string().contains("inside quotes"), "{err}");
        assert!(promql("x # {{version}}", "a\nvector(1)").is_err());
        assert_eq!(promql("x # {{version}}", "v2\"}"), Ok("x # v2\"}".into()));
    }

    /// The finding: `v2&admin=1#` added a parameter to a web metric's URL and cut off the
    /// rest of the template. It stays one parameter's value.
    #[test]
    fn an_injected_version_stays_inside_one_url_parameter() {
        let rendered = url(
            "http://stats.internal/q?v={{version}}&window={{interval}}",
            "v2&admin=1#",
        )
        .expect("encoded");
        assert_eq!(
            rendered,
            "http://stats.internal/q?v=v2%26admin%3D1%23&window=1m30s"
        );
        let query = rendered.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let params: Vec<&str> = query.split('&').collect();
        assert_eq!(params, ["v=v2%26admin%3D1%23", "window=1m30s"]);
        assert!(!rendered.contains('#'));
    }

    #[test]
    fn url_paths_keep_a_value_in_one_segment_and_hosts_refuse_reserved_characters() {
        assert_eq!(
            url("https://stats/{{release}}/{{version}}/depth", "../admin?x"),
            Ok("https://stats/shop/..%2Fadmin%3Fx/depth".into())
        );
        assert_eq!(
            url("http://{{release}}.stats:9000/q#{{version}}", "a b"),
            Ok("http://shop.stats:9000/q#a%20b".into())
        );
        let err = url("http://{{version}}.stats/q", "evil.com/").expect_err("refused");
        assert!(err.to_string().contains("host"), "{err}");
        assert!(url("http://stats@{{version}}/", "x@y").is_err());
    }
}
