//! Where a stream stands: the acker decides how far is fully handled, the store keeps it.

pub mod acker;
pub mod admin;
pub mod presence;
pub mod store;
pub mod writer;
