//! The labels and annotations cutover writes on Kubernetes objects, and the names of the
//! objects it creates.

/// Label: the controller (`cutover serve --name`) that manages an object. A controller
/// touches only objects carrying its own name.
pub const CONTROLLER: &str = "cutover.io/controller";
/// Label: the release an object belongs to.
pub const RELEASE: &str = "cutover.io/release";
/// Label on the Deployment the release file names: it anchors the release. It carries the
/// slot assignment and the rollout state (see [`SLOTS`], [`STATE`]) and is never deleted,
/// only scaled down, so the release's record outlives every promotion.
pub const ANCHOR: &str = "cutover.io/anchor";
/// Label on the Deployments cutover creates and their pods: `green` or `blue`. Part of
/// their selector, so two colours never select each other's pods.
pub const COLOUR: &str = "cutover.io/colour";
/// Label on the headless Services cutover creates, naming the Deployment whose pods they
/// select; their EndpointSlices inherit it.
pub const DEPLOYMENT: &str = "cutover.io/deployment";
/// Annotation on a Deployment cutover created: the version it runs.
pub const VERSION: &str = "cutover.io/version";
/// Annotation on the anchor: which Deployment plays which slot (JSON, [`crate::slots::Slots`]).
pub const SLOTS: &str = "cutover.io/slots";
/// Annotation on the anchor: the controller's rollout state (JSON).
pub const STATE: &str = "cutover.io/state";
/// Annotation on the anchor: the state's revision, increased by one with every write.
pub const REVISION: &str = "cutover.io/revision";
/// Annotation on the anchor: which controller process wrote the state last, so that a
/// write sent again after a lost reply is told from another process's write of the same
/// text.
pub const WRITER: &str = "cutover.io/writer";

/// The field manager of every server-side apply cutover makes.
pub const FIELD_MANAGER: &str = "cutover";

/// The colour a candidate gets next to a stable Deployment named `stable`, whose release's
/// anchor is `base`: `green` unless the stable one is green.
pub fn candidate_name(base: &str, stable: &str) -> String {
    if stable == format!("{base}-green") {
        format!("{base}-blue")
    } else {
        format!("{base}-green")
    }
}

/// The colour in a Deployment name cutover made (`web-green` → `green`).
pub fn colour_of(name: &str) -> &str {
    name.rsplit('-').next().unwrap_or(name)
}

/// The headless Service that gives `deployment`'s pods an EndpointSlice.
pub fn service_name(deployment: &str) -> String {
    format!("cutover-{deployment}")
}

/// Whether `key` is a label or annotation cutover owns (and so never copies).
pub fn is_ours(key: &str) -> bool {
    key.starts_with("cutover.io/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_alternate() {
        assert_eq!(candidate_name("web", "web"), "web-green");
        assert_eq!(candidate_name("web", "web-green"), "web-blue");
        assert_eq!(candidate_name("web", "web-blue"), "web-green");
        assert_eq!(colour_of("my-web-blue"), "blue");
        assert_eq!(service_name("web-blue"), "cutover-web-blue");
    }
}
