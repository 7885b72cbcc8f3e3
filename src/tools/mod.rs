//! Offline tools over a configuration: no daemon, no packets. [`explain`] shows how the rules
//! decide one flow and which rules almost matched (`tollgate explain`, and the admin socket's
//! `explain` for the running configuration); [`import`] turns another firewall's policy into
//! a configuration (`tollgate import azure-policy`).

pub mod explain;
pub mod import;
