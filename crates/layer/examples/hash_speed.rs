//! SHA-256 throughput of the `sha2` crate (via podstore-reference) against `ring` on this CPU.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

fn main() {
    let data = vec![0x5au8; 256 << 20];
    let t = Instant::now();
    let mut d = podstore_reference::Digester::new(podstore_reference::Algorithm::Sha256);
    for chunk in data.chunks(1 << 20) {
        d.update(chunk);
    }
    let a = d.finish();
    let sha2 = t.elapsed();
    let t = Instant::now();
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for chunk in data.chunks(1 << 20) {
        c.update(chunk);
    }
    let b = c.finish();
    let ring_time = t.elapsed();
    let hex: String = b.as_ref().iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(a.hex(), hex);
    println!(
        "sha2: {:.0} MiB/s, ring: {:.0} MiB/s",
        256.0 / sha2.as_secs_f64(),
        256.0 / ring_time.as_secs_f64()
    );
}
