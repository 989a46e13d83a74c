//! The precise dispatch core of one revision: pods with slots and a bounded FIFO of waiters.
//!
//! Pure and synchronous, so the gateway (behind one mutex per revision) and the simulator drive
//! exactly the same rules:
//! - a pod never holds more than `container_concurrency` requests (0 = unlimited);
//! - a request takes a slot at once only when nobody waits before it (FIFO);
//! - the pod with the fewest requests in flight wins, ties broken round-robin;
//! - excess waits in a queue of bounded depth and gets the first slot that frees up;
//! - a reserved instance (`tidegate.dev/reserved-instances`) takes work, up to its own limit,
//!   only while no regular pod does: a regular pod that becomes ready drains every reserved
//!   one at once, and a reserved one that becomes ready beside a regular pod takes nothing.
//!   Reserved pods are not counted in [`DispatchQueue::ready_pods`].

use std::collections::VecDeque;
use std::net::SocketAddr;

/// Identifies a pod within the gateway.
pub type PodId = u64;

/// A queued waiter's place in line.
pub type Ticket = u64;

/// One pod as dispatch sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSlots {
    pub id: PodId,
    pub address: SocketAddr,
    /// Requests from this gateway running on the pod.
    pub in_flight: u32,
    /// False once the pod drains (scale down) or fails: it gets no new work.
    pub accepting: bool,
    /// A reserved instance rather than a regular pod.
    pub reserved: bool,
    /// Requests it takes at once; 0 = unlimited.
    pub limit: u32,
    /// A reserved instance that became ready beside a regular pod: it takes work once no
    /// regular pod does (a hand-over retires it for good instead).
    pub standby: bool,
}

/// A slot granted on a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub pod: PodId,
    pub address: SocketAddr,
}

/// Dispatch state of one revision.
#[derive(Debug)]
pub struct DispatchQueue<W> {
    container_concurrency: u32,
    depth: usize,
    pods: Vec<PodSlots>,
    waiting: VecDeque<(Ticket, W)>,
    next_ticket: Ticket,
    next_pod: usize,
}

impl<W> DispatchQueue<W> {
    /// `container_concurrency` 0 means unlimited; `depth` bounds the waiting queue.
    pub fn new(container_concurrency: u32, depth: usize) -> Self {
        Self {
            container_concurrency,
            depth,
            pods: Vec::new(),
            waiting: VecDeque::new(),
            next_ticket: 0,
            next_pod: 0,
        }
    }

    pub fn container_concurrency(&self) -> u32 {
        self.container_concurrency
    }

    /// Takes a slot at once if one is free and nobody is waiting.
    pub fn try_acquire(&mut self) -> Option<Slot> {
        if !self.waiting.is_empty() {
            return None;
        }
        self.take_free_slot()
    }

