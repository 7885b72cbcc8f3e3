//! The control plane: the daemon around the workers, reload, metrics, the lab. Never on the
//! packet path.

pub mod admin;
pub mod daemon;
pub mod decision_log;
pub mod dns;
pub mod explain;
pub mod host;
pub mod iowatch;
pub mod lab;
pub mod logging;
pub mod mgmt;
pub mod notify;
pub mod reload;
pub mod snatbench;
