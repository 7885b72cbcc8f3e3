//! Worker threads: each owns one engine (flow table + SNAT port slices) and one set of rings.
//!
//! Return traffic that the fanout delivers to a worker that does not own its SNAT port
//! ([`Engine::owner_of`]; rare once the steering program of [`super::steer`] is in place) is
//! handed to the owner through a lock-free SPSC ring (`rtrb`) per (from, to) pair, in
//! fixed-size preallocated slots; the owner is woken through an eventfd, written only while the
//! owner sleeps. Nothing on this path allocates or takes a lock.
//!
//! Out of work, a worker busy-polls its rings for [`BusyPoll::window_ns`] before it sleeps in
//! poll() (see [`BusyPoll`]).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::neigh::{NeighSnapshot, Neighbours};
use super::{Batch, IoStats, PacketIo, BIG_BUF_SIZE, BUF_SIZE};
use crate::datapath::{DropReason, FlowHint, IfaceId, Nanos, Offload, Packet, Verdict};

/// What the runtime needs from the per-packet engine (`datapath::Worker` implements it).
pub trait Engine {
    /// The whole per-packet decision; may rewrite the frame in place.
    fn process(&mut self, now: Nanos, pkt: &mut Packet<'_>) -> Verdict;
    /// Frames the engine wants sent besides verdicts (released held segments, RSTs).
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)>;
    /// For a return packet: the worker that owns its SNAT port; None = any.
    fn owner_of(&self, frame: &[u8]) -> Option<usize>;
    /// Drops counted inside the engine, per [`DropReason`].
    fn drop_counts(&self) -> [u64; DropReason::COUNT];
    /// Flows currently tracked.
    fn flow_count(&self) -> usize;
    /// Reclaims up to `budget` expired flows between batches.
    fn housekeeping(&mut self, _now: Nanos, _budget: usize) {}
    /// Batch prefetch, stage 1 (see `datapath::Worker::warm_index`): prefetches the line the
    /// lookup for `frame` reads first and returns what stage 2 needs; None = nothing to do.
    fn warm_index(&self, _frame: &[u8]) -> Option<FlowHint> {
        None
    }
    /// Batch prefetch, stage 2 (see `datapath::Worker::warm_flow`).
    fn warm_flow(&self, _hint: &FlowHint, _misses: &mut usize) {}
}

impl Engine for crate::datapath::Worker {
    #[inline]
    fn process(&mut self, now: Nanos, pkt: &mut Packet<'_>) -> Verdict {
        crate::datapath::Worker::process(self, now, pkt)
    }
    #[inline]
    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)> {
        crate::datapath::Worker::poll_transmit(self, buf)
    }
    #[inline]
    fn owner_of(&self, frame: &[u8]) -> Option<usize> {
        crate::datapath::Worker::owner_of(self, frame)
    }
    fn drop_counts(&self) -> [u64; DropReason::COUNT] {
        let c = self.counters();
        std::array::from_fn(|i| c.drops[i].load(Ordering::Relaxed))
    }
    fn flow_count(&self) -> usize {
        crate::datapath::Worker::flow_count(self)
    }
    fn housekeeping(&mut self, now: Nanos, budget: usize) {
        crate::datapath::Worker::housekeeping(self, now, budget);
    }
    #[inline]
    fn warm_index(&self, frame: &[u8]) -> Option<FlowHint> {
        crate::datapath::Worker::warm_index(self, frame, super::prefetch::prefetch)
    }
    #[inline]
    fn warm_flow(&self, hint: &FlowHint, misses: &mut usize) {
        crate::datapath::Worker::warm_flow(self, hint, misses, super::prefetch::prefetch);
    }
}

/// How the workers run.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub workers: usize,
    /// Frames received per batch.
    pub batch: usize,
    /// Pin worker `i` to the `i`-th CPU the process may use.
    pub pin: bool,
    /// Slots of each hand-off ring.
    pub handoff_slots: usize,
    /// poll() timeout when idle, so a shutdown is noticed.
    pub idle_timeout_ms: i32,
    /// Once every worker has its rings: workers drop every capability, the calling (main)
    /// thread keeps only [`super::caps::MAIN_THREAD_KEEPS`].
    pub drop_caps: bool,
    /// What a worker does when it runs out of work before sleeping in poll().
    pub busy_poll: BusyPoll,
    /// Where the workers publish their backends' per-interface counters while they run
    /// (every [`IO_PUBLISH_EVERY_NS`]); None: only in the reports at exit.
    pub live_io: Option<Arc<LiveIoStats>>,
    /// Where the main thread tells of capabilities it could not drop (for the control plane
    /// to log: nothing here logs).
    pub notices: super::IoNotices,
}

/// How a worker waits between checks of its rings while it busy-polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinMode {
    /// sched_yield() between checks: other runnable tasks on the CPU (the hosts the appliance
    /// serves, when they share it) run first.
    Yield,
    /// CPU pause hints between checks, no system call: the lowest latency on a CPU of its own.
    Pause,
}

/// Adaptive polling: after the last frame it handled, a worker keeps checking its rings (the
/// RX ring status words are shared memory, a check is no system call) for `window_ns` before it
/// falls back to sleeping in poll(). A frame that arrives in that window costs no wake-up, and
/// an idle worker still sleeps: at most `window_ns` of polling after each burst of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyPoll {
    /// 0: sleep in poll() as soon as a batch finds nothing.
    pub window_ns: u64,
    pub mode: SpinMode,
}

impl BusyPoll {
    /// No busy polling.
    pub const OFF: BusyPoll = BusyPoll {
        window_ns: 0,
        mode: SpinMode::Yield,
    };

    /// Whether a worker whose last work was `since_work_ns` ago keeps polling (true) or sleeps.
    #[inline]
    pub fn keep_polling(&self, since_work_ns: u64) -> bool {
        since_work_ns < self.window_ns
    }
}