    /// Queues a waiter; hands it back when the queue is full.
    pub fn enqueue(&mut self, waiter: W) -> Result<Ticket, W> {
        if self.waiting.len() >= self.depth {
            return Err(waiter);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.push_back((ticket, waiter));
        Ok(ticket)
    }

    /// Removes a waiter that gave up (timeout, client gone). `None` if it was already handed a
    /// slot (or never queued).
    pub fn cancel(&mut self, ticket: Ticket) -> Option<W> {
        // Tickets grow monotonically from front to back.
        let index = self
            .waiting
            .binary_search_by_key(&ticket, |(t, _)| *t)
            .ok()?;
        self.waiting.remove(index).map(|(_, w)| w)
    }

    /// Frees a slot on `pod`; if someone waits, the slot goes to the longest waiter.
    pub fn release(&mut self, pod: PodId) -> Option<(W, Slot)> {
        if let Some(p) = self.pods.iter_mut().find(|p| p.id == pod) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        self.hand_over()
    }

    /// Gives the next waiter a slot if one is free. Call again after a hand-over failed (the
    /// waiter had gone) — the slot it got must then be [`release`](Self::release)d.
    pub fn hand_over(&mut self) -> Option<(W, Slot)> {
        if self.waiting.is_empty() {
            return None;
        }
        let slot = self.take_free_slot()?;
        let (_, waiter) = self.waiting.pop_front()?;
        Some((waiter, slot))
    }

    /// A pod became ready. Returns the waiters it takes at once. Every reserved instance
    /// stops taking new work.
    pub fn add_pod(&mut self, id: PodId, address: SocketAddr) -> Vec<(W, Slot)> {
        let limit = self.container_concurrency;
        self.insert_pod(id, address, false, limit, true);
        for pod in self.pods.iter_mut().filter(|p| p.reserved) {
            pod.accepting = false;
            pod.standby = false;
        }
        self.hand_all()
    }

    /// A reserved instance became ready, taking up to `limit` requests at once (0 =
    /// unlimited). It takes work only while no regular pod does.
    pub fn add_reserved_pod(
        &mut self,
        id: PodId,
        address: SocketAddr,
        limit: u32,
    ) -> Vec<(W, Slot)> {
        let alone = !self.regular_accepting();
        self.insert_pod(id, address, true, limit, alone);
        self.hand_all()
    }

    /// Adds or re-adds a pod; a reserved one that may not take work stands by.
    fn insert_pod(
        &mut self,
        id: PodId,
        address: SocketAddr,
        reserved: bool,
        limit: u32,
        accepting: bool,
    ) {
        let standby = reserved && !accepting;
        if let Some(p) = self.pods.iter_mut().find(|p| p.id == id) {
            p.accepting = accepting;
            p.standby = standby;
            p.address = address;
        } else {
            self.pods.push(PodSlots {
                id,
                address,
                in_flight: 0,
                accepting,
                reserved,
                limit,
                standby,
            });
        }
    }

    fn hand_all(&mut self) -> Vec<(W, Slot)> {
        let mut handed = Vec::new();
        while let Some(pair) = self.hand_over() {
            handed.push(pair);
        }
        handed
    }

    /// Stops sending new work to a pod; its running requests finish. Returns the waiters a
    /// reserved instance on standby takes once no regular pod is left.
    pub fn drain_pod(&mut self, id: PodId) -> Vec<(W, Slot)> {
        if let Some(p) = self.pods.iter_mut().find(|p| p.id == id) {
            p.accepting = false;
            p.standby = false;
        }
        self.wake_standby()
    }

    /// Forgets a pod (it exited). Returns the requests it still had in flight.
    pub fn remove_pod(&mut self, id: PodId) -> u32 {
        match self.pods.iter().position(|p| p.id == id) {
            Some(i) => self.pods.remove(i).in_flight,
            None => 0,
        }
    }

    fn regular_accepting(&self) -> bool {
        self.pods.iter().any(|p| !p.reserved && p.accepting)
    }

    /// Reserved instances on standby take work when no regular pod does (call after a pod
    /// was removed without draining).
    pub fn wake_standby(&mut self) -> Vec<(W, Slot)> {
        if self.regular_accepting() || !self.pods.iter().any(|p| p.standby) {
            return Vec::new();
        }
        for pod in self.pods.iter_mut().filter(|p| p.standby) {
            pod.standby = false;
            pod.accepting = true;
        }
        self.hand_all()
    }

    /// Requests running on pods.
    pub fn in_flight(&self) -> u64 {
        self.pods.iter().map(|p| u64::from(p.in_flight)).sum()
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// Regular pods that take new work (reserved instances are not counted).
    pub fn ready_pods(&self) -> usize {
        self.pods
            .iter()
            .filter(|p| p.accepting && !p.reserved)
            .count()
    }

    /// Reserved instances that take new work.
    pub fn reserved_ready(&self) -> usize {
        self.pods
            .iter()
            .filter(|p| p.accepting && p.reserved)
            .count()
    }

    pub fn pods(&self) -> &[PodSlots] {
        &self.pods
    }

    pub fn pod(&self, id: PodId) -> Option<&PodSlots> {
        self.pods.iter().find(|p| p.id == id)
    }

    fn take_free_slot(&mut self) -> Option<Slot> {
        let n = self.pods.len();
        if n == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (self.next_pod + k) % n;
            let p = &self.pods[i];
            if !p.accepting || (p.limit > 0 && p.in_flight >= p.limit) {
                continue;
            }
            if best.is_none_or(|b| p.in_flight < self.pods[b].in_flight) {
                best = Some(i);
            }
        }
        let i = best?;
        self.next_pod = (i + 1) % n;
        let pod = &mut self.pods[i];
        pod.in_flight += 1;
        Some(Slot {
            pod: pod.id,
            address: pod.address,
        })
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
