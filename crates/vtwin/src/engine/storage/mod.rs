//! Storage as the engine keeps it, apart from any API: CNS volumes over
//! first-class disks (the disks themselves are `engine::disks`), and
//! datastores as directories.
pub mod access;
pub mod cns;
pub mod datastores;
