//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers") the appliance handles.
//!
//! Here at the bottom so that every layer (the classifier, the SNAT allocator, the datapath)
//! names them from one place.

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
