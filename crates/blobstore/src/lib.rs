//! Content-addressed blob store.
//!
//! Owns the `blobs/<alg>/<hex>` tree and the `ingest/` area of writes in progress under one root
//! directory. A blob is either absent or complete and verified: it becomes visible only by an
//! atomic rename after its size and digest were checked. Ingests are resumable and singleflight
//! across threads and processes. The same blob format backs OCI image layout directories.
//!
//! Not built yet: see issue 3.
