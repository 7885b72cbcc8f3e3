//! Policy updates from the control plane to the workers: a generation number and the current
//! policy. Workers compare the generation once per loop iteration (one atomic load) and adopt a
//! new policy on their own thread; nothing is locked on the packet path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::policy::Policy;

/// The policy every worker should run.
pub struct PolicyCell {
    generation: AtomicU64,
    current: ArcSwap<Arc<dyn Policy>>,
}

impl std::fmt::Debug for PolicyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCell")
            .field("generation", &self.generation())
            .finish()
    }
}

impl PolicyCell {
    pub fn new(p: Arc<dyn Policy>) -> Arc<Self> {
        Arc::new(PolicyCell {
            generation: AtomicU64::new(0),
            current: ArcSwap::from_pointee(p),
        })
    }
    /// Publishes a new policy; workers pick it up at their next iteration.
    pub fn publish(&self, p: Arc<dyn Policy>) {
        self.current.store(Arc::new(p));
        self.generation.fetch_add(1, Ordering::Release);
    }
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub fn current(&self) -> Arc<dyn Policy> {
        Arc::clone(&self.current.load())
    }
}
