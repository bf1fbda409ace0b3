//! cutover's Kubernetes backend.
//!
//! [`KubeBackend`] drives releases of Deployments in one namespace: the first release
//! adopts the Deployment its file names, candidates are Deployments of their own made by
//! server-side apply (field manager `cutover`), the proxy's endpoints come from watched
//! EndpointSlices, and the release's record lives in the adopted Deployment's annotations.
//! [`lease`] elects one leader among controller replicas; [`crd`] and [`resources`] let
//! releases be applied as `Release` objects.
//!
//! Only this crate depends on kube.

mod backend;
pub mod crd;
mod endpoints;
mod error;
mod keys;
pub mod lease;
mod readiness;
pub mod release_objects;
pub mod resources;
mod slots;
mod template;

pub use backend::{ConnectError, KubeBackend};
pub use lease::{LeaderElector, LeaseConfig, LeaseError};
