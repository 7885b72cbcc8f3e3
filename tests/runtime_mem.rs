//! The worker runtime over the in-memory backend: MAC rewriting, neighbour misses and the
//! hand-off of return traffic to the worker that owns it.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::datapath::{DropReason, IfaceId, Nanos, Packet, Verdict};
use tollgate::io::memio::MemIo;
use tollgate::io::neigh::{NeighSnapshot, Neighbours};
use tollgate::io::runtime::{self, Engine, RuntimeConfig};

/// Forwards every frame out of the other interface to 192.0.2.<last byte of the frame>; frames
/// whose byte 14 is 0xee belong to worker 1.
struct Fake {
    me: usize,
    seen_by_owner_check: u64,
}

impl Engine for Fake {
    fn process(&mut self, _now: Nanos, pkt: &mut Packet<'_>) -> Verdict {
        if pkt.len > 14 && pkt.buf[14] == 0xee {
            assert_eq!(self.me, 1, "owned frames are processed by their owner");
        }
        let last = pkt.buf[pkt.len - 1];
        Verdict::Forward {
            tx_if: 1 - pkt.rx_if,
            next_hop: Ipv4Addr::new(192, 0, 2, last),
        }
    }
    fn poll_transmit(&mut self, _buf: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)> {
        None
    }
    fn owner_of(&self, frame: &[u8]) -> Option<usize> {
        (frame.len() > 14 && frame[14] == 0xee).then_some(1)
    }
    fn drop_counts(&self) -> [u64; DropReason::COUNT] {
        [self.seen_by_owner_check; DropReason::COUNT]
    }
    fn flow_count(&self) -> usize {
        0
    }
}

#[test]
fn frames_are_forwarded_with_macs_and_handed_to_their_owner() {
    let io = MemIo::new(vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
    let neigh = Neighbours::fixed(NeighSnapshot::from_entries(
        2,
        &[(1, Ipv4Addr::new(192, 0, 2, 7), [0xaa; 6])],
    ));
    // worker 0 gets every frame, worker 1 an empty backend
    let io0 = io.clone();
    let io1 = MemIo::new(vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
    let q1 = io1.clone();
    for i in 0..10u8 {
        let mut f = vec![0u8; 40];
        f[14] = if i % 2 == 0 { 0xee } else { 0 };
        f[39] = if i < 8 { 7 } else { 9 }; // 192.0.2.9 is not resolved: neighbour miss
        io.inject(0, &f);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let stopper = std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let a = io.queues.lock().expect("lock").tx.len();
            let b = q1.queues.lock().expect("lock").tx.len();
            if a + b >= 8 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        s2.store(true, Ordering::Relaxed);
        (io.take_tx(), q1.take_tx())
    });
    let cfg = RuntimeConfig {
        workers: 2,
        pin: false,
        idle_timeout_ms: 10,
        ..RuntimeConfig::default()
    };
    let reports = runtime::run(
        &cfg,
        |i| Fake {
            me: i,
            seen_by_owner_check: 0,
        },
        |i| Ok(if i == 0 { io0.clone() } else { io1.clone() }),
        neigh,
        stop,
        Instant::now(),
    )
    .expect("runtime");
    let (tx0, tx1) = stopper.join().expect("stopper");
    let t = runtime::totals(&reports);
    assert_eq!(t.rt.rx_packets, 10);
    assert_eq!(t.rt.handoff_out, 5);
    assert_eq!(t.rt.handoff_in, 5);
    // held for their unresolved next hop until the workers stopped
    assert_eq!(t.rt.neighbour_queued, 2);
    assert_eq!(t.rt.neighbour_miss, 2);
    assert_eq!(tx0.len() + tx1.len(), 8);
    for (tx_if, f) in tx0.iter().chain(tx1.iter()) {
        assert_eq!(*tx_if, 1);
        assert_eq!(&f[0..6], &[0xaa; 6]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 2]);
    }
}

