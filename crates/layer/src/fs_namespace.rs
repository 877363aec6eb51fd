//! Running a closure with a private current directory: a dedicated thread that first leaves
//! the process's shared filesystem context (`unshare(CLONE_FS)`), then changes to the given
//! directory. The only `unsafe` of the crate lives here.
//!
//! chdir is process-wide, so the overlay driver cannot simply chdir to its home for the
//! relative-path mount fallback (containers/storage re-execs a child for it); a thread with
//! its own filesystem context gets the same effect without touching other threads' cwd.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

/// Detaches the calling thread's filesystem context (cwd, root, umask) from the rest of the
/// process.
fn unshare_fs_context() -> io::Result<()> {
    // SAFETY: `unshare_unsafe` is unsafe because `UnshareFlags::FILES` would give this thread
    // its own fd table, so fds created elsewhere could become invalid here. We pass only
    // `FS`, which copies the cwd, root and umask into a private structure and leaves the fd
    // table shared: every fd stays valid on every thread, and the change is confined to this
    // thread, which is dedicated to one closure and exits after it.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
    Ok(())
}

/// Runs `work` on a new thread whose current directory is `dir` (an `O_PATH` or regular
/// directory fd) and private to that thread; the process's cwd is never changed. Returns
/// what `work` returns.
pub(crate) fn with_private_cwd<T, F>(dir: OwnedFd, work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                unshare_fs_context()?;
                rustix::process::fchdir(&dir)?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
    })
}
