//! An in-memory backend for tests: frames are injected into and collected from a shared queue.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use super::{Batch, IoStats, PacketIo};
use crate::datapath::IfaceId;

/// The queues shared between a test and a [`MemIo`].
#[derive(Debug, Default)]
pub struct MemQueues {
    /// Frames waiting to be received: (rx interface, frame).
    pub rx: VecDeque<(IfaceId, Vec<u8>)>,
    /// Frames transmitted and flushed: (tx interface, frame).
    pub tx: Vec<(IfaceId, Vec<u8>)>,
    /// What [`PacketIo::iface_stats`] answers, by interface (a test sets them).
    pub iface_stats: Vec<IoStats>,
}

/// A backend over [`MemQueues`]; cheap to clone (the queues are shared).
#[derive(Clone, Debug)]
pub struct MemIo {
    pub queues: Arc<Mutex<MemQueues>>,
    pending: Vec<(IfaceId, Vec<u8>)>,
    macs: Vec<[u8; 6]>,
    stats: IoStats,
}

impl MemIo {
    /// A backend with one MAC per interface.
    pub fn new(macs: Vec<[u8; 6]>) -> Self {
        MemIo {
            queues: Arc::default(),
            pending: Vec::new(),
            macs,
            stats: IoStats::default(),
        }
    }

    /// Queues a frame to be received on `rx_if`.
    pub fn inject(&self, rx_if: IfaceId, frame: &[u8]) {
        self.lock().rx.push_back((rx_if, frame.to_vec()));
    }

    /// Takes every flushed frame.
    pub fn take_tx(&self) -> Vec<(IfaceId, Vec<u8>)> {
        std::mem::take(&mut self.lock().tx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemQueues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PacketIo for MemIo {
    fn rx_batch(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let mut q = self.lock();
        let mut n = 0;
        while !batch.is_full() {
            let Some((i, f)) = q.rx.pop_front() else {
                break;
            };
            batch.push(i, &f);
            n += 1;
        }
        Ok(n)
    }

    fn tx_push(&mut self, tx_if: IfaceId, frame: &[u8]) -> bool {
        self.pending.push((tx_if, frame.to_vec()));
        true
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let mut p = std::mem::take(&mut self.pending);
            self.lock().tx.append(&mut p);
        }
        Ok(())
    }

    fn rx_ready(&self) -> bool {
        !self.lock().rx.is_empty()
    }

    fn wait(&mut self, timeout_ms: i32, _extra_fd: Option<i32>) -> io::Result<()> {
        if self.lock().rx.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(
                timeout_ms.clamp(0, 5) as u64
            ));
        }
        Ok(())
    }

    fn stats(&self) -> IoStats {
        let mut s = self.stats;
        for i in &self.lock().iface_stats {
            s.add(i);
        }
        s
    }

    fn iface_stats(&self, iface: IfaceId) -> IoStats {
        self.lock()
            .iface_stats
            .get(iface as usize)
            .copied()
            .unwrap_or_default()
    }

    fn mac(&self, iface: IfaceId) -> [u8; 6] {
        self.macs.get(iface as usize).copied().unwrap_or([0; 6])
    }
}
