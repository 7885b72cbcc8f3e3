//! The daemon's services around the workers, never on the packet path:
//! - [`daemon`]: starting, serving and stopping the workers; [`reload`]: config hot reload;
//!   [`notify`]: readiness and the watchdog; [`iowatch`]: the I/O layer's notices.
//! - [`host`]: the host's own preparation and default-closed policy (nftables, offloads).
//! - [`dns`]: the resolver for network rules' destination FQDNs.
//! - [`registry`]: what the endpoints share; [`mgmt`]: `/healthz`, `/readyz`, `/metrics`;
//!   [`admin`]: the admin socket (`tollgate flows|stats|snat|explain|reload`).
//! - [`logging`]: the daemon's messages; [`decision_log`]: one line per decision, naming the rule.
//!
//! Imports run one way: `admin` and `mgmt` read `registry`, neither imports the other.

pub mod admin;
pub mod daemon;
pub mod decision_log;
pub mod dns;
pub mod host;
pub mod iowatch;
pub mod logging;
pub mod mgmt;
pub mod notify;
pub mod registry;
pub mod reload;
