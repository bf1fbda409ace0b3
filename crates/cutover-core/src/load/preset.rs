//! The strategy presets of `strategies/`, embedded into the binary, and `use:` resolution.

use std::sync::Arc;

use super::node::{Node, Value};
use crate::diagnostic::{Code, Diagnostic, FieldPath, did_you_mean};

macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../strategies/",
                $name,
                ".yaml"
            )),
        )
    };
}

/// Every preset: its name (what `use:` names) and its file's text.
pub const PRESETS: &[(&str, &str)] = &[
    preset!("canary-progressive"),
    preset!("canary-linear"),
    preset!("canary-fast"),
    preset!("blue-green"),
    preset!("blue-green-manual"),
    preset!("ab-header"),
];

/// The text of the preset called `name`.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The presets' names, in the order above.
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(name, _)| *name)
}

/// Replaces `spec.strategy` by its preset overlaid with the fields written beside `use:`.
/// Returns the problem if the preset does not exist (the strategy is then left as written).
pub fn resolve(root: &mut Node) -> Result<(), Diagnostic> {
    let strategy_path = FieldPath::of(&["spec", "strategy"]);
    let Some(strategy) = root.get("spec").and_then(|s| s.get("strategy")) else {
        return Ok(());
    };
    let Some(use_entry) = strategy.entry("use") else {
        return Ok(());
    };
    let (Value::Str(name) | Value::Substituted(name)) = &use_entry.value.value else {
        return Ok(());
    };
    let Some(text) = preset_text(name) else {
        let mut d = Diagnostic::error(
            Code::UnknownPreset,
            strategy_path.key("use"),
            use_entry.value.origin.clone(),
            format!("no strategy preset is called '{name}'"),
        );
        d.hint = did_you_mean(name, preset_names()).or_else(|| {
            Some(format!(
                "the presets are: {}",
                preset_names().collect::<Vec<_>>().join(", ")
            ))
        });
        return Err(d);
    };
    let source: Arc<str> = format!("strategies/{name}.yaml").into();
    let preset = super::yaml::parse(&source, text)
        .map_err(|d| d.with_hint("this embedded preset is broken; please report it"))?;
    let Some(mut merged) = preset.get("spec").cloned() else {
        return Ok(());
    };
    merged.merge(strategy.clone());
    if let Some(slot) = root.get_mut("spec").and_then(|s| s.get_mut("strategy")) {
        *slot = merged;
    }
    Ok(())
}
