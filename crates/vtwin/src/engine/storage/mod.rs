//! Storage as the engine keeps it, apart from any API: CNS volumes over
//! first-class disks (the disks themselves are `engine::disks`).
pub mod cns;
