//! The control plane: the daemon around the workers, reload, metrics, the lab. Never on the
//! packet path.

pub mod snatbench;
