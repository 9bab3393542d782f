//! Waiting inside one executor: a list of wakers to wake when a condition
//! may have changed. Single-threaded (tasks of one shard), no locks.

use std::cell::RefCell;
use std::task::{Poll, Waker};

#[derive(Default)]
pub(crate) struct WaitList {
    wakers: RefCell<Vec<Waker>>,
    /// Reused storage for waking (no allocation per wake).
    spare: RefCell<Vec<Waker>>,
}

impl WaitList {
    /// Resolves once `ready()` holds; re-checked each time the list is
    /// woken.
    pub(crate) async fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        futures_lite::future::poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            let mut w = self.wakers.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    pub(crate) fn wake_all(&self) {
        let mut wakers = self.spare.take();
        std::mem::swap(&mut wakers, &mut *self.wakers.borrow_mut());
        for w in wakers.drain(..) {
            w.wake();
        }
        *self.spare.borrow_mut() = wakers;
    }
}

/// A periodic event: fired by a timer task, taken by the loop it wakes.
#[derive(Default)]
pub(crate) struct Ticker {
    due: std::cell::Cell<bool>,
    waiters: WaitList,
}

impl Ticker {
    pub(crate) fn fire(&self) {
        self.due.set(true);
        self.waiters.wake_all();
    }

    /// Whether a tick is due (and clears it).
    pub(crate) fn take(&self) -> bool {
        self.due.replace(false)
    }

    /// Resolves once a tick is due.
    pub(crate) async fn wait(&self) {
        self.waiters.wait_until(|| self.due.get()).await
    }
}

/// Moves what `inbox` holds into `out` (swapping buffers when `out` is
/// empty, so both are reused); whether anything moved.
pub(crate) fn drain_into<T>(inbox: &std::cell::RefCell<Vec<T>>, out: &mut Vec<T>) -> bool {
    let mut inbox = inbox.borrow_mut();
    if inbox.is_empty() {
        return false;
    }
    if out.is_empty() {
        std::mem::swap(out, &mut inbox);
    } else {
        out.append(&mut inbox);
    }
    true
}