impl Default for BusyPoll {
    fn default() -> Self {
        BusyPoll {
            window_ns: DEFAULT_BUSY_POLL_US * 1_000,
            mode: SpinMode::Yield,
        }
    }
}

/// Engine housekeeping (expiry, gauges, control-plane questions) runs at most this often.
const HOUSEKEEPING_EVERY_NS: Nanos = 50_000;

/// The default busy-poll window, in microseconds.
pub const DEFAULT_BUSY_POLL_US: u64 = 1000;

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 1,
            batch: 64,
            pin: true,
            handoff_slots: 1024,
            idle_timeout_ms: 100,
            drop_caps: false,
            busy_poll: BusyPoll::default(),
            live_io: None,
            notices: super::IoNotices::default(),
        }
    }
}

/// Counters the runtime keeps per worker (the engine counts its own drops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub forwarded: u64,
    pub replies: u64,
    pub local: u64,
    pub held: u64,
    pub dropped: u64,
    /// Frames queued because their next hop's MAC was not resolved yet (resolution triggered);
    /// each is sent once it resolves, or counted in `neighbour_miss`.
    pub neighbour_queued: u64,
    /// Frames dropped for an unresolved next hop: the queue was full, the next hop did not
    /// resolve within [`HOLD_NS`], or the worker stopped with the frame still queued.
    pub neighbour_miss: u64,
    /// Frames handed to / received from another worker.
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// Frames dropped because the hand-off ring was full.
    pub handoff_full: u64,
}

impl RtStats {
    fn add(&mut self, o: &RtStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.forwarded += o.forwarded;
        self.replies += o.replies;
        self.local += o.local;
        self.held += o.held;
        self.dropped += o.dropped;
        self.neighbour_queued += o.neighbour_queued;
        self.neighbour_miss += o.neighbour_miss;
        self.handoff_out += o.handoff_out;
        self.handoff_in += o.handoff_in;
        self.handoff_full += o.handoff_full;
    }
}

/// What a worker reports when it stops.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub index: usize,
    pub rt: RtStats,
    pub io: IoStats,
    pub drops: [u64; DropReason::COUNT],
    pub flows: usize,
}

/// Sums of every worker's report.
#[derive(Clone, Debug)]
pub struct Totals {
    pub rt: RtStats,
    pub io: IoStats,
    pub drops: [u64; DropReason::COUNT],
    pub flows: usize,
}

/// Adds up worker reports.
pub fn totals(reports: &[WorkerReport]) -> Totals {
    let mut t = Totals {
        rt: RtStats::default(),
        io: IoStats::default(),
        drops: [0; DropReason::COUNT],
        flows: 0,
    };
    for r in reports {
        t.rt.add(&r.rt);
        t.io.add(&r.io);
        for (a, b) in t.drops.iter_mut().zip(r.drops.iter()) {
            *a += b;
        }
        t.flows += r.flows;
    }
    t
}

/// How often a worker publishes its backend's counters into [`LiveIoStats`] (at its
/// housekeeping, between batches): `PacketIo::iface_stats` may cost a system call per
/// interface (the kernel's ring drop count), so not at every housekeeping.
pub const IO_PUBLISH_EVERY_NS: Nanos = 10_000_000;

/// One worker's counters of one interface: written by that worker alone, cache-line aligned
/// so that no two workers write the same line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct LiveIoCell([AtomicU64; IoStats::COUNT]);

/// The backends' I/O counters ([`IoStats`]) per worker and interface, published by each worker
/// between batches and read by the control plane at any time (`tollgate stats`, `/metrics`,
/// the warnings): a fixed array of atomics allocated before the workers start, relaxed stores
/// and loads, no lock. Each value is a counter its worker only raises, so a reader sees each
/// one as it was at some publication (not all at the same one).
#[derive(Debug)]
pub struct LiveIoStats {
    workers: usize,
    ifaces: usize,
    cells: Box<[LiveIoCell]>,
}

impl LiveIoStats {
    /// Zeroed counters for `workers` workers over `ifaces` interfaces (`IfaceId` 0..ifaces).
    pub fn new(workers: usize, ifaces: usize) -> Self {
        LiveIoStats {
            workers,
            ifaces,
            cells: (0..workers * ifaces)
                .map(|_| LiveIoCell::default())
                .collect(),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Number of interfaces.
    pub fn ifaces(&self) -> usize {
        self.ifaces
    }

    fn cell(&self, worker: usize, iface: usize) -> Option<&LiveIoCell> {
        if worker < self.workers && iface < self.ifaces {
            self.cells.get(worker * self.ifaces + iface)
        } else {
            None
        }
    }

    /// Worker `worker`'s counters of interface `iface` (ignored when either is out of range).
    pub fn store(&self, worker: usize, iface: IfaceId, s: &IoStats) {
        if let Some(c) = self.cell(worker, iface as usize) {
            for (a, v) in c.0.iter().zip(s.values()) {
                a.store(v, Ordering::Relaxed);
            }
        }
    }

    /// What worker `worker` last published for interface `iface` (zeros when out of range).
    pub fn load(&self, worker: usize, iface: IfaceId) -> IoStats {
        match self.cell(worker, iface as usize) {
            Some(c) => {
                IoStats::from_values(std::array::from_fn(|i| c.0[i].load(Ordering::Relaxed)))
            }
            None => IoStats::default(),
        }
    }

    /// Interface `iface`'s counters summed over the workers.
    pub fn iface(&self, iface: IfaceId) -> IoStats {
        let mut t = IoStats::default();
        for w in 0..self.workers {
            t.add(&self.load(w, iface));
        }
        t
    }

    /// Every interface's counters summed over the workers.
    pub fn total(&self) -> IoStats {
        let mut t = IoStats::default();
        for i in 0..self.ifaces {
            t.add(&self.iface(i as IfaceId));
        }
        t
    }

    /// Stores `io`'s per-interface counters as worker `worker`'s (no allocation: `iface_stats`
    /// returns a `Copy` value).
    pub fn publish<B: PacketIo + ?Sized>(&self, worker: usize, io: &B) {
        for i in 0..self.ifaces.min(usize::from(IfaceId::MAX) + 1) {
            self.store(worker, i as IfaceId, &io.iface_stats(i as IfaceId));
        }
    }
}

/// A frame in a hand-off ring slot.
struct Slot {
    len: u16,
    rx_if: IfaceId,
    data: [u8; BUF_SIZE],
}

struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd(2) call; the result is checked and owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; non-blocking.
        unsafe {
            libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }
}

/// A worker's wake-up: an eventfd it polls while asleep, signalled only when it sleeps.
struct Waker {
    efd: EventFd,
    /// Set by the worker before it sleeps in poll(), cleared when it wakes.
    asleep: AtomicBool,
}

impl Waker {
    /// Called after pushing to the worker's hand-off ring: one write(2) if it sleeps (or is
    /// about to), none while it is busy or busy-polling (it sees the ring itself).
    fn wake(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) {
            self.efd.signal();
        }
    }
}

