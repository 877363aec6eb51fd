//! OCI distribution / Docker registry v2 client: authentication, manifests and indexes, and
//! resumable, verified blob downloads into the blob store.
//!
//! Not built yet: see issue 3.
