//! What one document may cost: the size of its text, how many values it expands to, how
//! many bytes of text those values hold, and how deep it nests.
//!
//! `cutover lint` runs on untrusted pull requests and the controller's API accepts release
//! files, so a file is measured against [`LIMITS`] before any tree is built from it. YAML
//! is measured from the parser's events: an alias counts the whole value its anchor names,
//! every time it is used, and a tag counts as a value of its own, so a "billion laughs"
//! file (`&a !t [x, x, ...]`, nine levels of ten) is refused at the alias that passes the
//! budget, a few dozen events in, without building any of it. TOML has no aliases; its
//! tree is measured as it is converted. JSON is read as YAML (it is a subset), so it is
//! held to the same limits.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, Span, Tag};

use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin};

/// The limits one document is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest text read, in bytes.
    pub file_bytes: usize,
    /// Most values (scalars, lists, maps, map keys, tags) the document may expand to,
    /// counting what an alias stands for each time it is used.
    pub nodes: usize,
    /// Most bytes of text (scalars, keys, tags) the document may expand to, counting what
    /// an alias stands for each time it is used.
    pub expanded_bytes: usize,
    /// Deepest nesting of lists and maps.
    pub depth: usize,
}

/// The limits every release file, strategy preset and settings file is held to. A real
/// release is a few hundred values and a few kilobytes; these leave room for a hundred
/// times that, and bound what a hostile file can make the loader hold to tens of
/// megabytes.
pub const LIMITS: Limits = Limits {
    file_bytes: 1024 * 1024,
    nodes: 20_000,
    expanded_bytes: 4 * 1024 * 1024,
    depth: 64,
};

/// Which limit a document went past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// The text is larger than [`Limits::file_bytes`].
    FileBytes,
    /// More values than [`Limits::nodes`].
    Nodes,
    /// More bytes of text than [`Limits::expanded_bytes`].
    ExpandedBytes,
    /// Deeper than [`Limits::depth`].
    Depth,
}

impl Exceeded {
    /// The message of the diagnostic, naming the limit.
    fn message(self, limits: &Limits) -> String {
        match self {
            Exceeded::FileBytes => format!(
                "the file is larger than the {} bytes a release file may have (file size budget)",
                limits.file_bytes
            ),
            Exceeded::Nodes => format!(
                "the document expands to more than {} values (node budget; every use of an alias counts what its anchor holds, tags count too)",
                limits.nodes
            ),
            Exceeded::ExpandedBytes => format!(
                "the document expands to more than {} bytes of text (expanded size budget; every use of an alias counts what its anchor holds)",
                limits.expanded_bytes
            ),
            Exceeded::Depth => format!(
                "the document nests more than {} levels deep (depth budget)",
                limits.depth
            ),
        }
    }

    /// How to fix it.
    fn hint(self) -> &'static str {
        match self {
            Exceeded::FileBytes => {
                "a release file is a few kilobytes: split it, or move long scripts out of hooks into files"
            }
            Exceeded::Nodes | Exceeded::ExpandedBytes => {
                "write repeated parts out once instead of nesting anchors and aliases, or split the file"
            }
            Exceeded::Depth => "flatten the document: no release field nests this deep",
        }
    }

    /// The diagnostic for a document that went past this limit at `origin`.
    pub fn diagnostic(self, limits: &Limits, origin: Origin) -> Diagnostic {
        Diagnostic::error(
            Code::Syntax,
            FieldPath::root(),
            origin,
            self.message(limits),
        )
        .with_hint(self.hint())
    }
}

/// Refuses a text larger than the file budget, before anything parses it.
pub fn check_file_size(source: &Arc<str>, text: &str, limits: &Limits) -> Result<(), Diagnostic> {
    if text.len() > limits.file_bytes {
        return Err(Exceeded::FileBytes.diagnostic(
            limits,
            Origin::File {
                source: source.clone(),
                line: 1,
                column: 1,
            },
        ));
    }
    Ok(())
}

