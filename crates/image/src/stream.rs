//! The single-pass layer stream: a [`BlobSink`] whose ingest hands the downloaded bytes, as
//! they arrive, through a bounded channel to a [`Read`]er that the layer applier consumes on a
//! blocking thread. The reader reports end of file only once the registry client has verified
//! the blob's size and digest (it commits the ingest only then); a blob that fails
//! verification, or a download that breaks off, makes the reader fail, so the staged layer is
//! discarded. Optionally the same bytes are written ("teed") into the blob store's ingest.
//!
//! Memory is bounded: at most [`CHANNEL_CHUNKS`] chunks of the client's write buffer are in
//! flight per layer.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use podstore_blobstore::{Begin, BlobStore, IngestWriter};
use podstore_reference::Digest;
use podstore_registry::{BlobIngest, BlobSink, SinkBegin, SinkError};

/// Chunks (each one client write buffer, 256 KiB by default) buffered between download and apply.
pub(crate) const CHANNEL_CHUNKS: usize = 8;

enum Chunk {
    Data(Vec<u8>),
    /// Verified by the client and committed: the reader reaches end of file.
    End,
    /// The client aborted the blob (size or digest mismatch).
    Aborted,
}

/// The download side: a one-shot [`BlobSink`] for one blob.
#[derive(Clone)]
pub(crate) struct StreamSink {
    sender: Arc<Mutex<Option<SyncSender<Chunk>>>>,
    tee: Option<BlobStore>,
}

/// The apply side: reads the blob's bytes as they are downloaded.
pub(crate) struct StreamReader {
    receiver: Receiver<Chunk>,
    current: Vec<u8>,
    position: usize,
    finished: bool,
    digest: Digest,
}

