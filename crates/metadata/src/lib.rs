//! The Store: the layer, image and container records of a containers/storage graph root, their
//! lock protocol, and the operations the image and runtime services need.
//!
//! Not built yet: see issue 5.
