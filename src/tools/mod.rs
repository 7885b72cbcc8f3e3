//! Offline tools over a configuration: no daemon, no packets. [`explain`] shows how the rules
//! decide one flow and which rules almost matched (`tollgate explain`, and the admin socket's
//! `explain` for the running configuration).

pub mod explain;
