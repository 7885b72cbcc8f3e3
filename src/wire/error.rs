use thiserror::Error;

/// Why bytes could not be read as the header they should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("the buffer is shorter than the header")]
    Truncated,
    #[error("the IP version is not 4")]
    BadVersion,
    #[error("the IPv4 header length is below 20 bytes or beyond the packet")]
    BadHeaderLength,
    #[error("the IPv4 total length disagrees with the frame")]
    BadTotalLength,
    #[error("the TCP data offset is below 5 words or beyond the segment")]
    BadDataOffset,
    #[error("the UDP length disagrees with the IP payload")]
    BadUdpLength,
}