/// A running count of what a document expands to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Values counted so far.
    pub nodes: usize,
    /// Bytes of text counted so far.
    pub bytes: usize,
    /// The deepest nesting seen.
    pub depth: usize,
}

impl Tally {
    /// Adds `nodes` values and `bytes` bytes, failing once a budget is passed.
    pub fn add(&mut self, nodes: usize, bytes: usize, limits: &Limits) -> Result<(), Exceeded> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > limits.nodes {
            Err(Exceeded::Nodes)
        } else if self.bytes > limits.expanded_bytes {
            Err(Exceeded::ExpandedBytes)
        } else {
            Ok(())
        }
    }

    /// Notes nesting `depth` deep, failing past the depth budget.
    pub fn enter(&mut self, depth: usize, limits: &Limits) -> Result<(), Exceeded> {
        self.depth = self.depth.max(depth);
        if depth > limits.depth {
            Err(Exceeded::Depth)
        } else {
            Ok(())
        }
    }
}

/// What a YAML document went past, where, and how much had been counted by then.
#[derive(Clone, Debug, PartialEq)]
pub struct YamlOverBudget {
    /// The diagnostic to report (file, line, column, the budget, a hint).
    pub diagnostic: Diagnostic,
    /// What had been counted when the measurement stopped: it stops at the first event
    /// past a budget, so this stays within one anchor's worth of the budget.
    pub tally: Tally,
}

/// Measures a YAML text from its parser events, without building anything, and refuses
/// it at the first event that passes a budget. Syntax errors stop the measurement quietly:
/// the loader reports them with its own message. Holds one small record per anchor and
/// per open list or map, so it runs in memory bounded by the text's size.
pub fn measure_yaml(
    source: &Arc<str>,
    text: &str,
    limits: &Limits,
) -> Result<Tally, Box<YamlOverBudget>> {
    /// One open list or map: its anchor and what it holds so far.
    struct Open {
        anchor: usize,
        nodes: usize,
        bytes: usize,
    }
    let mut tally = Tally::default();
    // What each anchor stands for: its values and bytes.
    let mut anchors: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    let over = |exceeded: Exceeded, span: &Span, tally: Tally| {
        Box::new(YamlOverBudget {
            diagnostic: exceeded.diagnostic(
                limits,
                yaml_origin(source, span.start.line(), span.start.col()),
            ),
            tally,
        })
    };
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            break;
        };
        // The values and bytes this event adds, and the anchor it defines (scalars).
        let (nodes, bytes, anchor) = match &event {
            Event::Scalar(value, _, anchor, tag) => {
                let (tag_nodes, tag_bytes) = tag_cost(tag.as_deref());
                (1 + tag_nodes, value.len() + tag_bytes, *anchor)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                let (tag_nodes, tag_bytes) = tag_cost(tag.as_deref());
                let depth = open.len() + 1;
                if let Err(e) = tally.enter(depth, limits) {
                    return Err(over(e, &span, tally));
                }
                if let Err(e) = tally.add(1 + tag_nodes, tag_bytes, limits) {
                    return Err(over(e, &span, tally));
                }
                open.push(Open {
                    anchor: *anchor,
                    nodes: 1 + tag_nodes,
                    bytes: tag_bytes,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(closed) = open.pop() else {
                    break;
                };
                if closed.anchor > 0 {
                    anchors.insert(closed.anchor, (closed.nodes, closed.bytes));
                }
                if let Some(parent) = open.last_mut() {
                    parent.nodes = parent.nodes.saturating_add(closed.nodes);
                    parent.bytes = parent.bytes.saturating_add(closed.bytes);
                }
                continue;
            }
            Event::Alias(id) => {
                let (nodes, bytes) = anchors.get(id).copied().unwrap_or((1, 0));
                (nodes, bytes, 0)
            }
            _ => continue,
        };
        if let Err(e) = tally.add(nodes, bytes, limits) {
            return Err(over(e, &span, tally));
        }
        if anchor > 0 {
            anchors.insert(anchor, (nodes, bytes));
        }
        if let Some(parent) = open.last_mut() {
            parent.nodes = parent.nodes.saturating_add(nodes);
            parent.bytes = parent.bytes.saturating_add(bytes);
        }
    }
    Ok(tally)
}

