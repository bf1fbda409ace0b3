//! TEST ONLY: cutover's end-to-end suites, in `tests/`. They run the `cutover` binary
//! (found and kept current by `cutover_test_kit::binary`) with real parts: `cutover serve`,
//! `cutover demo-app` processes, HTTP load, Debian's Prometheus, a real single-node Docker
//! Swarm, and the fake Kubernetes API server. This library is empty.
