//! The test harness every crate's integration tests share: deterministic fixture images built
//! offline, and a real `docker-registry` started on 127.0.0.1 (plain, htpasswd basic auth, TLS).
//!
//! It depends on no podstore crate, so any crate may use it as a dev-dependency:
//! `podstore-testkit = { workspace = true }` under `[dev-dependencies]`.
//!
//! - [`fixtures`]: an OCI image layout with `busybox` (gzip, zstd, uncompressed, Docker
//!   schema2), `multilayer` (every tar edge case), `multiarch` (an index), `small-NN` and an
//!   optional scaled `big`, byte-identical on every run; built once per machine and cached
//!   under `/dev/shm` ([`fixtures::FixtureSet::shared`]).
//! - [`registry`]: the Debian `docker-registry` on a random loopback port, plain, with
//!   basic auth ([`registry::USERNAME`]/[`registry::PASSWORD`], an `auth.json`), or TLS
//!   with a test CA (`--cert-dir`); fixtures pushed with their exact digests;
//!   [`registry::RegistrySet::shared`] runs all three over one storage for a whole test binary.
//! - [`fake_registry`]: an in-process fake registry (tokio) for faults a real one won't
//!   produce: lying sizes, endless or trickling bodies, resets, stalls, redirect and 401 loops.
//! - [`tarball`]: the deterministic tar writer, for tests that craft their own layers.
//! - [`http`]: a minimal blocking HTTP/1.1 client (plain HTTP) for probing a registry.
//! - [`peers`]: `podman`, `skopeo` and the `containers-storage` CLI on a given store with this
//!   machine's flags, [`peers::tool_available`], [`peers::shm_tempdir`] and
//!   [`peers::StoreGuard`] (overlay `shutdown` + unmount on drop).
//!
//! Debian packages needed at run time: `docker-registry`, `apache2-utils` (htpasswd),
//! `openssl`, `busybox-static`; the harness's own tests also use `skopeo` and `curl`.
//!
//! # Example
//!
//! ```no_run
//! use podstore_testkit::fixtures::FixtureSet;
//! use podstore_testkit::registry::{RegistryMode, RegistrySet};
//!
//! # fn main() -> anyhow::Result<()> {
//! // Every fixture, built once per machine, as an OCI layout.
//! let fixtures = FixtureSet::shared()?;
//! let busybox = fixtures.image("busybox")?;
//! println!("{} has layers {:?}", fixtures.oci_reference("busybox"), busybox.layers);
//!
//! // Three registries over one storage, every fixture pushed once per test binary.
//! let registries = RegistrySet::shared()?;
//! let auth = registries.get(RegistryMode::BasicAuth);
//! let reference = format!("{}/{}", auth.host_port(), busybox.registry_reference());
//! // e.g. "127.0.0.1:40123/testkit/busybox:latest", credentials in auth.auth_file()?
//! let tls = registries.get(RegistryMode::Tls);
//! let ca = tls.ca_cert_path(); // trust this CA for https://127.0.0.1:<port>
//! # let _ = (reference, ca);
//! # Ok(())
//! # }
//! ```

pub mod content;
pub mod fake_registry;
pub mod fixtures;
pub mod http;
pub mod peers;
pub mod registry;
pub mod tarball;
