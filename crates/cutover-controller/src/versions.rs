//! The versions a rollout names and the release an `undo` submits: the new version's
//! name (`spec.version`, the image's tag, or a hash), the name of the version serving now,
//! what that version runs (kept so that `undo` can go back to it), and the release that
//! goes back. Pure functions of the release and the last record.

use cutover_core::rollout::Rollout;
use cutover_core::spec::{
    Backend as BackendSpec, CanaryStrategy, LocalSlot, Release, StrategySpec,
};

use crate::{ControllerError, ReleaseRecord, VersionDefinition};

/// The name of the version serving now, for a backend that keeps none: the version the
/// last rollout left serving, else `spec.stableVersion`, else a hash of the stable slot.
pub(crate) fn stable_version_hint(release: &Release, previous: Option<&ReleaseRecord>) -> String {
    if let Some(previous) = previous
        && let Ok(rollout) = Rollout::from_json(previous.rollout.clone())
    {
        return match rollout.outcome() {
            Some(cutover_core::rollout::Outcome::Promoted) => previous.candidate_version.clone(),
            _ => previous.stable_version.clone(),
        };
    }
    if let Some(version) = &release.spec.stable_version {
        return version.clone();
    }
    match &release.spec.backend {
        BackendSpec::Local(target) => short_hash("stable", &target.stable),
        _ => "stable".to_string(),
    }
}

/// What the version serving at the start of a rollout runs, if known: the candidate of
/// the last rollout if it promoted, what the last rollout knew if it rolled back, and on
/// the local backend's first release the file's own stable slot.
pub(crate) fn stable_definition(
    release: &Release,
    previous: Option<&ReleaseRecord>,
    serving: &str,
) -> Option<VersionDefinition> {
    let known = match previous {
        Some(previous) => match Rollout::from_json(previous.rollout.clone())
            .ok()
            .and_then(|r| r.outcome().cloned())
        {
            Some(cutover_core::rollout::Outcome::Promoted) => Some(VersionDefinition {
                version: previous.candidate_version.clone(),
                image: previous.release.spec.image.clone(),
                local: match &previous.release.spec.backend {
                    BackendSpec::Local(target) => Some(target.candidate.clone()),
                    _ => None,
                },
            }),
            _ => previous.stable_definition.clone(),
        },
        None => match &release.spec.backend {
            BackendSpec::Local(target) => Some(VersionDefinition {
                version: serving.to_string(),
                image: None,
                local: Some(target.stable.clone()),
            }),
            _ => None,
        },
    };
    known.filter(|d| d.version == serving)
}

/// The release that rolls `record`'s promoted candidate back to `previous`: the same
/// release with the previous version as its candidate; with `full`, no steps.
pub(crate) fn undo_release(
    record: &ReleaseRecord,
    previous: VersionDefinition,
    full: bool,
) -> Result<Release, ControllerError> {
    let name = &record.release.metadata.name;
    let mut release = record.release.clone();
    release.spec.version = Some(previous.version.clone());
    release.spec.stable_version = Some(record.candidate_version.clone());
    match &mut release.spec.backend {
        BackendSpec::Local(target) => {
            let Some(local) = previous.local else {
                return Err(ControllerError::Conflict(format!(
                    "cannot undo '{name}': the local slot of {} is not known",
                    previous.version
                )));
            };
            target.stable = target.candidate.clone();
            target.candidate = local;
        }
        _ => {
            let Some(image) = previous.image else {
                return Err(ControllerError::Conflict(format!(
                    "cannot undo '{name}': the image of {} is not known; release it again with `cutover run` and a file that names its image",
                    previous.version
                )));
            };
            release.spec.image = Some(image);
        }
    }
    if full {
        let scale_down_delay = match (
            &release.spec.strategy.canary,
            &release.spec.strategy.blue_green,
        ) {
            (Some(canary), _) => canary.scale_down_delay,
            (None, Some(blue_green)) => blue_green.scale_down_delay,
            (None, None) => cutover_core::spec::BlueGreenStrategy::default().scale_down_delay,
        };
        release.spec.strategy = StrategySpec {
            preset: None,
            canary: Some(CanaryStrategy {
                steps: Vec::new(),
                scale_down_delay,
            }),
            blue_green: None,
            progress_deadline: release.spec.strategy.progress_deadline,
        };
    }
    Ok(release)
}

/// The new version's name: `spec.version`, else the image's tag, else a hash of the
/// image (an untagged image's name holds `/` and `:`, outside the version's character set,
/// which metric labels and queries rely on), else a hash of the candidate slot.
pub(crate) fn candidate_version(release: &Release) -> String {
    if let Some(version) = &release.spec.version {
        return version.clone();
    }
    if let Some(image) = &release.spec.image {
        return match cutover_core::spec::image_tag(image) {
            Some(tag) => tag.to_string(),
            None => format!("image-{:08x}", fnv32(image)),
        };
    }
    match &release.spec.backend {
        BackendSpec::Local(target) => short_hash("candidate", &target.candidate),
        _ => "candidate".to_string(),
    }
}

/// `prefix-` and eight hex digits of an FNV-1a hash of the slot's definition.
pub(crate) fn short_hash(prefix: &str, slot: &LocalSlot) -> String {
    let text = serde_json::to_string(slot).unwrap_or_default();
    format!("{prefix}-{:08x}", fnv32(&text))
}

