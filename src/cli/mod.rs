//! The commands other than `run`, each reading the configuration and what the server left on
//! disk (the query log) or in the kernel (the neighbour table), and printing a report.

pub mod addresses;
pub mod check;
pub mod devices;
pub mod explain;
pub mod lists;
pub mod profile;
pub mod suggest;
