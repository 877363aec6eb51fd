//! CRI-O's ImageServer: resolve short names, pull images into the store, list them, report their
//! status, untag and remove them.
//!
//! Not built yet: see issue 6.
