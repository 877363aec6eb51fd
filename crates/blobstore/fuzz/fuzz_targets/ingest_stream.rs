//! Fuzzes the ingest path: arbitrary content written in arbitrary chunks, with an interruption
//! and resume, must commit to exactly that content under its digest, and the same bytes under
//! a wrong digest must fail and leave nothing behind.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use podstore_blobstore::{Begin, BlobError, BlobStore};
use podstore_reference::Digest;

fn store() -> &'static BlobStore {
    static STORE: OnceLock<BlobStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("podstore-blobstore-fuzz-{}", std::process::id()));
        BlobStore::open(root).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, content)) = data.split_first() else {
        return;
    };
    let store = store();
    let chunk = usize::from(shape % 64) + 1;
    let interrupt_at = content.len() * usize::from(shape >> 6) / 4;
    let digest = Digest::sha256_of(content);
    let size = content.len() as u64;

    // First attempt stops part-way (a dropped connection); the second resumes.
    if let Begin::Write(mut w) = store.begin(&digest, Some(size)).unwrap() {
        for piece in content[..interrupt_at].chunks(chunk) {
            w.write_all(piece).unwrap();
        }
    }
    match store.begin(&digest, Some(size)).unwrap() {
        Begin::Present(info) => assert_eq!(info.size, size),
        Begin::Write(mut w) => {
            let offset = usize::try_from(w.offset()).unwrap();
            assert!(offset <= content.len());
            for piece in content[offset..].chunks(chunk) {
                w.write_all(piece).unwrap();
            }
            w.commit().unwrap();
        }
    }
    assert_eq!(std::fs::read(store.path(&digest)).unwrap(), content);

    // The same bytes announced under another digest never commit.
    let wrong = Digest::sha256_of(&[content, b"!"].concat());
    if let Begin::Write(mut w) = store.begin(&wrong, None).unwrap() {
        w.restart().unwrap();
        w.write_all(content).unwrap();
        assert!(matches!(w.commit(), Err(BlobError::DigestMismatch { .. })));
    }
    assert!(!store.exists(&wrong));
    assert!(!store.ingest_path(&wrong).exists());
    store.delete(&digest).unwrap();
});