/// A sink and the reader of what is written into it; with `tee`, the bytes are also stored in
/// that blob store.
pub(crate) fn stream(digest: &Digest, tee: Option<BlobStore>) -> (StreamSink, StreamReader) {
    let (sender, receiver) = sync_channel(CHANNEL_CHUNKS);
    (
        StreamSink {
            sender: Arc::new(Mutex::new(Some(sender))),
            tee,
        },
        StreamReader {
            receiver,
            current: Vec::new(),
            position: 0,
            finished: false,
            digest: digest.clone(),
        },
    )
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.position >= self.current.len() {
            if self.finished {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(Chunk::Data(data)) => {
                    self.current = data;
                    self.position = 0;
                }
                Ok(Chunk::End) => self.finished = true,
                Ok(Chunk::Aborted) => {
                    return Err(io::Error::other(format!(
                        "the download of blob {} failed verification",
                        self.digest
                    )));
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the download of blob {} stopped before its end",
                            self.digest
                        ),
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// One pass of the stream (the ingest [`StreamSink::begin`] hands out).
pub(crate) struct StreamIngest {
    sender: SyncSender<Chunk>,
    sent: u64,
    tee: Option<IngestWriter>,
    done: bool,
}

impl Write for StreamIngest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(tee) = self.tee.as_mut()
            && tee.write_all(buf).is_err()
        {
            // The kept copy is a cache: give it up rather than the pull.
            if let Some(tee) = self.tee.take() {
                tee.abort();
            }
        }
        self.sender
            .send(Chunk::Data(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer applier stopped"))?;
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobIngest for StreamIngest {
    fn offset(&self) -> u64 {
        self.sent
    }
    fn restart(&mut self) -> io::Result<()> {
        if self.sent == 0 {
            return Ok(());
        }
        Err(io::Error::other(
            "the server ignored a Range request, and the bytes already streamed into the layer \
             cannot be taken back",
        ))
    }
    fn commit(mut self) -> Result<u64, SinkError> {
        self.done = true;
        if let Some(tee) = self.tee.take() {
            // Verified by the client already; a failed copy only loses the cache.
            let _ = tee.commit();
        }
        self.sender
            .send(Chunk::End)
            .map_err(|_| SinkError::Other("the layer applier stopped".to_owned()))?;
        Ok(self.sent)
    }
    fn abort(mut self) {
        self.done = true;
        if let Some(tee) = self.tee.take() {
            tee.abort();
        }
        let _ = self.sender.try_send(Chunk::Aborted);
    }
}

impl Drop for StreamIngest {
    fn drop(&mut self) {
        if !self.done {
            // Dropped mid-way (stall, cancellation): the reader sees the channel close without
            // an end; a partial kept copy cannot be resumed into this stream, so it goes too.
            if let Some(tee) = self.tee.take() {
                tee.abort();
            }
            if let Err(TrySendError::Full(_)) = self.sender.try_send(Chunk::Aborted) {
                // the reader notices the closed channel after draining what is queued
            }
        }
    }
}

impl BlobSink for StreamSink {
    type Ingest = StreamIngest;

    fn begin(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<SinkBegin<StreamIngest>, SinkError> {
        let sender = self
            .sender
            .lock()
            .map_err(|_| SinkError::Other("stream sink lock poisoned".to_owned()))?
            .take()
            .ok_or_else(|| SinkError::Other(format!("blob {digest} was already streamed")))?;
        let tee = match &self.tee {
            None => None,
            Some(store) => match store.begin(digest, size) {
                Ok(Begin::Write(mut writer)) => {
                    if writer.offset() > 0 && writer.restart().is_err() {
                        writer.abort();
                        None
                    } else {
                        Some(writer)
                    }
                }
                Ok(Begin::Present(_)) | Err(_) => None,
            },
        };
        Ok(SinkBegin::Write(StreamIngest {
            sender,
            sent: 0,
            tee,
            done: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(sink: &StreamSink, digest: &Digest) -> StreamIngest {
        match sink.begin(digest, None).unwrap() {
            SinkBegin::Write(w) => w,
            SinkBegin::Present(_) => panic!("a stream is never present"),
        }
    }

    #[test]
    fn bytes_arrive_in_order_and_end_only_on_commit() {
        let digest = Digest::sha256_of(b"hello world");
        let (sink, mut reader) = stream(&digest, None);
        let writer = std::thread::spawn({
            let sink = sink.clone();
            let digest = digest.clone();
            move || {
                let mut w = ingest(&sink, &digest);
                w.write_all(b"hello").unwrap();
                w.write_all(b" world").unwrap();
                assert_eq!(w.offset(), 11);
                w.commit().unwrap()
            }
        });
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(writer.join().unwrap(), 11);
        assert!(sink.begin(&digest, None).is_err(), "one-shot sink");
    }

    #[test]
    fn abort_and_early_drop_fail_the_reader() {
        let digest = Digest::sha256_of(b"x");
        for abort in [true, false] {
            let (sink, mut reader) = stream(&digest, None);
            let mut w = ingest(&sink, &digest);
            w.write_all(b"partial").unwrap();
            if abort {
                w.abort();
            } else {
                drop(w);
            }
            drop(sink);
            let mut out = Vec::new();
            let err = reader.read_to_end(&mut out).unwrap_err();
            assert!(err.to_string().contains(&digest.to_string()), "{err}");
            assert_eq!(out, b"partial");
        }
    }

    #[test]
    fn restart_only_before_any_byte() {
        let digest = Digest::sha256_of(b"x");
        let (sink, _reader) = stream(&digest, None);
        let mut w = ingest(&sink, &digest);
        w.restart().unwrap();
        w.write_all(b"x").unwrap();
        assert!(w.restart().is_err());
    }

    #[test]
    fn tee_keeps_a_verified_copy() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let data = b"layer bytes".to_vec();
        let digest = Digest::sha256_of(&data);
        let (sink, mut reader) = stream(&digest, Some(blobs.clone()));
        let reading = std::thread::spawn(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        });
        let mut w = ingest(&sink, &digest);
        w.write_all(&data).unwrap();
        w.commit().unwrap();
        assert_eq!(reading.join().unwrap().unwrap(), data);
        assert!(blobs.exists(&digest));
    }
}
