//! Layer drivers (overlay, vfs) laid out exactly like containers/storage 1.43, and the streaming
//! tar applier both drivers share.
//!
//! Invariant: the layer driver never touches the network and never writes outside its home
//! directory. It keeps no records: layer records and mount counts belong to the metadata crate.

pub mod driver;

pub use driver::{
    ApplyOptions, ApplyReport, Compression, CreateOptions, Driver, DriverError, IdMap, IdMappings,
    MountOptions,
};
