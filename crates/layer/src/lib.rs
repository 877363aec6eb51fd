//! Layer drivers (overlay, vfs) laid out exactly like containers/storage 1.43, and the streaming
//! tar applier both drivers share.
//!
//! Invariant: the layer driver never touches the network and never writes outside its home
//! directory. It keeps no records: layer records and mount counts belong to the metadata crate.
//!
//! # Example
//!
//! Apply a (gzip, zstd or plain) layer tar into a vfs layer and mount it. The [`Driver`] trait
//! is the same for [`Overlay`]; most users go through the metadata crate's `Store`, which
//! keeps the records.
//!
//! ```no_run
//! use podstore_layer::{ApplyOptions, CreateOptions, Driver, MountOptions, Vfs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let driver = Vfs::new("/var/lib/containers/storage/vfs")?;
//! driver.create("layer-1", None, &CreateOptions::default())?;
//! let mut blob = std::fs::File::open("layer.tar.gz")?;
//! let mut tar_split = Vec::new(); // containers/storage's tar-split JSON lines
//! let report = driver.apply_diff("layer-1", None, &mut blob, &mut tar_split, &ApplyOptions::default())?;
//! println!("DiffID {} ({} bytes, {:?})", report.diff_digest, report.diff_size, report.compression);
//! let root = driver.mount("layer-1", &MountOptions::default())?;
//! println!("root filesystem at {}", root.display());
//! # Ok(())
//! # }
//! ```

pub mod apply;
pub mod crc64;
mod digest_thread;
pub mod driver;
mod fs_namespace;
mod fsutil;
mod home_mount;
pub mod idshift;
mod mount;
pub mod overlay;
pub mod tar_split;
pub mod tarstream;
pub mod vfs;

pub use apply::{ApplyError, WhiteoutFormat, apply_tar, detect_compression};
pub use driver::{
    ApplyOptions, ApplyReport, Compression, CreateOptions, Driver, DriverError, HomeMount, IdMap,
    IdMappings, MountOptions,
};
pub use idshift::{ShiftError, shift_tree};
pub use mount::MountMethod;
pub use overlay::{Overlay, OverlayOptions};
pub use tar_split::{TarSplitError, reassemble};
pub use tarstream::{MAX_TRAILING_BYTES, TarError};
pub use vfs::Vfs;