/// Waits until `ready()` or the monotonic clock passes `deadline` (ns): between checks a
/// sched_yield() or a few CPU pause hints, per `mode`.
pub fn spin_until(mode: SpinMode, deadline: Nanos, mut ready: impl FnMut() -> bool) {
    loop {
        if ready() {
            return;
        }
        match mode {
            SpinMode::Yield => {
                // SAFETY: sched_yield(2) takes no arguments and cannot fail in a harmful way.
                unsafe { libc::sched_yield() };
            }
            SpinMode::Pause => {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
        }
        if monotonic_ns() >= deadline {
            return;
        }
    }
}

/// Pins the calling thread to the `nth` CPU it is allowed to run on (best effort).
pub fn pin_to_nth_cpu(nth: usize) -> io::Result<usize> {
    // SAFETY: cpu_set_t is plain old data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads a valid set.
    let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if allowed.is_empty() {
        return Err(io::Error::other("no CPU allowed"));
    }
    let cpu = allowed[nth % allowed.len()];
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside a valid set; `cpu < CPU_SETSIZE`.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpu)
}

/// CLOCK_MONOTONIC in nanoseconds (time since boot, never zero in practice).
pub fn monotonic_ns() -> Nanos {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid, exclusively borrowed value.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Number of CPUs the process may use.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Frames a worker holds while the kernel resolves their next hop, as the kernel itself queues
/// a few packets per unresolved neighbour: the first SYN of a flow after start-up or a link
/// flap leaves milliseconds late instead of being retransmitted a second later. Fixed slots,
/// allocated once per worker; the first `n` are held, oldest first, so frames leave in the
/// order they came.
struct HeldFrames {
    n: usize,
    slots: Box<[HeldFrame]>,
    /// The neighbour snapshot the held frames were last checked against (its generation) and
    /// the earliest time one of them is due to be asked for again or dropped: between the
    /// two, nothing can change for them and they are not looked at.
    checked: u64,
    next_due: Nanos,
}

/// Frames held at most.
const HOLD_SLOTS: usize = 64;

/// Frames held for one next hop at most, so that a next hop that never answers cannot take
/// the slots of others that are being resolved.
const HOLD_PER_HOP: usize = HOLD_SLOTS / 2;

/// After a resolution request a worker holding frames looks every millisecond this long (the
/// neighbour thread reads the kernel's table every millisecond after a request, 5 times at
/// most), then sleeps until a frame is due to be asked for again or dropped.
const HOLD_FAST_NS: Nanos = 10_000_000;

/// How long a frame waits for its next hop before it is a `neighbour_miss` drop. The kernel
/// gives up on a neighbour after 3 probes 1 s apart; a held frame older than this would be
/// retransmitted by its sender anyway.
pub const HOLD_NS: Nanos = 1_000_000_000;

/// A held frame's next hop is asked for again this often (the neighbour thread sends the
/// kernel at most one resolution request per address per [`super::neigh::ASK_EVERY`]).
const REASK_NS: Nanos = 100_000_000;

struct HeldFrame {
    since: Nanos,
    asked: Nanos,
    tx_if: IfaceId,
    next_hop: Ipv4Addr,
    len: usize,
    data: [u8; BUF_SIZE],
}

impl HeldFrames {
    fn new() -> Self {
        let slots = (0..HOLD_SLOTS)
            .map(|_| HeldFrame {
                since: 0,
                asked: 0,
                tx_if: 0,
                next_hop: Ipv4Addr::UNSPECIFIED,
                len: 0,
                data: [0; BUF_SIZE],
            })
            .collect();
        HeldFrames {
            n: 0,
            slots,
            checked: 0,
            next_due: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Copies `frame` into the next free slot; false when every slot, or this next hop's
    /// share of them, is taken.
    fn hold(&mut self, now: Nanos, tx_if: IfaceId, next_hop: Ipv4Addr, frame: &[u8]) -> bool {
        if frame.len() > BUF_SIZE
            || self.slots[..self.n]
                .iter()
                .filter(|h| h.next_hop == next_hop)
                .count()
                >= HOLD_PER_HOP
        {
            return false;
        }
        let Some(h) = self.slots.get_mut(self.n) else {
            return false;
        };
        h.since = now;
        h.asked = now;
        h.tx_if = tx_if;
        h.next_hop = next_hop;
        h.len = frame.len();
        h.data[..frame.len()].copy_from_slice(frame);
        self.n += 1;
        // looked at again at the next batch (the request was just made)
        self.checked = 0;
        true
    }

    /// How long a worker with nothing else to do may sleep, at most `idle_ms`: 1 ms while a
    /// request is fresh, else until the next frame is due.
    fn sleep_ms(&self, now: Nanos, idle_ms: i32) -> i32 {
        if self.n == 0 {
            return idle_ms;
        }
        let fresh = self.slots[..self.n]
            .iter()
            .any(|h| now.saturating_sub(h.asked) < HOLD_FAST_NS);
        if fresh {
            return idle_ms.min(1);
        }
        let due_ms = self.next_due.saturating_sub(now).div_ceil(1_000_000);
        idle_ms.min(due_ms.clamp(1, i32::MAX as u64) as i32)
    }
}

/// Buffers for cutting a super-frame in software: `out` takes each segment as it is cut,
/// `work` the copy the engine processes (and may turn into a reply).
struct SegScratch {
    out: Vec<u8>,
    work: Vec<u8>,
}

impl SegScratch {
    fn new() -> Self {
        SegScratch {
            out: vec![0; BIG_BUF_SIZE],
            work: vec![0; BIG_BUF_SIZE],
        }
    }
}

struct Ctx<'a, B: PacketIo> {
    io: &'a mut B,
    neigh: &'a Neighbours,
    snap: &'a NeighSnapshot,
    rt: &'a mut RtStats,
    held: &'a mut HeldFrames,
    now: Nanos,
}

/// Fills both MACs and queues the frame (with its offload metadata) for transmission.
fn transmit<B: PacketIo>(
    io: &mut B,
    rt: &mut RtStats,
    frame: &mut [u8],
    tx_if: IfaceId,
    dst: [u8; 6],
    off: &Offload,
) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&io.mac(tx_if));
    let sent = if *off == Offload::NONE {
        io.tx_push(tx_if, frame)
    } else {
        io.tx_push_offload(tx_if, frame, off)
    };
    if sent {
        rt.tx_packets += 1;
        rt.tx_bytes += frame.len() as u64;
    }
}

