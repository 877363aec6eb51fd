//! The adapter that lets blob downloads write straight into `podstore_blobstore::BlobStore`:
//! [`BlobSink`] for `BlobStore`, [`BlobIngest`] for its `IngestWriter` (resumable, verified at
//! commit, singleflight across processes).

use std::io;

use podstore_blobstore::{Begin, BlobError, BlobStore, IngestWriter};
use podstore_reference::Digest;

use crate::sink::{BlobIngest, BlobSink, SinkBegin, SinkError};

fn sink_error(e: BlobError) -> SinkError {
    match e {
        BlobError::DigestMismatch { expected, actual } => {
            SinkError::DigestMismatch { expected, actual }
        }
        BlobError::SizeMismatch {
            digest,
            expected,
            actual,
        } => SinkError::SizeMismatch {
            digest,
            expected,
            actual,
        },
        other => SinkError::Other(other.to_string()),
    }
}

impl BlobIngest for IngestWriter {
    fn offset(&self) -> u64 {
        IngestWriter::offset(self)
    }

    fn restart(&mut self) -> io::Result<()> {
        IngestWriter::restart(self).map_err(io::Error::other)
    }

    fn commit(self) -> Result<u64, SinkError> {
        IngestWriter::commit(self)
            .map(|info| info.size)
            .map_err(sink_error)
    }

    fn abort(self) {
        IngestWriter::abort(self);
    }
}

impl BlobSink for BlobStore {
    type Ingest = IngestWriter;

    fn begin(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<SinkBegin<IngestWriter>, SinkError> {
        match BlobStore::begin(self, digest, size).map_err(sink_error)? {
            Begin::Present(info) => Ok(SinkBegin::Present(info.size)),
            Begin::Write(w) => Ok(SinkBegin::Write(w)),
        }
    }
}
