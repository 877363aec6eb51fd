//! The test harness every crate's integration tests share: deterministic fixture images built
//! offline, and a real `docker-registry` started on 127.0.0.1 (plain, htpasswd basic auth, TLS).
//!
//! It depends on no podstore crate, so any crate may use it as a dev-dependency.

pub mod content;
pub mod fixtures;
pub mod tarball;
