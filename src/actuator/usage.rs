//! What a pod's processes use, from `/proc` (through the `procfs` crate): resident memory, and
//! cpu time turned into millicores between two samples. The memory limit check and the HPA
//! class's samples on the local runtime read it. These machines run cgroup v1, so nothing here
//! reads cgroup files: a pod is its process group.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::revision::queue::PodId;

/// What the processes of one process group (a container's process and everything it
/// started) use right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupUsage {
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// CPU time used so far, in clock ticks (`CLK_TCK` per second): user and system time of
    /// every live process of the group, plus that of the children they waited for (`utime +
    /// stime + cutime + cstime`).
    pub cpu_ticks: u64,
}

/// [`GroupUsage`] of each of the process groups `pgids`, from one pass over `/proc/*/stat`. A
/// group with no process is absent.
pub fn group_usage(pgids: &[u32]) -> HashMap<u32, GroupUsage> {
    let mut usage = HashMap::new();
    if pgids.is_empty() {
        return usage;
    }
    let page = procfs::page_size();
    let Ok(processes) = procfs::process::all_processes() else {
        return usage;
    };
    // A process may exit between the listing and its read: skipped.
    for stat in processes.flatten().filter_map(|p| p.stat().ok()) {
        let Some(group) = u32::try_from(stat.pgrp).ok().filter(|g| pgids.contains(g)) else {
            continue;
        };
        let children = u64::try_from(stat.cutime.saturating_add(stat.cstime)).unwrap_or(0);
        let entry = usage.entry(group).or_insert_with(GroupUsage::default);
        entry.resident_bytes += stat.rss * page;
        entry.cpu_ticks += stat.utime + stat.stime + children;
    }
    usage
}

/// Turns each pod's cumulative cpu ticks into millicores over the time since its previous
/// sample.
#[derive(Debug)]
pub struct CpuClock {
    ticks_per_second: f64,
    previous: HashMap<PodId, (u64, Instant)>,
}

impl Default for CpuClock {
    fn default() -> Self {
        Self {
            ticks_per_second: procfs::ticks_per_second().max(1) as f64,
            previous: HashMap::new(),
        }
    }
}

impl CpuClock {
    /// Millicores `pod` used since its previous sample; `None` for its first one. Ticks that
    /// went backwards (a process of the group exited unwaited) count as none.
    pub fn millicores(&mut self, pod: PodId, ticks: u64, now: Instant) -> Option<f64> {
        let previous = self.previous.insert(pod, (ticks, now))?;
        let (before, at) = previous;
        let wall = now.saturating_duration_since(at).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let used = ticks.saturating_sub(before) as f64 / self.ticks_per_second;
        Some(used / wall * 1000.0)
    }

    /// Forgets pods that are gone.
    pub fn retain(&mut self, live: impl Fn(&PodId) -> bool) {
        self.previous.retain(|pod, _| live(pod));
    }
}