impl<B: PacketIo> Ctx<'_, B> {
    /// Sends the frame to its next hop; one the kernel has not resolved yet triggers
    /// resolution and is held (or, with no slot free, dropped as `neighbour_miss`). A held
    /// frame keeps no offload metadata: its checksum is completed first, and a super-frame is
    /// not held (it comes after a handshake that resolved the next hop).
    fn send(&mut self, frame: &mut [u8], tx_if: IfaceId, next_hop: Ipv4Addr, off: &Offload) {
        if frame.len() < 14 {
            self.rt.dropped += 1;
            return;
        }
        let Some(dst) = self.snap.lookup(tx_if, next_hop) else {
            self.neigh.request(next_hop);
            let holdable = !off.is_gso()
                && (!off.csum_partial || crate::wire::gso::complete_checksum(frame, off));
            if holdable && self.held.hold(self.now, tx_if, next_hop, frame) {
                self.rt.neighbour_queued += 1;
            } else {
                self.rt.neighbour_miss += 1;
            }
            return;
        };
        transmit(self.io, self.rt, frame, tx_if, dst, off);
    }

    /// Sends the held frames whose next hop has resolved, oldest first, and drops those that
    /// waited too long; the rest move up, in order, and their next hops are asked for again
    /// (the first request may have come while an earlier one was still rate-limiting it).
    /// Does nothing unless the neighbour snapshot is a new one or a frame is due.
    fn release_held(&mut self) {
        let generation = self.snap.generation();
        if generation == self.held.checked && self.now < self.held.next_due {
            return;
        }
        self.held.checked = generation;
        let mut next_due = Nanos::MAX;
        let mut kept = 0;
        for i in 0..self.held.n {
            let h = &mut self.held.slots[i];
            if let Some(dst) = self.snap.lookup(h.tx_if, h.next_hop) {
                transmit(
                    self.io,
                    self.rt,
                    &mut h.data[..h.len],
                    h.tx_if,
                    dst,
                    &Offload::NONE,
                );
            } else if self.now.saturating_sub(h.since) >= HOLD_NS {
                self.rt.neighbour_miss += 1;
            } else {
                if self.now.saturating_sub(h.asked) >= REASK_NS {
                    h.asked = self.now;
                    self.neigh.request(h.next_hop);
                }
                next_due = next_due
                    .min(h.asked.saturating_add(REASK_NS))
                    .min(h.since.saturating_add(HOLD_NS));
                self.held.slots.swap(kept, i);
                kept += 1;
            }
        }
        self.held.n = kept;
        self.held.next_due = next_due;
    }

    #[allow(clippy::too_many_arguments)]
    fn handle<E: Engine>(
        &mut self,
        eng: &mut E,
        now: Nanos,
        buf: &mut [u8],
        len: usize,
        rx_if: IfaceId,
        off: Offload,
        seg: &mut SegScratch,
    ) {
        let mut pkt = Packet::with_offload(buf, len, rx_if, off);
        let v = eng.process(now, &mut pkt);
        if v != Verdict::Segment {
            self.act(v, &mut pkt);
            return;
        }
        // Each segment is a frame of its own, processed as if it had come so.
        self.io.count_segmented(rx_if);
        let frame = &pkt.buf[..pkt.len];
        let SegScratch { out, work } = seg;
        let r = crate::wire::gso::segment(frame, &off, out, |s| {
            work[..s.len()].copy_from_slice(s);
            let mut p = Packet::new(&mut work[..], s.len(), rx_if);
            let v = eng.process(now, &mut p);
            self.act(v, &mut p);
        });
        if r.is_err() {
            // check_offload accepted it, so only a segment too large for the scratch
            self.rt.dropped += 1;
        }
    }

    /// Acts on the engine's verdict for `pkt`: sends it (a reply without offload), or counts
    /// why not. A segment is never cut again: `Segment` for one counts as dropped.
    fn act(&mut self, v: Verdict, pkt: &mut Packet<'_>) {
        match v {
            Verdict::Forward { tx_if, next_hop } => {
                self.rt.forwarded += 1;
                let (len, off) = (pkt.len, pkt.offload);
                self.send(&mut pkt.buf[..len], tx_if, next_hop, &off);
            }
            Verdict::Reply { tx_if, next_hop } => {
                self.rt.replies += 1;
                let len = pkt.len;
                self.send(&mut pkt.buf[..len], tx_if, next_hop, &Offload::NONE);
            }
            Verdict::Local => self.rt.local += 1,
            Verdict::Held => self.rt.held += 1,
            Verdict::Drop(_) | Verdict::Segment => self.rt.dropped += 1,
        }
    }

    /// Hands frame `frame` to worker `owner`'s ring: a partial checksum completed and a
    /// super-frame cut first (the rings' slots are [`BUF_SIZE`], and carry no metadata).
    fn hand_off(
        &mut self,
        prod: &mut rtrb::Producer<Slot>,
        frame: &mut [u8],
        rx_if: IfaceId,
        off: &Offload,
        seg: &mut SegScratch,
    ) -> bool {
        let rt = &mut *self.rt;
        let mut push = |f: &[u8]| {
            if f.len() > BUF_SIZE {
                rt.handoff_full += 1;
                return;
            }
            // a slot is built on the stack and moved into the preallocated ring
            let mut slot = Slot {
                len: f.len() as u16,
                rx_if,
                data: [0; BUF_SIZE],
            };
            slot.data[..f.len()].copy_from_slice(f);
            if prod.push(slot).is_ok() {
                rt.handoff_out += 1;
            } else {
                rt.handoff_full += 1;
            }
        };
        if off.is_gso() {
            let ok = crate::wire::gso::segment(frame, off, &mut seg.out, push).is_ok();
            self.io.count_segmented(rx_if);
            if !ok {
                self.rt.dropped += 1;
            }
            return true;
        }
        if off.csum_partial && !crate::wire::gso::complete_checksum(frame, off) {
            self.rt.dropped += 1;
            return true;
        }
        push(frame);
        true
    }
}

