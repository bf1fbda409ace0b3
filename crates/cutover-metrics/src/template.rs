//! `{{release}}`, `{{stable}}`, `{{candidate}}`, `{{interval}}` and `{{version}}` in queries
//! and URLs.

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

/// Replaces the placeholders of `template`; `version` fills `{{version}}` (a query or URL
/// that has it is run once per version). `{{interval}}` is written in PromQL's range
/// syntax (`30s`, `2m`), which is also how cutover writes durations.
pub fn render(template: &str, context: &Context<'_>, version: Option<&str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let value = match after[..end].trim() {
            "release" => Some(context.release.to_string()),
            "stable" => Some(context.stable.to_string()),
            "candidate" => Some(context.candidate.to_string()),
            "interval" => Some(context.interval.to_string()),
            "version" => version.map(str::to_string),
            _ => None,
        };
        match value {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_kept() {
        let context = Context {
            release: "shop",
            stable: "v1",
            candidate: "v2",
            interval: Duration::from_secs(90),
        };
        assert_eq!(
            render(
                "rate(x{release=\"{{release}}\",version=\"{{ version }}\"}[{{interval}}]) {{other}}",
                &context,
                Some("v2")
            ),
            "rate(x{release=\"shop\",version=\"v2\"}[1m30s]) {{other}}"
        );
        assert_eq!(
            render("{{stable}}-{{candidate}}-{{", &context, None),
            "v1-v2-{{"
        );
        assert!(per_version("a{{ version }}b") && !per_version("{{candidate}}"));
    }
}
