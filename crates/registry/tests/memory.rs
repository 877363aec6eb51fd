//! Peak-memory check: pulling a 256 MiB blob (or `PODSTORE_RSS_BLOB_MIB` MiB) from the fake registry through a hashing sink
//! keeps the process's peak RSS (VmHWM) growth bounded. Its own test binary, so no other test
//! shares the process's high-water mark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fake_registry as fake;

use std::io;
use std::time::Duration;

use fake::{Auth, Body, Registry, serve};
use podstore_reference::{Digest, Digester};
use podstore_registry::{
    BlobIngest, BlobRef, BlobSink, ClientOptions, EndpointConfig, RegistryClient, SinkBegin,
    SinkError,
};

/// A sink that hashes and counts what it is given, then discards it.
#[derive(Clone)]
struct HashingSink;

struct HashingIngest {
    expected: Digest,
    digester: Digester,
}

impl io::Write for HashingIngest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.digester.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobIngest for HashingIngest {
    fn offset(&self) -> u64 {
        self.digester.bytes()
    }
    fn restart(&mut self) -> io::Result<()> {
        self.digester = self.expected.algorithm().digester();
        Ok(())
    }
    fn commit(self) -> Result<u64, SinkError> {
        let n = self.digester.bytes();
        let actual = self.digester.finish();
        if actual != self.expected {
            return Err(SinkError::DigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        Ok(n)
    }
    fn abort(self) {}
}

impl BlobSink for HashingSink {
    type Ingest = HashingIngest;
    fn begin(
        &self,
        digest: &Digest,
        _size: Option<u64>,
    ) -> Result<SinkBegin<HashingIngest>, SinkError> {
        Ok(SinkBegin::Write(HashingIngest {
            expected: digest.clone(),
            digester: digest.algorithm().digester(),
        }))
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_a_256_mib_blob_keeps_peak_rss_bounded() {
    // PODSTORE_RSS_BLOB_MIB=1024 measures a 1 GiB blob (too slow for every CI run).
    let mib: u64 = std::env::var("PODSTORE_RSS_BLOB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let len: u64 = mib * 1024 * 1024;
    // A 1 MiB + 7 pattern: no two MiB of the body are alike at the same offset.
    let pattern = fake::pattern(0x5eed, (1 << 20) + 7);
    let digest = Digest::parse(&fake::generated_digest(&pattern, len)).unwrap();
    let mut reg = Registry::new(Auth::None);
    reg.blobs
        .insert(digest.to_string(), Body::Generated { len, pattern });
    let server = serve(move |r| reg.handle(r)).await;
    let client = RegistryClient::new(
        EndpointConfig {
            registry: server.host(),
            insecure: true,
            ..EndpointConfig::default()
        },
        ClientOptions {
            stall_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    client.ping().await.unwrap();
    let before = vm_hwm_kib();
    let pulled = client
        .pull_blob(
            "big/blob",
            &BlobRef {
                digest: digest.clone(),
                size: Some(len),
            },
            &HashingSink,
            None,
        )
        .await
        .unwrap();
    let after = vm_hwm_kib();
    assert_eq!(pulled.size, len);
    let growth = after.saturating_sub(before);
    println!(
        "VmHWM before {before} KiB, after {after} KiB, growth {growth} KiB for a {} MiB blob",
        len >> 20
    );
    assert!(
        growth < 32 * 1024,
        "peak RSS grew by {growth} KiB while streaming {len} bytes"
    );
}
