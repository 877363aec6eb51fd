//! Layer drivers (overlay, vfs) laid out exactly like containers/storage 1.43, and the streaming
//! tar applier both drivers share.
//!
//! Invariant: the layer driver never touches the network and never writes outside its home
//! directory. It keeps no records: layer records and mount counts belong to the metadata crate.

pub mod apply;
pub mod crc64;
mod digest_thread;
pub mod driver;
mod fs_namespace;
mod fsutil;
pub mod idshift;
mod mount;
pub mod overlay;
pub mod tar_split;
pub mod tarstream;
pub mod vfs;

pub use apply::{ApplyError, WhiteoutFormat, apply_tar, detect_compression};
pub use driver::{
    ApplyOptions, ApplyReport, Compression, CreateOptions, Driver, DriverError, IdMap, IdMappings,
    MountOptions,
};
pub use idshift::{ShiftError, shift_tree};
pub use mount::MountMethod;
pub use overlay::{Overlay, OverlayOptions};
pub use tar_split::{TarSplitError, reassemble};
pub use tarstream::TarError;
pub use vfs::Vfs;
