//! What the I/O layer has to tell the operator (a link going down, capabilities that could not
//! be dropped), posted for a control thread to log ([`crate::control::iowatch`]). The workers
//! never write to stderr or call the logging crate: a slow stderr (a full pipe, a busy
//! journald) would stall the dataplane.

use std::sync::{Arc, Mutex};

/// A bounded list of messages shared by the workers (who post) and a control thread (who
/// takes and logs them, as warnings). Posting never waits: when the list is busy or full the
/// message is dropped (the event is still counted, e.g. in `link_errors`).
#[derive(Clone, Debug, Default)]
pub struct IoNotices(Arc<Mutex<Vec<String>>>);

impl IoNotices {
    /// Messages kept until the control thread takes them; more are dropped.
    pub const MAX: usize = 64;

    /// Adds a message unless the list is busy or full.
    pub fn post(&self, msg: String) {
        if let Ok(mut v) = self.0.try_lock() {
            if v.len() < Self::MAX {
                v.push(msg);
            }
        }
    }

    /// Takes every message posted so far, oldest first.
    pub fn take(&self) -> Vec<String> {
        match self.0.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_taken_in_order_and_bounded() {
        let n = IoNotices::default();
        let worker = n.clone();
        worker.post("a".into());
        worker.post("b".into());
        assert_eq!(n.take(), ["a", "b"]);
        assert!(n.take().is_empty());
        for i in 0..IoNotices::MAX + 10 {
            worker.post(i.to_string());
        }
        let v = n.take();
        assert_eq!(v.len(), IoNotices::MAX);
        assert_eq!(v[0], "0");
    }
}
