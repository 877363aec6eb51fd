//! Open-file-description (OFD) record locks over a whole file, via `fcntl(F_OFD_SETLK[W])`.
//!
//! OFD locks belong to the open file description, not to the process: two threads that each
//! open the lock file exclude each other, and so do two processes; closing the last descriptor
//! of the description releases the lock, and a crashed holder's lock vanishes with it. They
//! conflict with classic POSIX `fcntl` locks and never interact with `flock`, which podstore
//! does not use. rustix 1.x only exposes process-associated `F_SETLK(W)`, so the safe `nix`
//! wrapper is used here.

use std::fs::File;
use std::io;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

fn whole_file_write_lock() -> libc::flock {
    libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        // 0 = to the end of the file, however it grows.
        l_len: 0,
        // Must be 0 for OFD locks.
        l_pid: 0,
    }
}

/// Takes an exclusive OFD lock on the whole of `file`, blocking until it is free.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    let request = whole_file_write_lock();
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLKW(&request)) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Tries to take an exclusive OFD lock on the whole of `file`; `Ok(false)` when another open
/// file description holds a conflicting lock.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    let request = whole_file_write_lock();
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLK(&request)) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN | Errno::EACCES) => return Ok(false),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}
