//! A classic pcap writer (libpcap format, microsecond timestamps, LINKTYPE_ETHERNET) and a
//! backend wrapper that records every received and transmitted frame (`tollgate run --pcap`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Batch, IoStats, PacketIo};
use crate::datapath::IfaceId;
use crate::wire::gso::Offload;

/// Writes pcap records to any `Write`.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the global header.
    pub fn create(path: &Path) -> io::Result<Self> {
        PcapWriter::new(BufWriter::new(File::create(path)?))
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header to `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        let snaplen = 262_144u32; // whole GSO super-frames (up to 64 KiB), as tcpdump records them
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone = 0, sigfigs = 0
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Appends one frame stamped with the wall clock.
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.write_at(t.as_secs() as u32, t.subsec_micros(), frame)
    }

    /// Appends one frame with an explicit timestamp.
    pub fn write_at(&mut self, sec: u32, usec: u32, frame: &[u8]) -> io::Result<()> {
        let incl = (frame.len() as u32).min(self.snaplen);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&usec.to_le_bytes());
        h[8..12].copy_from_slice(&incl.to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&frame[..incl as usize])
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A pcap file shared by every worker.
pub type SharedPcap = Arc<Mutex<PcapWriter<BufWriter<File>>>>;

/// Wraps a backend and records every frame it receives and transmits (a debugging aid: it
/// takes a lock once per batch).
#[derive(Debug)]
pub struct PcapIo<B> {
    inner: B,
    pcap: SharedPcap,
    tx_log: Vec<Vec<u8>>,
}

impl<B: PacketIo> PcapIo<B> {
    pub fn new(inner: B, pcap: SharedPcap) -> Self {
        PcapIo {
            inner,
            pcap,
            tx_log: Vec::new(),
        }
    }
}

impl<B: PacketIo> PacketIo for PcapIo<B> {
    fn rx_batch(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let before = batch.len();
        let n = self.inner.rx_batch(batch)?;
        if n > 0 {
            let mut p = self.pcap.lock().unwrap_or_else(|e| e.into_inner());
            for i in before..batch.len() {
                p.write(batch.frame(i).1)?;
            }
        }
        Ok(n)
    }

    fn tx_push(&mut self, tx_if: IfaceId, frame: &[u8]) -> bool {
        let ok = self.inner.tx_push(tx_if, frame);
        if ok {
            self.tx_log.push(frame.to_vec());
        }
        ok
    }

    fn tx_push_offload(&mut self, tx_if: IfaceId, frame: &mut [u8], offload: &Offload) -> bool {
        let ok = self.inner.tx_push_offload(tx_if, frame, offload);
        if ok {
            self.tx_log.push(frame.to_vec());
        }
        ok
    }

    fn count_segmented(&mut self, iface: IfaceId) {
        self.inner.count_segmented(iface)
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        if !self.tx_log.is_empty() {
            let mut p = self.pcap.lock().unwrap_or_else(|e| e.into_inner());
            for f in self.tx_log.drain(..) {
                p.write(&f)?;
            }
            p.flush()?;
        }
        self.inner.tx_flush()
    }

    fn wait(&mut self, timeout_ms: i32, extra_fd: Option<i32>) -> io::Result<()> {
        self.inner.wait(timeout_ms, extra_fd)
    }

    fn rx_ready(&self) -> bool {
        self.inner.rx_ready()
    }

    fn stats(&self) -> IoStats {
        self.inner.stats()
    }

    fn iface_stats(&self, iface: IfaceId) -> IoStats {
        self.inner.iface_stats(iface)
    }

    fn mac(&self, iface: IfaceId) -> [u8; 6] {
        self.inner.mac(iface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let mut w = PcapWriter::new(Vec::new()).expect("vec");
        w.write_at(1, 2, &[0xaa; 60]).expect("vec");
        let v = w.into_inner();
        assert_eq!(v.len(), 24 + 16 + 60);
        assert_eq!(&v[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(v[20..24].try_into().expect("4")), 1);
        assert_eq!(u32::from_le_bytes(v[32..36].try_into().expect("4")), 60);
    }
}