/// The low 32 bits of the FNV-1a hash of `text`: a short name that stays the same across
/// restarts.
pub(crate) fn fnv32(text: &str) -> u32 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash & 0xffff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Controller;
    use crate::clock::Clock;
    use cutover_core::plan::Plan;

    #[test]
    fn an_image_tag_names_the_version_and_a_registry_port_does_not() {
        let mut release = Controller::parse(
            "r.yaml",
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: shop}\nspec:\n  backend: {swarm: {service: shop, network: net}}\n  image: registry:5000/shop:v7\n  port: 80\n  strategy: {canary: {steps: [{setWeight: 50}]}}\n",
        )
        .expect("valid");
        assert_eq!(candidate_version(&release), "v7");
        // An untagged image's name holds ':' and '/': the version is a hash of it, within
        // the version character set that metric labels and queries rely on.
        release.spec.image = Some("registry:5000/shop".into());
        let name = candidate_version(&release);
        assert!(
            name.starts_with("image-") && name.len() == "image-".len() + 8,
            "{name}"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{name}"
        );
        release.spec.version = Some("2.1".into());
        assert_eq!(candidate_version(&release), "2.1");
    }

    fn record(release: Release, stable: &str, candidate: &str) -> ReleaseRecord {
        ReleaseRecord {
            release,
            stable_version: stable.into(),
            candidate_version: candidate.into(),
            rollout: serde_json::Value::Null,
            earlier: Vec::new(),
            stable_definition: None,
        }
    }

    #[test]
    fn an_undo_rolls_the_previous_image_out_and_full_drops_the_steps() {
        let release = Controller::parse(
            "r.yaml",
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: shop}\nspec:\n  backend: {swarm: {service: shop, network: net}}\n  image: shop:v2\n  port: 80\n  strategy: {canary: {scaleDownDelay: 7s, steps: [{setWeight: 50}, {pause: {}}]}}\n",
        )
        .expect("valid");
        let promoted = record(release, "v1", "v2");
        // Adopted at the first release: v1's image is not known, and undo says so.
        let unknown = VersionDefinition {
            version: "v1".into(),
            image: None,
            local: None,
        };
        let refused = undo_release(&promoted, unknown, false).expect_err("no image");
        assert!(
            refused.to_string().contains("image of v1 is not known"),
            "{refused}"
        );
        let known = VersionDefinition {
            version: "v1".into(),
            image: Some("shop:v1".into()),
            local: None,
        };
        let undo = undo_release(&promoted, known.clone(), false).expect("an undo");
        assert_eq!(undo.spec.image.as_deref(), Some("shop:v1"));
        assert_eq!(candidate_version(&undo), "v1");
        assert_eq!(
            undo.spec.strategy, promoted.release.spec.strategy,
            "the same strategy"
        );
        let full = undo_release(&promoted, known, true).expect("a full undo");
        let canary = full.spec.strategy.canary.as_ref().expect("a canary");
        assert!(canary.steps.is_empty(), "no steps: straight to it");
        assert_eq!(
            canary.scale_down_delay,
            cutover_core::Duration::from_secs(7)
        );
        assert_eq!(
            Plan::from_release(&full).expect("a plan").steps.len(),
            0,
            "nothing between deploy and promotion"
        );
    }

    #[test]
    fn the_stable_definition_is_carried_over_and_none_for_an_adopted_service() {
        let release = Controller::parse(
            "r.yaml",
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: shop}\nspec:\n  backend: {swarm: {service: shop, network: net}}\n  image: shop:v2\n  port: 80\n  strategy: {canary: {steps: [{setWeight: 50}]}}\n",
        )
        .expect("valid");
        assert_eq!(
            stable_definition(&release, None, "v1"),
            None,
            "adopted: unknown"
        );
        let mut first = record(release.clone(), "v1", "v2");
        // Not promoted: what served before it is carried over (nothing, here).
        first.rollout = Rollout::new(
            Plan::from_release(&release).expect("plan"),
            Clock::Wall.now(),
        )
        .to_json();
        assert_eq!(stable_definition(&release, Some(&first), "v1"), None);
        first.stable_definition = Some(VersionDefinition {
            version: "v1".into(),
            image: Some("shop:v1".into()),
            local: None,
        });
        assert_eq!(
            stable_definition(&release, Some(&first), "v1").and_then(|d| d.image),
            Some("shop:v1".into()),
            "without a promotion the same version serves"
        );
        assert_eq!(
            stable_definition(&release, Some(&first), "v9"),
            None,
            "never a definition of another version"
        );
    }

    #[test]
    fn local_slots_without_names_get_stable_distinct_hashes() {
        let a = short_hash(
            "candidate",
            &LocalSlot::Addresses(vec!["127.0.0.1:1".into()]),
        );
        let b = short_hash(
            "candidate",
            &LocalSlot::Addresses(vec!["127.0.0.1:2".into()]),
        );
        assert_ne!(a, b);
        assert_eq!(
            a,
            short_hash(
                "candidate",
                &LocalSlot::Addresses(vec!["127.0.0.1:1".into()])
            )
        );
        assert!(a.starts_with("candidate-") && a.len() == "candidate-".len() + 8);
    }
}