/// A tag counts as one value of its own and its text.
fn tag_cost(tag: Option<&Tag>) -> (usize, usize) {
    tag.map_or((0, 0), |t| (1, t.handle.len() + t.suffix.len()))
}

/// The origin of a YAML position (saphyr's lines are 1-based, columns 0-based).
pub fn yaml_origin(source: &Arc<str>, line: usize, col: usize) -> Origin {
    Origin::File {
        source: source.clone(),
        line: u32::try_from(line.max(1)).unwrap_or(u32::MAX),
        column: u32::try_from(col + 1).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The finding: nine levels of ten, each level an anchored, tagged list of ten
    /// aliases of the level below. It expands to a billion values.
    fn tagged_bomb() -> String {
        let mut text = String::from("a0: &a0 !t [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=9 {
            let below = format!("*a{}", level - 1);
            let items = [below.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} !t [{items}]\n"));
        }
        text
    }

    #[test]
    fn the_tagged_billion_laughs_stops_within_one_anchor_of_the_budget() {
        let source: Arc<str> = "bomb.yaml".into();
        let over = measure_yaml(&source, &tagged_bomb(), &LIMITS).expect_err("refused");
        assert_eq!(over.diagnostic.code, Code::Syntax);
        assert!(
            over.diagnostic.message.contains("node budget"),
            "{}",
            over.diagnostic.message
        );
        // Level k holds 2 + 10 * (level k-1) values (the list, its tag, ten aliases), so
        // level 3 holds 12222: the first alias on line 5 (level 4) passes the budget and
        // the count stops there, at most one anchor's worth past the budget.
        assert!(
            matches!(
                over.diagnostic.origin,
                Origin::File {
                    line: 5,
                    column: 13,
                    ..
                }
            ),
            "{:?}",
            over.diagnostic.origin
        );
        assert!(over.tally.nodes > LIMITS.nodes);
        assert!(
            over.tally.nodes <= LIMITS.nodes + 12_222,
            "{:?}",
            over.tally
        );
    }

    #[test]
    fn aliases_of_long_strings_count_their_bytes_each_time() {
        let source: Arc<str> = "big.yaml".into();
        let long = "y".repeat(64 * 1024);
        let mut text = format!("a: &s '{long}'\nb: [");
        text.push_str(&vec!["*s"; 100].join(", "));
        text.push_str("]\n");
        let over = measure_yaml(&source, &text, &LIMITS).expect_err("refused");
        assert!(over.diagnostic.message.contains("expanded size budget"));
        assert!(over.tally.bytes <= LIMITS.expanded_bytes + long.len());
    }

    #[test]
    fn tags_and_keys_count_as_values() {
        let source: Arc<str> = "r.yaml".into();
        let tally = measure_yaml(&source, "a: !t [x, y]\n", &LIMITS).expect("small");
        // the root map, key a, the list, its tag, x, y
        assert_eq!(tally.nodes, 6);
        assert_eq!(tally.depth, 2);
    }

    #[test]
    fn depth_is_refused_before_anything_is_built() {
        let source: Arc<str> = "deep.yaml".into();
        let text = format!("a:\n{}x\n", "- ".repeat(10_000));
        let over = measure_yaml(&source, &text, &LIMITS).expect_err("refused");
        assert!(over.diagnostic.message.contains("depth budget"));
        assert_eq!(over.tally.depth, LIMITS.depth + 1);
    }
}
