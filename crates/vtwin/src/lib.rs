//! vtwin: a vSphere-compatible control plane. `engine` holds the behaviour,
//! `store` the state, `api` the wire layers.
pub mod api;
pub mod engine;
pub mod store;
pub mod sys;