/// One unpinned worker over `io` until `stop` is set.
fn run_one_worker(
    io: &MemIo,
    neigh: Arc<Neighbours>,
    stop: Arc<AtomicBool>,
) -> Vec<runtime::WorkerReport> {
    let cfg = RuntimeConfig {
        workers: 1,
        pin: false,
        ..RuntimeConfig::default()
    };
    runtime::run(
        &cfg,
        |i| Fake {
            me: i,
            seen_by_owner_check: 0,
        },
        |_| Ok(io.clone()),
        neigh,
        stop,
        Instant::now(),
    )
    .expect("runtime")
}

/// Waits (5 s at most) until `n` frames have been transmitted on `q`.
fn wait_for_tx(q: &MemIo, n: usize) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) && q.queues.lock().expect("lock").tx.len() < n {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_frame_to_an_unresolved_next_hop_leaves_once_the_kernel_resolves_it() {
    let io = MemIo::new(vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
    let neigh = Neighbours::fixed(NeighSnapshot::from_entries(2, &[]));
    for i in 0..3u8 {
        let mut f = vec![i; 40];
        f[39] = 9; // next hop 192.0.2.9, not resolved yet
        io.inject(0, &f);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, n2, q) = (stop.clone(), neigh.clone(), io.clone());
    let driver = std::thread::spawn(move || {
        // the worker holds the frames: nothing leaves while the next hop is unknown
        std::thread::sleep(Duration::from_millis(200));
        let before = q.queues.lock().expect("lock").tx.len();
        n2.store(NeighSnapshot::from_entries(
            2,
            &[(1, Ipv4Addr::new(192, 0, 2, 9), [0xbb; 6])],
        ));
        let t0 = Instant::now();
        wait_for_tx(&q, 3);
        let waited = t0.elapsed();
        s2.store(true, Ordering::Relaxed);
        (before, waited, q.take_tx())
    });
    let reports = run_one_worker(&io, neigh, stop);
    let (before, waited, tx) = driver.join().expect("driver");
    let t = runtime::totals(&reports);
    assert_eq!(before, 0, "nothing sent before the next hop resolved");
    assert_eq!(tx.len(), 3, "all three held frames sent after it resolved");
    assert!(
        waited < Duration::from_secs(1),
        "sent {waited:?} after resolution"
    );
    for (i, (tx_if, f)) in tx.iter().enumerate() {
        assert_eq!(*tx_if, 1);
        assert_eq!(&f[0..6], &[0xbb; 6]);
        assert_eq!(f[20], i as u8);
    }
    assert_eq!(t.rt.neighbour_queued, 3);
    assert_eq!(t.rt.neighbour_miss, 0);
}

/// Frames held for a next hop leave before newer frames to it: the held ones go out at the
/// start of the batch that first sees the resolved entry, ahead of that batch's own frames.
#[test]
fn held_frames_leave_before_newer_frames_to_the_same_next_hop() {
    let io = MemIo::new(vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
    let neigh = Neighbours::fixed(NeighSnapshot::from_entries(2, &[]));
    let frame = |tag: u8| {
        let mut f = vec![tag; 40];
        f[39] = 9; // next hop 192.0.2.9
        f
    };
    io.inject(0, &frame(1));
    io.inject(0, &frame(2));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, n2, q) = (stop.clone(), neigh.clone(), io.clone());
    let driver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // the entry and a newer frame at once: both are seen by the same batch
        n2.store(NeighSnapshot::from_entries(
            2,
            &[(1, Ipv4Addr::new(192, 0, 2, 9), [0xbb; 6])],
        ));
        q.inject(0, &frame(3));
        wait_for_tx(&q, 3);
        s2.store(true, Ordering::Relaxed);
        q.take_tx()
    });
    let reports = run_one_worker(&io, neigh, stop);
    let tx = driver.join().expect("driver");
    let tags: Vec<u8> = tx.iter().map(|(_, f)| f[20]).collect();
    assert_eq!(tags, vec![1, 2, 3]);
    let t = runtime::totals(&reports);
    assert_eq!(t.rt.neighbour_queued, 2);
}
