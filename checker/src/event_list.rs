//! [`EventList`]: the calls and returns of the operations being checked, sorted by time, as a
//! doubly linked list whose entries are unlinked and relinked in place ("dancing links") as the
//! search linearizes operations and backtracks. It knows nothing of models or states.

use crate::history::OpRef;

/// "No entry" in the linked list.
pub(crate) const NIL: usize = usize::MAX;

/// The list's sentinel head.
pub(crate) const HEAD: usize = 0;

/// The call/return event list, as parallel arrays indexed by entry number
/// (entry 0 is the head sentinel). Unlinked entries keep their `prev`/`next`
/// so they can be relinked in place when the search backtracks.
pub(crate) struct EventList {
    pub(crate) next: Vec<usize>,
    pub(crate) prev: Vec<usize>,
    /// Operation (position in the `ops` slice) of each entry.
    pub(crate) op: Vec<usize>,
    pub(crate) is_return: Vec<bool>,
    /// Return entry of each operation, `NIL` if indeterminate.
    pub(crate) return_entry: Vec<usize>,
}

impl EventList {
    pub(crate) fn new<I, O>(ops: &[OpRef<'_, I, O>]) -> Self {
        // (time, is_return, op): sorting puts calls before returns at equal
        // times, so such operations are treated as concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if let Some(ret) = op.ret {
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();

        let len = events.len() + 1;
        let mut list = EventList {
            next: (1..=len).map(|e| if e == len { NIL } else { e }).collect(),
            prev: (0..len).map(|e| e.wrapping_sub(1)).collect(),
            op: Vec::with_capacity(len),
            is_return: Vec::with_capacity(len),
            return_entry: vec![NIL; ops.len()],
        };
        // Head sentinel: its op/is_return are never read.
        list.op.push(NIL);
        list.is_return.push(false);
        for (entry, &(_, is_return, op)) in events.iter().enumerate().map(|(k, e)| (k + 1, e)) {
            list.op.push(op);
            list.is_return.push(is_return);
            if is_return {
                list.return_entry[op] = entry;
            }
        }
        list
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    /// Removes a call entry and its return entry: the operation is linearized.
    pub(crate) fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.return_entry[self.op[call]];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Exact inverse of [`EventList::lift`]; lifts must be undone in reverse order.
    pub(crate) fn unlift(&mut self, call: usize) {
        let ret = self.return_entry[self.op[call]];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}
