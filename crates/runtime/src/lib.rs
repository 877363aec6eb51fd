//! CRI-O's RuntimeServer: pod sandboxes and containers created from images, CRI-O's per-container
//! metadata JSON, root filesystem mounts, and per-container work and run directories.
//!
//! Not built yet: see issue 7.
