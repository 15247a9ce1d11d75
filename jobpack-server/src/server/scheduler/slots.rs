//! The runner's slots: at most `max_concurrent` jobs pack or run at once, and at most a named
//! queue's own concurrency of that queue's jobs. A job waits for both; whenever a slot frees,
//! the waiting job with the highest priority whose queue has room goes next (the earliest among
//! equals). A waiter that gives up (a cancel) simply drops its future.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The queue of jobs that name none; its concurrency is the global one.
pub const DEFAULT_QUEUE: &str = "default";

pub struct Slots {
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Each named queue: (its concurrency, its jobs holding a slot).
    queues: HashMap<String, (usize, usize)>,
    /// Waiters in the order they are served: highest priority, then earliest.
    waiting: BTreeMap<(std::cmp::Reverse<i32>, u64), (String, oneshot::Sender<Permit>)>,
    seq: u64,
}

/// A held slot (of the global pool and of its queue), given back when dropped.
pub struct Permit {
    slots: Arc<Slots>,
    queue: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        s.free += 1;
        if let Some(q) = s.queues.get_mut(&self.queue) {
            q.1 -= 1;
        }
        drop(s);
        Slots::dispatch(&self.slots);
    }
}

impl Slots {
    /// `max_concurrent` slots in all; `queues`: named queues and their own concurrency.
    pub fn new(max_concurrent: usize, queues: &BTreeMap<String, usize>) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(State {
                free: max_concurrent.max(1),
                queues: queues
                    .iter()
                    .map(|(k, v)| (k.clone(), ((*v).max(1), 0)))
                    .collect(),
                waiting: BTreeMap::new(),
                seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for a job of `queue` (an unknown name: the default queue) with
    /// `priority`.
    pub async fn acquire(self: &Arc<Self>, queue: Option<&str>, priority: i32) -> Permit {
        let rx = {
            let mut s = self.lock();
            let queue = match queue {
                Some(q) if s.queues.contains_key(q) => q.to_owned(),
                _ => DEFAULT_QUEUE.to_owned(),
            };
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let key = (std::cmp::Reverse(priority), s.seq);
            s.waiting.insert(key, (queue, tx));
            rx
        };
        Slots::dispatch(self);
        match rx.await {
            Ok(p) => p,
            // The sender is only dropped with the Slots, which outlive every waiter.
            Err(_) => std::future::pending().await,
        }
    }

    /// Gives free slots to the waiters first in line whose queue has room.
    fn dispatch(this: &Arc<Self>) {
        let mut s = this.lock();
        while s.free > 0 {
            let next = s.waiting.iter().find_map(|(k, (q, _))| {
                let room = s.queues.get(q).is_none_or(|(limit, used)| used < limit);
                room.then_some(*k)
            });
            let Some(key) = next else { break };
            let Some((queue, tx)) = s.waiting.remove(&key) else {
                break;
            };
            s.free -= 1;
            if let Some(q) = s.queues.get_mut(&queue) {
                q.1 += 1;
            }
            let permit = Permit {
                slots: this.clone(),
                queue,
            };
            // Its waiter is gone (cancelled): the permit comes back through its Drop, which
            // needs the lock, so give it back after unlocking.
            if let Err(permit) = tx.send(permit) {
                drop(s);
                drop(permit);
                return;
            }
        }
    }

    /// Jobs waiting, per queue name.
    pub fn waiting_by_queue(&self) -> BTreeMap<String, usize> {
        let s = self.lock();
        let mut out = BTreeMap::new();
        for (q, _) in s.waiting.values() {
            *out.entry(q.clone()).or_insert(0) += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn higher_priority_first_fifo_among_equals_and_queues_hold_their_own_limit() {
        let queues = BTreeMap::from([("gpu".to_owned(), 1)]);
        let slots = Slots::new(2, &queues);
        let held = slots.acquire(None, 0).await;
        let gpu = slots.acquire(Some("gpu"), 0).await;
        // Both slots are taken: these wait.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, queue, prio) in [
            ("low", None, 0),
            ("gpu2", Some("gpu"), 9),
            ("high", None, 5),
            ("low2", None, 0),
        ] {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = slots.acquire(queue, prio).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(slots.waiting_by_queue().get("gpu"), Some(&1));
        // The default slot frees: gpu2 has the highest priority but its queue is full.
        drop(held);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*order.lock().unwrap(), ["high"]);
        drop(gpu);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "gpu2", "low", "low2"]);
        // A waiter that gives up leaves nothing held.
        let a = slots.acquire(None, 0).await;
        let b = slots.acquire(None, 0).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), slots.acquire(None, 0)).await;
        assert!(gave_up.is_err());
        drop((a, b));
        let _c = slots.acquire(None, 0).await;
        let _d = slots.acquire(None, 0).await;
    }
}