/// Runs `cfg.workers` worker threads until `stop` is set; returns their reports.
///
/// `make_engine(i)` and `make_io(i)` are called on worker `i`'s own thread (so neither needs to
/// be `Send`); the engines' clock is CLOCK_MONOTONIC, read once per batch as `epoch` plus the
/// time elapsed since (so it starts far from zero, like the clock of a running machine).
pub fn run<E, B, FE, FB>(
    cfg: &RuntimeConfig,
    make_engine: FE,
    make_io: FB,
    neigh: Arc<Neighbours>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> io::Result<Vec<WorkerReport>>
where
    E: Engine,
    B: PacketIo,
    FE: Fn(usize) -> E + Sync,
    FB: Fn(usize) -> io::Result<B> + Sync,
{
    let n = cfg.workers.max(1);
    let wakers: Vec<Arc<Waker>> = (0..n)
        .map(|_| {
            EventFd::new().map(|efd| {
                Arc::new(Waker {
                    efd,
                    asleep: AtomicBool::new(false),
                })
            })
        })
        .collect::<io::Result<_>>()?;
    // producers[from][to], consumers[to][from]
    let mut producers: Vec<Vec<Option<rtrb::Producer<Slot>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut consumers: Vec<Vec<rtrb::Consumer<Slot>>> = (0..n).map(|_| Vec::new()).collect();
    if n > 1 {
        for (from, row) in producers.iter_mut().enumerate() {
            for (to, cell) in row.iter_mut().enumerate() {
                if from != to {
                    let (p, c) = rtrb::RingBuffer::new(cfg.handoff_slots);
                    *cell = Some(p);
                    consumers[to].push(c);
                }
            }
        }
    }
    let base = monotonic_ns().saturating_sub(epoch.elapsed().as_nanos() as Nanos);
    let mut startup_error: Option<io::Error> = None;
    // Workers that have opened their rings and built their engine (then dropped their caps).
    let started = std::sync::atomic::AtomicUsize::new(0);
    // Workers that have opened their rings (the next one may open its own).
    let opened = std::sync::atomic::AtomicUsize::new(0);
    let caps_errors = std::sync::Mutex::new(Vec::<String>::new());
    let reports = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, (prods, cons)) in producers.into_iter().zip(consumers).enumerate() {
            let make_engine = &make_engine;
            let make_io = &make_io;
            let (started, caps_errors, opened) = (&started, &caps_errors, &opened);
            let neigh = neigh.clone();
            let stop = stop.clone();
            let wakers = wakers.clone();
            let cfg = cfg.clone();
            let h = std::thread::Builder::new()
                .name(format!("tg-worker-{i}"))
                .spawn_scoped(s, move || -> io::Result<WorkerReport> {
                    if cfg.pin {
                        let _ = pin_to_nth_cpu(i);
                    }
                    // Open the rings in worker order: a fanout group numbers its members
                    // in the order they join, and a steering program names workers by it.
                    while opened.load(Ordering::Acquire) < i && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let io = make_io(i);
                    opened.fetch_add(1, Ordering::AcqRel);
                    let mut io = match io {
                        Ok(io) => io,
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    };
                    let mut eng = make_engine(i);
                    if cfg.drop_caps {
                        if let Err(e) = super::caps::drop_all_on_this_thread() {
                            if let Ok(mut v) = caps_errors.lock() {
                                v.push(format!("worker {i}: {e}"));
                            }
                        }
                    }
                    started.fetch_add(1, Ordering::AcqRel);
                    let r = worker_loop(
                        i, &cfg, &mut eng, &mut io, &neigh, &stop, &wakers, prods, cons, epoch,
                        base,
                    );
                    // A worker that cannot go on (an interface removed) stops them all: the
                    // daemon exits with the error, and its supervisor restarts it, rather than
                    // leaving that worker's share of the flows unserved.
                    r.map_err(|e| {
                        stop.store(true, Ordering::Relaxed);
                        io::Error::new(e.kind(), format!("worker {i}: {e}"))
                    })
                })
                .expect("spawn worker thread");
            handles.push(h);
        }
        if cfg.drop_caps {
            while started.load(Ordering::Acquire) < n && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if !stop.load(Ordering::Relaxed) {
                if let Err(e) = super::caps::retain_on_this_thread(&super::caps::MAIN_THREAD_KEEPS)
                {
                    if let Ok(mut v) = caps_errors.lock() {
                        v.push(format!("main thread: {e}"));
                    }
                }
                if let Ok(v) = caps_errors.lock() {
                    for e in v.iter() {
                        cfg.notices.post(format!("capabilities not dropped on {e}"));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => {
                    if startup_error.is_none() {
                        startup_error = Some(e);
                    }
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    if startup_error.is_none() {
                        startup_error = Some(io::Error::other("a worker thread panicked"));
                    }
                }
            }
        }
        out
    });
    match startup_error {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_loop<E: Engine, B: PacketIo>(
    me: usize,
    cfg: &RuntimeConfig,
    eng: &mut E,
    io: &mut B,
    neigh: &Neighbours,
    stop: &AtomicBool,
    wakers: &[Arc<Waker>],
    mut prods: Vec<Option<rtrb::Producer<Slot>>>,
    mut cons: Vec<rtrb::Consumer<Slot>>,
    epoch: Instant,
    base: Nanos,
) -> io::Result<WorkerReport> {
    let n = wakers.len();
    let mut batch = Batch::new(cfg.batch.max(1));
    let mut hints: Vec<Option<FlowHint>> = vec![None; batch.capacity()];
    let mut scratch = vec![0u8; BUF_SIZE];
    let mut seg = SegScratch::new();
    let mut rt = RtStats::default();
    let mut held = HeldFrames::new();
    let mut wake = vec![false; n];
    let my_efd = wakers[me].efd.0.as_raw_fd();
    // Clock of the last batch that did any work (frames, hand-offs, engine transmissions).
    let mut last_work: Nanos = 0;
    let mut last_housekeeping: Nanos = 0;
    let mut last_io_publish: Nanos = 0;
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        io.rx_batch(&mut batch)?;
        let now = base + epoch.elapsed().as_nanos() as Nanos;
        let snap = neigh.load();
        let mut ctx = Ctx {
            io,
            neigh,
            snap: &snap,
            rt: &mut rt,
            held: &mut held,
            now,
        };
        // Held frames whose next hop resolved leave before this batch's frames to that hop.
        if !ctx.held.is_empty() {
            ctx.release_held();
        }
        let mut work = batch.len();
        // Overlap the batch's table misses: every frame's index line, then its flow line (or
        // the slab line a new flow will take), are requested before the first is processed.
        for (i, h) in hints.iter_mut().enumerate().take(batch.len()) {
            *h = eng.warm_index(batch.frame(i).1);
        }
        let mut misses = 0;
        for h in hints.iter().take(batch.len()).flatten() {
            eng.warm_flow(h, &mut misses);
        }
        for i in 0..batch.len() {
            let off = batch.offload(i);
            let (rx_if, buf, len) = batch.get_mut(i);
            ctx.rt.rx_packets += 1;
            ctx.rt.rx_bytes += len as u64;
            if n > 1 {
                if let Some(owner) = eng.owner_of(&buf[..len]) {
                    if owner != me && owner < n {
                        if let Some(p) = prods[owner].as_mut() {
                            ctx.hand_off(p, &mut buf[..len], rx_if, &off, &mut seg);
                            wake[owner] = true;
                            continue;
                        }
                    }
                }
            }
            ctx.handle(eng, now, buf, len, rx_if, off, &mut seg);
        }
        // frames other workers handed to us (bounded per round)
        for c in cons.iter_mut() {
            for _ in 0..cfg.batch.max(1) {
                let Ok(mut slot) = c.pop() else { break };
                ctx.rt.handoff_in += 1;
                work += 1;
                let len = slot.len as usize;
                ctx.handle(
                    eng,
                    now,
                    &mut slot.data,
                    len,
                    slot.rx_if,
                    Offload::NONE,
                    &mut seg,
                );
            }
        }
        while let Some((len, tx_if, nh)) = eng.poll_transmit(&mut scratch) {
            let len = len.min(scratch.len());
            ctx.send(&mut scratch[..len], tx_if, nh, &Offload::NONE);
            work += 1;
        }
        drop(snap);
        io.tx_flush()?;
        // Between batches, but not after every one: its gauges and scans are per-loop costs
        // that a frame-at-a-time load (connection setup) would otherwise pay per frame.
        if now.saturating_sub(last_housekeeping) >= HOUSEKEEPING_EVERY_NS {
            eng.housekeeping(now, 64);
            last_housekeeping = now;
            if let Some(live) = &cfg.live_io {
                if now.saturating_sub(last_io_publish) >= IO_PUBLISH_EVERY_NS {
                    live.publish(me, io);
                    last_io_publish = now;
                }
            }
        }
        for (j, w) in wake.iter_mut().enumerate() {
            if *w {
                wakers[j].wake();
                *w = false;
            }
        }
        if work > 0 {
            last_work = now;
            continue;
        }
        if cfg.busy_poll.keep_polling(now.saturating_sub(last_work)) {
            // Busy polling: wait in shared memory until a frame (or a hand-off) is there or
            // the window closes, then run the loop again (which finds the frame, or sleeps).
            let deadline = last_work.saturating_add(cfg.busy_poll.window_ns);
            spin_until(cfg.busy_poll.mode, deadline, || {
                stop.load(Ordering::Relaxed) || io.rx_ready() || cons.iter().any(|c| !c.is_empty())
            });
            continue;
        }
        let sleep_ms = held.sleep_ms(now, cfg.idle_timeout_ms);
        if n > 1 {
            // Tell producers to signal the eventfd from now on, then look once more: a frame
            // handed over before the flag was visible is seen here (both sides fence).
            wakers[me].asleep.store(true, Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::SeqCst);
            if cons.iter().all(|c| c.is_empty()) && !io.rx_ready() {
                io.wait(sleep_ms, Some(my_efd))?;
            }
            wakers[me].asleep.store(false, Ordering::Relaxed);
            wakers[me].efd.drain();
        } else if !io.rx_ready() {
            io.wait(sleep_ms, None)?;
        }
    }
    // frames still waiting for a next hop are lost with the worker
    rt.neighbour_miss += held.n as u64;
    if let Some(live) = &cfg.live_io {
        live.publish(me, io);
    }
    Ok(WorkerReport {
        index: me,
        rt,
        io: io.stats(),
        drops: eng.drop_counts(),
        flows: eng.flow_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unresolved_next_hops_hold_frames_until_resolved_or_too_old() {
        let mut io = crate::io::memio::MemIo::new(vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
        let neigh = Neighbours::fixed(NeighSnapshot::default());
        let hop = Ipv4Addr::new(192, 0, 2, 9);
        let mut rt = RtStats::default();
        let mut held = HeldFrames::new();
        let empty = NeighSnapshot::from_entries(2, &[]);
        let mut ctx = Ctx {
            io: &mut io,
            neigh: &neigh,
            snap: &empty,
            rt: &mut rt,
            held: &mut held,
            now: 1_000,
        };
        // one next hop gets half the slots at most, so a dead one cannot starve the others
        for i in 0..=HOLD_PER_HOP {
            ctx.send(&mut [i as u8; 60], 1, hop, &Offload::NONE);
        }
        assert_eq!(ctx.rt.neighbour_queued, HOLD_PER_HOP as u64);
        assert_eq!(ctx.rt.neighbour_miss, 1);
        let second = Ipv4Addr::new(192, 0, 2, 8);
        for i in HOLD_PER_HOP..=HOLD_SLOTS {
            ctx.send(&mut [i as u8; 60], 1, second, &Offload::NONE);
        }
        // every slot taken, the frames too many dropped, nothing sent
        assert_eq!(ctx.rt.neighbour_queued, HOLD_SLOTS as u64);
        assert_eq!(ctx.rt.neighbour_miss, 2);
        assert_eq!(ctx.held.n, HOLD_SLOTS);
        // not resolved, not old yet: still held
        ctx.now = 1_000 + HOLD_NS - 1;
        ctx.release_held();
        assert_eq!(ctx.held.n, HOLD_SLOTS);
        // resolved: all sent, in slot order, with the next hop's MAC and ours
        let resolved =
            NeighSnapshot::from_entries(2, &[(1, hop, [0xbb; 6]), (1, second, [0xbb; 6])]);
        ctx.snap = &resolved;
        ctx.release_held();
        assert!(ctx.held.is_empty());
        assert_eq!(ctx.rt.tx_packets, HOLD_SLOTS as u64);
        ctx.io.tx_flush().expect("flush");
        let tx = ctx.io.take_tx();
        assert_eq!(tx.len(), HOLD_SLOTS);
        for (i, (tx_if, f)) in tx.iter().enumerate() {
            assert_eq!(*tx_if, 1);
            assert_eq!(&f[0..6], &[0xbb; 6]);
            assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 2]);
            assert_eq!(f[20], i as u8);
        }
        // a next hop that never resolves: dropped once the frame is HOLD_NS old
        ctx.snap = &empty;
        ctx.now = 5_000;
        let mut f = [7u8; 60];
        ctx.send(&mut f, 1, hop, &Offload::NONE);
        // not resolved yet: still held, and the worker's sleep follows the request's age
        ctx.release_held();
        assert_eq!(ctx.held.n, 1);
        assert_eq!(
            ctx.held.sleep_ms(ctx.now, 100),
            1,
            "a fresh request: 1 ms looks"
        );
        assert_eq!(
            ctx.held.sleep_ms(ctx.now + HOLD_FAST_NS, 100),
            90,
            "then sleep until the re-ask is due"
        );
        ctx.now = 5_000 + HOLD_NS;
        ctx.release_held();
        assert!(ctx.held.is_empty());
        assert_eq!(ctx.rt.neighbour_miss, 3);
        assert_eq!(ctx.rt.neighbour_queued, HOLD_SLOTS as u64 + 1);
        // two next hops interleaved: each hop's frames leave in the order they came
        let other = Ipv4Addr::new(192, 0, 2, 10);
        for (tag, h) in [(1u8, hop), (2, other), (3, hop)] {
            ctx.send(&mut [tag; 60], 1, h, &Offload::NONE);
        }
        let only_other = NeighSnapshot::from_entries(2, &[(1, other, [0xcc; 6])]);
        ctx.snap = &only_other;
        ctx.release_held();
        assert_eq!(ctx.held.n, 2);
        ctx.send(&mut [4u8; 60], 1, hop, &Offload::NONE);
        let both = NeighSnapshot::from_entries(2, &[(1, other, [0xcc; 6]), (1, hop, [0xbb; 6])]);
        ctx.snap = &both;
        ctx.release_held();
        ctx.io.tx_flush().expect("flush");
        let tags: Vec<u8> = ctx.io.take_tx().iter().map(|(_, f)| f[20]).collect();
        assert_eq!(tags, vec![2, 1, 3, 4]);
    }

    #[test]
    fn busy_poll_window() {
        let bp = BusyPoll {
            window_ns: 50_000,
            mode: SpinMode::Yield,
        };
        assert!(bp.keep_polling(0));
        assert!(bp.keep_polling(49_999));
        assert!(!bp.keep_polling(50_000));
        assert!(!bp.keep_polling(u64::MAX));
        // off: never polls, sleeps at once
        assert!(!BusyPoll::OFF.keep_polling(0));
        assert_eq!(BusyPoll::default().window_ns, DEFAULT_BUSY_POLL_US * 1_000);
    }

    #[test]
    fn spin_until_stops_when_ready_or_past_the_deadline() {
        for mode in [SpinMode::Yield, SpinMode::Pause] {
            // ready at once: no step at all
            let mut calls = 0;
            spin_until(mode, u64::MAX, || {
                calls += 1;
                true
            });
            assert_eq!(calls, 1);
            // ready on the fifth check, far from the deadline
            let mut calls = 0;
            spin_until(mode, u64::MAX, || {
                calls += 1;
                calls == 5
            });
            assert_eq!(calls, 5);
            // never ready, deadline already past: one check, one step, back
            let mut calls = 0;
            spin_until(mode, 0, || {
                calls += 1;
                false
            });
            assert_eq!(calls, 1);
        }
    }

    #[test]
    fn live_io_stats_keep_each_worker_and_interface_apart() {
        let live = LiveIoStats::new(2, 3);
        assert_eq!((live.workers(), live.ifaces()), (2, 3));
        assert_eq!(live.total(), IoStats::default());
        let a = IoStats::from_values(std::array::from_fn(|i| i as u64 + 1));
        let b = IoStats {
            rx_oversize: 10,
            tx_errors: 4,
            ..IoStats::default()
        };
        live.store(0, 2, &a);
        live.store(1, 2, &b);
        live.store(1, 0, &b);
        assert_eq!(live.load(0, 2), a);
        assert_eq!(live.load(1, 2), b);
        assert_eq!(live.load(0, 0), IoStats::default());
        let mut ab = a;
        ab.add(&b);
        assert_eq!(live.iface(2), ab);
        assert_eq!(live.iface(0), b);
        assert_eq!(live.iface(1), IoStats::default());
        let mut all = ab;
        all.add(&b);
        assert_eq!(live.total(), all);
        // a later publication replaces the earlier one (the backend's counters are totals)
        live.store(1, 2, &IoStats::default());
        assert_eq!(live.iface(2), a);
        // out of range: ignored, zeros
        live.store(2, 0, &a);
        live.store(0, 3, &a);
        assert_eq!(live.load(2, 0), IoStats::default());
        assert_eq!(live.load(0, 3), IoStats::default());
        assert_eq!(live.iface(0), b);
        // no two workers share a cache line
        assert_eq!(std::mem::align_of::<LiveIoCell>(), 64);
        // publish: every interface the backend answers for
        let io = crate::io::memio::MemIo::new(vec![[2, 0, 0, 0, 0, 1]; 3]);
        io.queues.lock().unwrap().iface_stats = vec![b, IoStats::default(), a];
        live.publish(0, &io);
        assert_eq!(live.load(0, 0), b);
        assert_eq!(live.load(0, 2), a);
    }

    /// Drops everything.
    struct Null;

    impl Engine for Null {
        fn process(&mut self, _now: Nanos, _pkt: &mut Packet<'_>) -> Verdict {
            Verdict::Drop(DropReason::ALL[0])
        }
        fn poll_transmit(&mut self, _buf: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)> {
            None
        }
        fn owner_of(&self, _frame: &[u8]) -> Option<usize> {
            None
        }
        fn drop_counts(&self) -> [u64; DropReason::COUNT] {
            [0; DropReason::COUNT]
        }
        fn flow_count(&self) -> usize {
            0
        }
    }

    #[test]
    fn workers_publish_their_io_counters_while_they_run() {
        let io = crate::io::memio::MemIo::new(vec![[2, 0, 0, 0, 0, 1]; 2]);
        let q = io.clone();
        let live = Arc::new(LiveIoStats::new(1, 2));
        let cfg = RuntimeConfig {
            workers: 1,
            pin: false,
            idle_timeout_ms: 5,
            busy_poll: BusyPoll::OFF,
            live_io: Some(live.clone()),
            ..RuntimeConfig::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (live.clone(), stop.clone());
        let watcher = std::thread::spawn(move || {
            let wait_for = |want: u64| {
                let t0 = Instant::now();
                while l2.iface(1).rx_oversize != want {
                    if t0.elapsed() > std::time::Duration::from_secs(5) {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                true
            };
            let set = |n: u64| {
                q.queues.lock().unwrap().iface_stats = vec![
                    IoStats::default(),
                    IoStats {
                        rx_oversize: n,
                        ..IoStats::default()
                    },
                ];
                // a frame, so the worker runs a batch (and its housekeeping) now
                q.inject(0, &[0u8; 60]);
            };
            set(3);
            let first = wait_for(3);
            set(7);
            let second = wait_for(7);
            // the last value is stored again at exit; set one the loop may not have seen
            q.queues.lock().unwrap().iface_stats[1].rx_oversize = 9;
            s2.store(true, Ordering::Relaxed);
            (first, second)
        });
        let reports = run(
            &cfg,
            |_| Null,
            |_| Ok(io.clone()),
            Neighbours::fixed(NeighSnapshot::default()),
            stop,
            Instant::now(),
        )
        .expect("runtime");
        let (first, second) = watcher.join().expect("watcher");
        assert!(first && second, "published while running: {first} {second}");
        assert_eq!(live.iface(1).rx_oversize, 9, "and once more at exit");
        assert_eq!(reports[0].io.rx_oversize, 9);
    }
}
