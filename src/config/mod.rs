//! The TOML configuration: schema, validation with file:line:col, compilation into an
//! [`crate::datapath::EngineConfig`] and a [`crate::policy::Policy`].
