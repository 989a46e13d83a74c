//! Kubernetes resource quantities (`500m`, `0.5`, `128Mi`, `1G`, `1e3`), as
//! `k8s.io/apimachinery/pkg/api/resource` reads them, for the two uses tidegate has: CPU in
//! millicores and sizes in bytes (both rounded up, as Kubernetes rounds).

/// Binary and decimal suffixes with their multipliers.
const SUFFIXES: [(&str, f64); 15] = [
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// The quantity's value.
fn value(text: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "invalid quantity {text:?}: expected a number with an optional suffix (m, k, M, G, \
             Ki, Mi, Gi, …), such as 500m, 0.5, 128Mi"
        )
    };
    let trimmed = text.trim();
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, m)| trimmed.strip_suffix(suffix).map(|n| (n, *m)))
        .unwrap_or((trimmed, 1.0));
    let plain = number
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'));
    if number.is_empty() || !plain {
        return Err(bad());
    }
    let parsed: f64 = number.parse().map_err(|_| bad())?;
    let value = parsed * multiplier;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("invalid quantity {text:?}: must be 0 or more"));
    }
    Ok(value)
}

/// A CPU quantity in millicores, rounded up (`0.5` and `500m` are 500).
pub(crate) fn cpu_millis(text: &str) -> Result<u64, String> {
    to_u64(value(text)? * 1000.0, text)
}

/// A size in bytes, rounded up (`128Mi` is 134 217 728).
pub(crate) fn bytes(text: &str) -> Result<u64, String> {
    to_u64(value(text)?, text)
}

fn to_u64(value: f64, text: &str) -> Result<u64, String> {
    let rounded = value.ceil();
    if rounded > 9.0e18 {
        return Err(format!("quantity {text:?} is too large"));
    }
    // In range and integral: the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(rounded as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubernetes_quantities() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.0001"), Ok(1001));
        assert_eq!(bytes("128Mi"), Ok(134_217_728));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1e3"), Ok(1000));
        assert_eq!(bytes("64Ki"), Ok(65_536));
        for bad in ["", "abc", "12x", "Mi", "-1", "1 Mi"] {
            assert!(bytes(bad).is_err(), "{bad:?}");
        }
    }
}
