//! A hash whose algorithm is fixed here (FNV-1a, 64 bit) rather than left to the standard
//! library, so a given configuration always gets the same key.

use std::hash::{Hash, Hasher};

use crate::snapshot::{PodTemplate, RevisionTemplate, ScalingSpec};

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `value` with FNV-1a.
pub(crate) fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = Fnv1a(OFFSET_BASIS);
    value.hash(&mut hasher);
    hasher.finish()
}

/// Hashes a revision template and its name: everything a revision is made from. Floats hash
/// by value (`0.0` and `-0.0` alike). Every field is named, so adding one without hashing it
/// does not compile.
pub(crate) fn template_fingerprint(template: &RevisionTemplate, name: Option<&str>) -> u64 {
    let RevisionTemplate {
        annotations,
        labels,
        container_concurrency,
        timeout,
        response_start_timeout,
        idle_timeout,
        pod,
        scaling,
    } = template;
    let PodTemplate {
        containers,
        serving,
        volumes,
        ignored_locally,
        local_blocker,
        kubernetes,
    } = pod;
    // The Kubernetes types do not implement `Hash`; their JSON is deterministic (fields in
    // declaration order, maps sorted).
    let kubernetes = serde_json::to_string(&**kubernetes).unwrap_or_default();
    let ScalingSpec {
        class,
        metric,
        target,
        target_utilization,
        min_scale,
        max_scale,
        initial_scale,
        window,
        window_set,
        panic_window_percentage,
        panic_threshold_percentage,
        scale_down_delay,
        scale_to_zero_retention,
        backlog_target,
        reserved_instances,
        // Written in the annotations, which are hashed.
        reserved_instance_concurrency: _,
        reserved_instance_resources: _,
        // Written in the annotations, which are hashed.
        schedule: _,
        queue_depth,
        activation_scale,
        scale_to_zero,
        max_scale_up_rate,
        max_scale_down_rate,
        scale_to_zero_grace,
        concurrency_target_default,
        rps_target_default,
    } = scaling;
    let float = |value: f64| if value == 0.0 { 0 } else { value.to_bits() };
    let mut hasher = Fnv1a(OFFSET_BASIS);
    (
        name,
        annotations,
        labels,
        container_concurrency,
        timeout,
        response_start_timeout,
        idle_timeout,
    )
        .hash(&mut hasher);
    (
        containers,
        serving,
        volumes,
        ignored_locally,
        local_blocker,
        kubernetes,
    )
        .hash(&mut hasher);
    (class, metric, target.map(float), float(*target_utilization)).hash(&mut hasher);
    (min_scale, max_scale, initial_scale, window, window_set).hash(&mut hasher);
    (
        float(*panic_window_percentage),
        float(*panic_threshold_percentage),
    )
        .hash(&mut hasher);
    (scale_down_delay, scale_to_zero_retention).hash(&mut hasher);
    (backlog_target, reserved_instances, queue_depth).hash(&mut hasher);
    (activation_scale, scale_to_zero, scale_to_zero_grace).hash(&mut hasher);
    (
        float(*max_scale_up_rate),
        float(*max_scale_down_rate),
        float(*concurrency_target_default),
        float(*rps_target_default),
    )
        .hash(&mut hasher);
    hasher.finish()
}

struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_fnv1a_reference_and_separates_values() {
        let mut hasher = Fnv1a(OFFSET_BASIS);
        hasher.write(b"a");
        assert_eq!(hasher.finish(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("x"), stable_hash("x"));
        assert_ne!(stable_hash(&("ab", "c")), stable_hash(&("a", "bc")));
    }
}
