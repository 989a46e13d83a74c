use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn cold_revision_queues_then_hands_slots_in_fifo_order() {
    let mut q = DispatchQueue::<&str>::new(1, 10);
    assert_eq!(q.try_acquire(), None);
    q.enqueue("a").expect("room");
    q.enqueue("b").expect("room");
    q.enqueue("c").expect("room");
    let handed = q.add_pod(1, addr(1));
    assert_eq!(handed.len(), 1, "cc=1: one slot");
    assert_eq!(handed[0].0, "a");
    let handed = q.add_pod(2, addr(2));
    assert_eq!(handed[0].0, "b");
    assert_eq!(q.queued(), 1);
    // A newcomer does not overtake the waiter even when a slot frees.
    assert_eq!(q.try_acquire(), None);
    let (w, slot) = q.release(1).expect("c gets pod 1");
    assert_eq!((w, slot.pod), ("c", 1));
    assert_eq!(q.in_flight(), 2);
}

#[test]
fn full_queue_refuses() {
    let mut q = DispatchQueue::<u32>::new(1, 2);
    q.enqueue(1).expect("room");
    q.enqueue(2).expect("room");
    assert_eq!(q.enqueue(3), Err(3));
}

#[test]
fn cancelled_waiters_leave_the_line() {
    let mut q = DispatchQueue::<u32>::new(1, 10);
    let _a = q.enqueue(1).expect("room");
    let b = q.enqueue(2).expect("room");
    let _c = q.enqueue(3).expect("room");
    assert_eq!(q.cancel(b), Some(2));
    assert_eq!(q.cancel(b), None);
    let handed: Vec<u32> = q.add_pod(1, addr(1)).into_iter().map(|(w, _)| w).collect();
    assert_eq!(handed, [1]);
    assert_eq!(q.release(1).map(|(w, _)| w), Some(3));
}

#[test]
fn unlimited_concurrency_picks_the_least_loaded() {
    let mut q = DispatchQueue::<()>::new(0, 10);
    q.add_pod(1, addr(1));
    q.add_pod(2, addr(2));
    let a = q.try_acquire().expect("slot");
    let b = q.try_acquire().expect("slot");
    assert_ne!(a.pod, b.pod, "spread over both pods");
    q.release(a.pod);
    let c = q.try_acquire().expect("slot");
    assert_eq!(c.pod, a.pod, "the idle pod wins");
}

#[test]
fn draining_pods_get_no_new_work() {
    let mut q = DispatchQueue::<()>::new(2, 10);
    q.add_pod(1, addr(1));
    q.add_pod(2, addr(2));
    q.drain_pod(1);
    for _ in 0..2 {
        assert_eq!(q.try_acquire().map(|s| s.pod), Some(2));
    }
    assert_eq!(q.try_acquire(), None);
    assert_eq!(q.ready_pods(), 1);
    assert_eq!(q.remove_pod(2), 2);
}

#[derive(Debug, Clone)]
enum Op {
    Arrive,
    Finish(usize),
    AddPod,
    DrainPod(usize),
    RemovePod(usize),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Arrive),
        4 => (0usize..64).prop_map(Op::Finish),
        1 => Just(Op::AddPod),
        1 => (0usize..8).prop_map(Op::DrainPod),
        1 => (0usize..8).prop_map(Op::RemovePod),
        1 => (0usize..64).prop_map(Op::Cancel),
    ]
}

