//! A SHA-256 digester that hashes on a background thread, so the two digests of a layer
//! (compressed blob, uncompressed DiffID) run in parallel with decompression and file writes.
//! SHA-256 is ring's (assembly; much faster than portable code on CPUs without SHA-NI).
//! Chunks are copied into recycled buffers of exactly `BATCH` bytes and sent over a bounded
//! channel: at most `IN_FLIGHT + 3` buffers exist per digester, whatever the callers' chunk
//! sizes (bounded memory).
//! If no thread can be started it hashes inline.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use podstore_reference::{Algorithm, Digest};
use ring::digest::{Context, SHA256};

/// Bytes batched before a chunk is sent.
const BATCH: usize = 256 * 1024;
/// Chunks in flight per digester (2 MiB of look-ahead: enough to ride out scheduling jitter on
/// a loaded machine; more only adds to the pull's peak RSS).
const IN_FLIGHT: usize = 8;

struct Worker {
    to_worker: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    handle: JoinHandle<Context>,
}

/// Hashes everything passed to [`BackgroundDigester::update`], on its own thread.
pub(crate) struct BackgroundDigester {
    pending: Vec<u8>,
    worker: Result<Worker, Context>,
    lost: bool,
    bytes: u64,
}

impl BackgroundDigester {
    /// Starts a SHA-256 digester thread.
    pub fn sha256() -> BackgroundDigester {
        let (to_worker, from_main) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (to_main, spare) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let spawned = std::thread::Builder::new()
            .name("layer-digest".into())
            .spawn(move || {
                let mut digester = Context::new(&SHA256);
                for mut chunk in from_main {
                    digester.update(&chunk);
                    chunk.clear();
                    let _ = to_main.try_send(chunk);
                }
                digester
            });
        let worker = match spawned {
            Ok(handle) => Ok(Worker {
                to_worker,
                spare,
                handle,
            }),
            Err(_) => Err(Context::new(&SHA256)),
        };
        BackgroundDigester {
            pending: Vec::with_capacity(BATCH),
            worker,
            lost: false,
            bytes: 0,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        match &mut self.worker {
            Err(inline) => inline.update(data),
            Ok(_) => {
                let mut data = data;
                while !data.is_empty() {
                    let take = (BATCH - self.pending.len()).min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() >= BATCH {
                        self.flush();
                    }
                }
            }
        }
    }

    fn flush(&mut self) {
        let Ok(worker) = &self.worker else { return };
        if self.pending.is_empty() {
            return;
        }
        let next = worker
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let chunk = std::mem::replace(&mut self.pending, next);
        if worker.to_worker.send(chunk).is_err() {
            self.lost = true;
        }
    }

    /// Waits for the thread and returns the digest; `None` if the thread died.
    pub fn finish(mut self) -> Option<Digest> {
        self.flush();
        match self.worker {
            Err(inline) => to_digest(inline),
            Ok(worker) => {
                drop(worker.to_worker);
                let digester = worker.handle.join().ok()?;
                if self.lost {
                    return None;
                }
                to_digest(digester)
            }
        }
    }
}

fn to_digest(context: Context) -> Option<Digest> {
    let hex: String = context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Digest::from_hex(Algorithm::Sha256, &hex).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_digest_as_inline() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        // small pieces, and pieces larger than a batch (as a 1 MiB tar buffer refill is)
        for piece in [12_345, BATCH + 7, 1 << 20] {
            let mut bg = BackgroundDigester::sha256();
            for chunk in data.chunks(piece) {
                bg.update(chunk);
                assert!(bg.pending.len() < BATCH, "a full batch is sent at once");
                assert!(
                    bg.pending.capacity() <= BATCH,
                    "buffers stay one batch long"
                );
            }
            assert_eq!(bg.bytes, data.len() as u64);
            assert_eq!(
                bg.finish(),
                Some(Digest::sha256_of(&data)),
                "pieces of {piece}"
            );
        }
        assert_eq!(
            BackgroundDigester::sha256().finish(),
            Some(Digest::sha256_of(b""))
        );
    }
}
