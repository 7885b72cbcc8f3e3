//! Importers from other firewalls' rule formats into a Tollgate configuration (offline: files in,
//! TOML out). [`azure`] reads an Azure Firewall Policy (`tollgate import azure-policy`).

mod arm;
pub mod azure;
