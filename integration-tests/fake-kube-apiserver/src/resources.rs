//! The resources this server serves: where they live in the URL space and what they are.

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResourceType {
    /// API group; empty for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural lower-case name, as in URLs.
    pub plural: &'static str,
    /// Kind, as in objects.
    pub kind: &'static str,
    /// Singular lower-case name.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Subresources served (`status`, `scale`).
    pub subresources: &'static [&'static str],
    /// Short names for discovery.
    pub short_names: &'static [&'static str],
    /// Served from a CustomResourceDefinition: no strategic merge patch (415), and no
    /// defaulting or validation beyond the object's name.
    pub custom: bool,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for core.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for core: how error messages name the resource.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Verbs every resource answers (deletecollection is not served).
pub(crate) fn verbs() -> &'static [&'static str] {
    VERBS
}

pub(crate) const PODS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    singular: "pod",
    namespaced: true,
    subresources: &["status"],
    short_names: &["po"],
    custom: false,
};
pub(crate) const SERVICES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "services",
    kind: "Service",
    singular: "service",
    namespaced: true,
    subresources: &["status"],
    short_names: &["svc"],
    custom: false,
};
pub(crate) const CONFIGMAPS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "configmaps",
    kind: "ConfigMap",
    singular: "configmap",
    namespaced: true,
    subresources: &[],
    short_names: &["cm"],
    custom: false,
};
pub(crate) const NAMESPACES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    singular: "namespace",
    namespaced: false,
    subresources: &["status"],
    short_names: &["ns"],
    custom: false,
};
pub(crate) const DEPLOYMENTS: ResourceType = ResourceType {
    group: "apps",
    version: "v1",
    plural: "deployments",
    kind: "Deployment",
    singular: "deployment",
    namespaced: true,
    subresources: &["status", "scale"],
    short_names: &["deploy"],
    custom: false,
};
pub(crate) const ENDPOINTSLICES: ResourceType = ResourceType {
    group: "discovery.k8s.io",
    version: "v1",
    plural: "endpointslices",
    kind: "EndpointSlice",
    singular: "endpointslice",
    namespaced: true,
    subresources: &[],
    short_names: &[],
    custom: false,
};
pub(crate) const LEASES: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    singular: "lease",
    namespaced: true,
    subresources: &[],
    short_names: &[],
    custom: false,
};

/// apiextensions.k8s.io/v1 `customresourcedefinitions`: stored (with an initial status
/// saying the names are accepted and the definition is established) but otherwise inert:
/// what custom resources are served does not depend on them.
pub(crate) const CUSTOMRESOURCEDEFINITIONS: ResourceType = ResourceType {
    group: "apiextensions.k8s.io",
    version: "v1",
    plural: "customresourcedefinitions",
    kind: "CustomResourceDefinition",
    singular: "customresourcedefinition",
    namespaced: false,
    subresources: &["status"],
    short_names: &["crd", "crds"],
    custom: false,
};
/// cutover's custom resource, cutover.dev/v1 `releases`, served as if its
/// CustomResourceDefinition were installed (always, whether or not one was created), with
/// the `status` subresource.
pub(crate) const RELEASES: ResourceType = ResourceType {
    group: "cutover.dev",
    version: "v1",
    plural: "releases",
    kind: "Release",
    singular: "release",
    namespaced: true,
    subresources: &["status"],
    short_names: &[],
    custom: true,
};

/// Every served resource type.
pub(crate) const ALL: &[ResourceType] = &[
    PODS,
    SERVICES,
    CONFIGMAPS,
    NAMESPACES,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    LEASES,
    CUSTOMRESOURCEDEFINITIONS,
    RELEASES,
];

/// The patch content types a resource accepts, as a real server lists them in a 415.
pub(crate) fn patch_types(rt: &ResourceType) -> &'static [&'static str] {
    if rt.custom {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
    } else {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ]
    }
}

/// The type served at `group`/`version`/`plural`.
pub(crate) fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .find(|rt| rt.group == group && rt.version == version && rt.plural == plural)
}

/// The type of an object with this `apiVersion` and `kind`.
pub(crate) fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .find(|rt| rt.api_version() == api_version && rt.kind == kind)
}

/// The type with this plural name (`deployments`).
pub(crate) fn by_plural(plural: &str) -> Option<&'static ResourceType> {
    ALL.iter().find(|rt| rt.plural == plural)
}