proptest! {
    /// Whatever happens, no pod exceeds containerConcurrency, counts match the requests the
    /// model holds, and nobody waits while an accepting pod has a free slot.
    #[test]
    fn never_exceeds_container_concurrency(cc in 1u32..4, ops in proptest::collection::vec(op(), 1..300)) {
        let mut q = DispatchQueue::<u64>::new(cc, 1000);
        let mut running: Vec<(u64, PodId)> = Vec::new();
        let mut waiting: Vec<(u64, Ticket)> = Vec::new();
        let mut next_request = 0u64;
        let mut next_pod = 0u64;
        for op in ops {
            match op {
                Op::Arrive => {
                    next_request += 1;
                    match q.try_acquire() {
                        Some(slot) => running.push((next_request, slot.pod)),
                        None => waiting.push((next_request, q.enqueue(next_request).expect("room"))),
                    }
                }
                Op::Finish(i) if !running.is_empty() => {
                    let (_, pod) = running.remove(i % running.len());
                    if let Some((w, slot)) = q.release(pod) {
                        waiting.retain(|(r, _)| *r != w);
                        running.push((w, slot.pod));
                    }
                }
                Op::AddPod => {
                    next_pod += 1;
                    for (w, slot) in q.add_pod(next_pod, addr(1)) {
                        waiting.retain(|(r, _)| *r != w);
                        running.push((w, slot.pod));
                    }
                }
                Op::DrainPod(i) => {
                    if let Some(id) = q.pods().get(i).map(|p| p.id) {
                        q.drain_pod(id);
                    }
                }
                Op::RemovePod(i) => {
                    if let Some(id) = q.pods().get(i).map(|p| p.id) {
                        q.remove_pod(id);
                        // Those requests fail; the model forgets them.
                        running.retain(|(_, pod)| *pod != id);
                    }
                }
                Op::Cancel(i) if !waiting.is_empty() => {
                    let (r, ticket) = waiting.remove(i % waiting.len());
                    prop_assert_eq!(q.cancel(ticket), Some(r));
                }
                _ => {}
            }
            for p in q.pods() {
                prop_assert!(p.in_flight <= cc, "pod {} holds {} > {}", p.id, p.in_flight, cc);
                let model = running.iter().filter(|(_, pod)| *pod == p.id).count();
                prop_assert_eq!(p.in_flight as usize, model);
            }
            prop_assert_eq!(q.queued(), waiting.len());
            let free = q.pods().iter().any(|p| p.accepting && p.in_flight < cc);
            prop_assert!(!(free && q.queued() > 0), "a waiter waits while a slot is free");
        }
    }
}

#[test]
fn a_reserved_instance_takes_work_alone_and_hands_over_to_the_first_regular_pod() {
    // Regular pods take one request each, the reserved instance two.
    let mut q = DispatchQueue::<&str>::new(1, 10);
    q.enqueue("first").expect("room");
    let handed = q.add_reserved_pod(9, addr(9), 2);
    assert_eq!(
        handed.len(),
        1,
        "the waiting request goes to the reserved instance at once"
    );
    assert_eq!(handed[0].1.pod, 9);
    assert_eq!(
        q.ready_pods(),
        0,
        "reserved instances are not counted as ready pods"
    );
    assert_eq!(q.reserved_ready(), 1);
    assert_eq!(
        q.try_acquire().map(|s| s.pod),
        Some(9),
        "its own limit of 2"
    );
    assert_eq!(q.try_acquire(), None);

    // A regular pod is ready: new work goes only to it; the reserved one keeps its two.
    let handed = q.add_pod(1, addr(1));
    assert!(handed.is_empty());
    assert_eq!(q.reserved_ready(), 0);
    assert_eq!(
        q.pod(9).map(|p| (p.in_flight, p.accepting)),
        Some((2, false))
    );
    q.release(9);
    assert_eq!(q.try_acquire().map(|s| s.pod), Some(1));
    assert_eq!(
        q.try_acquire(),
        None,
        "the reserved instance takes nothing new"
    );
    q.enqueue("waits").expect("room");
    q.release(9);
    assert_eq!(
        q.queued(),
        1,
        "a slot freed on the reserved instance goes to nobody"
    );
    assert_eq!(q.remove_pod(9), 0);
    assert_eq!(q.in_flight(), 1);
}

#[test]
fn a_reserved_instance_ready_beside_a_regular_pod_stands_by_until_none_is_left() {
    let mut q = DispatchQueue::<&str>::new(1, 10);
    q.add_pod(1, addr(1));
    assert!(q.add_reserved_pod(9, addr(9), 0).is_empty());
    assert_eq!(
        q.pod(9).map(|p| (p.accepting, p.standby)),
        Some((false, true))
    );
    assert_eq!(q.try_acquire().map(|s| s.pod), Some(1));
    q.enqueue("waits").expect("room");
    // The regular pod drains (scale to zero): the standby instance takes the waiter.
    let handed = q.drain_pod(1);
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].1.pod, 9);
    assert_eq!(q.reserved_ready(), 1);
    // A pod that disappears without draining wakes a standby one too.
    let mut q = DispatchQueue::<&str>::new(1, 10);
    q.add_pod(1, addr(1));
    q.add_reserved_pod(9, addr(9), 1);
    q.remove_pod(1);
    q.enqueue("waits").expect("room");
    assert!(q.hand_over().is_none(), "still on standby until told");
    let handed = q.wake_standby();
    assert_eq!(handed.len(), 1);
}
