//! A small TCP tracker: enough state to pick the right timeout (RFC 5382, RFC 7857) and to
//! refuse segments that cannot start a flow. It does not check sequence windows.

use crate::wire::l4::tcp_flags::{ACK, FIN, RST, SYN};

/// Which way a packet travels relative to the flow's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Dir {
    /// Same direction as the packet that created the flow.
    Orig = 0,
    /// The answering direction.
    Reply = 1,
}

/// TCP connection state as the appliance sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TcpState {
    /// A SYN was seen from one side only.
    #[default]
    SynSent,
    /// Both sides sent SYN (three-way handshake or simultaneous open).
    Established,
    /// One side sent FIN.
    Closing,
    /// Both sides sent FIN.
    TimeWait,
    /// A RST was seen.
    Closed,
}

impl TcpState {
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::Established => "established",
            TcpState::Closing => "closing",
            TcpState::TimeWait => "time_wait",
            TcpState::Closed => "closed",
        }
    }
}

/// Per-flow TCP tracking: the state and which sides sent SYN and FIN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTrack {
    pub state: TcpState,
    syn: u8,
    fin: u8,
}

impl TcpTrack {
    /// No segment seen yet.
    pub const NEW: TcpTrack = TcpTrack {
        state: TcpState::SynSent,
        syn: 0,
        fin: 0,
    };

    /// A flow opened by a SYN in the original direction.
    pub fn opened() -> Self {
        TcpTrack {
            state: TcpState::SynSent,
            syn: 1,
            fin: 0,
        }
    }

    /// Advances the state for a segment with `flags` travelling `dir`.
    pub fn on_segment(&mut self, dir: Dir, flags: u8) {
        let bit = 1u8 << (dir as u8);
        if flags & RST != 0 {
            self.state = TcpState::Closed;
            return;
        }
        if flags & SYN != 0 {
            if matches!(self.state, TcpState::TimeWait | TcpState::Closed)
                && dir == Dir::Orig
                && flags & ACK == 0
            {
                // The same tuple opens a new connection (RFC 6191-style reuse).
                *self = TcpTrack::opened();
                return;
            }
            self.syn |= bit;
            if self.syn == 3 && self.state == TcpState::SynSent {
                self.state = TcpState::Established;
            }
        }
        if flags & FIN != 0 {
            self.fin |= bit;
            self.state = if self.fin == 3 {
                TcpState::TimeWait
            } else {
                TcpState::Closing
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_close() {
        let mut t = TcpTrack::opened();
        t.on_segment(Dir::Reply, SYN | ACK);
        assert_eq!(t.state, TcpState::Established);
        t.on_segment(Dir::Orig, ACK);
        t.on_segment(Dir::Orig, FIN | ACK);
        assert_eq!(t.state, TcpState::Closing);
        t.on_segment(Dir::Reply, FIN | ACK);
        assert_eq!(t.state, TcpState::TimeWait);
        t.on_segment(Dir::Orig, SYN);
        assert_eq!(t.state, TcpState::SynSent);
    }

    #[test]
    fn simultaneous_open_and_rst() {
        let mut t = TcpTrack::opened();
        t.on_segment(Dir::Reply, SYN);
        assert_eq!(t.state, TcpState::Established);
        t.on_segment(Dir::Reply, RST);
        assert_eq!(t.state, TcpState::Closed);
    }
}
