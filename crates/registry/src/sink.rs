//! The boundary between blob downloads and blob storage: [`BlobSink`] (where a blob goes) and
//! [`BlobIngest`] (one resumable write in progress), plus [`MemorySink`], an in-memory sink for
//! small blobs and tests. `podstore_blobstore::BlobStore` implements the same traits
//! (adapter in `store.rs`).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use podstore_reference::Digest;

/// Why a sink refused or failed a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The data written does not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the data written.
        actual: Digest,
    },
    /// The data written has another size than expected.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Expected size.
        expected: u64,
        /// Bytes written.
        actual: u64,
    },
    /// Any other failure (I/O, locking), as text naming the path or digest.
    #[error("{0}")]
    Other(String),
}

/// What [`BlobSink::begin`] found.
#[derive(Debug)]
pub enum SinkBegin<W> {
    /// The blob is already stored (and verified); its size.
    Present(u64),
    /// Write it through this ingest (which may already hold a prefix: see [`BlobIngest::offset`]).
    Write(W),
}

/// One write in progress. Dropping it keeps the partial data for a later resume.
pub trait BlobIngest: io::Write + Send + 'static {
    /// How many bytes the ingest already holds (the resume point).
    fn offset(&self) -> u64;
    /// Discards everything written so far (the server ignored a `Range` request).
    fn restart(&mut self) -> io::Result<()>;
    /// Verifies size and digest and makes the blob visible; returns its size.
    fn commit(self) -> Result<u64, SinkError>;
    /// Removes the ingest and its data.
    fn abort(self);
}

/// Where downloaded blobs go. Cheap to clone (a handle); `begin` may block (it runs on tokio's
/// blocking pool).
pub trait BlobSink: Clone + Send + Sync + 'static {
    /// The ingest type.
    type Ingest: BlobIngest;
    /// Starts (or resumes) storing the blob `digest` of `size` bytes, if known.
    fn begin(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<SinkBegin<Self::Ingest>, SinkError>;
}

#[derive(Default)]
struct MemoryState {
    blobs: HashMap<Digest, Vec<u8>>,
    partial: HashMap<Digest, Vec<u8>>,
}

/// An in-memory [`BlobSink`] with resumable partial writes, for small blobs and tests.
#[derive(Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<MemoryState>>,
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (blobs, partial) = self
            .state
            .lock()
            .map(|s| (s.blobs.len(), s.partial.len()))
            .unwrap_or_default();
        f.debug_struct("MemorySink")
            .field("blobs", &blobs)
            .field("partial", &partial)
            .finish()
    }
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// A committed blob's bytes.
    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.state.lock().ok()?.blobs.get(digest).cloned()
    }

    /// The digests of all committed blobs.
    pub fn committed(&self) -> Vec<Digest> {
        self.state
            .lock()
            .map(|s| s.blobs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Length of the partial ingest kept for `digest`, if any.
    pub fn partial_len(&self, digest: &Digest) -> Option<u64> {
        self.state
            .lock()
            .ok()?
            .partial
            .get(digest)
            .map(|p| p.len() as u64)
    }
}

/// An ingest of [`MemorySink`].
#[derive(Debug)]
pub struct MemoryIngest {
    sink: MemorySink,
    digest: Digest,
    size: Option<u64>,
    data: Vec<u8>,
    done: bool,
}

impl io::Write for MemoryIngest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobIngest for MemoryIngest {
    fn offset(&self) -> u64 {
        self.data.len() as u64
    }
    fn restart(&mut self) -> io::Result<()> {
        self.data.clear();
        Ok(())
    }
    fn commit(mut self) -> Result<u64, SinkError> {
        self.done = true;
        let data = std::mem::take(&mut self.data);
        let actual_size = data.len() as u64;
        if let Some(expected) = self.size {
            if expected != actual_size {
                return Err(SinkError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: actual_size,
                });
            }
        }
        let actual = Digest::of(self.digest.algorithm(), &data);
        if actual != self.digest {
            return Err(SinkError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let mut state = self
            .sink
            .state
            .lock()
            .map_err(|_| SinkError::Other("memory sink lock poisoned".to_owned()))?;
        state.blobs.insert(self.digest.clone(), data);
        Ok(actual_size)
    }
    fn abort(mut self) {
        self.done = true;
    }
}

impl Drop for MemoryIngest {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut state) = self.sink.state.lock() {
                state
                    .partial
                    .insert(self.digest.clone(), std::mem::take(&mut self.data));
            }
        }
    }
}

impl BlobSink for MemorySink {
    type Ingest = MemoryIngest;
    fn begin(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<SinkBegin<MemoryIngest>, SinkError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| SinkError::Other("memory sink lock poisoned".to_owned()))?;
        if let Some(b) = state.blobs.get(digest) {
            return Ok(SinkBegin::Present(b.len() as u64));
        }
        let data = state.partial.remove(digest).unwrap_or_default();
        Ok(SinkBegin::Write(MemoryIngest {
            sink: self.clone(),
            digest: digest.clone(),
            size,
            data,
            done: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn memory_sink_resumes_and_verifies() {
        let sink = MemorySink::new();
        let d = Digest::sha256_of(b"hello world");
        let SinkBegin::Write(mut w) = sink.begin(&d, Some(11)).unwrap() else {
            panic!()
        };
        w.write_all(b"hello").unwrap();
        drop(w);
        assert_eq!(sink.partial_len(&d), Some(5));
        let SinkBegin::Write(mut w) = sink.begin(&d, Some(11)).unwrap() else {
            panic!()
        };
        assert_eq!(w.offset(), 5);
        w.write_all(b" world").unwrap();
        assert_eq!(w.commit().unwrap(), 11);
        assert!(matches!(
            sink.begin(&d, None).unwrap(),
            SinkBegin::Present(11)
        ));
        let bad = Digest::sha256_of(b"other");
        let SinkBegin::Write(mut w) = sink.begin(&bad, None).unwrap() else {
            panic!()
        };
        w.write_all(b"nope").unwrap();
        assert!(matches!(w.commit(), Err(SinkError::DigestMismatch { .. })));
        assert_eq!(sink.committed(), vec![d]);
        assert_eq!(sink.partial_len(&bad), None);
    }
}
