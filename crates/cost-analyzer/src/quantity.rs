//! Kubernetes resource quantities (`100m`, `1.5`, `64Mi`, `1G`, `2e3`) as
//! numbers: CPU in cores, memory and storage in bytes.

/// Parses a quantity into its value in base units (cores or bytes).
pub fn parse(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a Kubernetes quantity (e.g. 250m, 2, 512Mi, 1G)");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    // `2e3` and `1E6`: a decimal exponent, not a suffix.
    let (number, suffix) = match suffix.strip_prefix(['e', 'E']) {
        Some(exp)
            if !exp.is_empty()
                && exp.trim_start_matches(['+', '-']).chars().all(|c| c.is_ascii_digit()) =>
        {
            (t, "")
        }
        _ => (number, suffix),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return Err(bad()),
    };
    let v = value * factor;
    if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(bad()) }
}

/// CPU cores as Kubernetes writes them: `250m`, `2`.
pub fn cpu(cores: f64) -> String {
    let milli = (cores * 1000.0).ceil().max(1.0) as u64;
    if milli.is_multiple_of(1000) { format!("{}", milli / 1000) } else { format!("{milli}m") }
}

/// Bytes as `NMi` (rounded up to a whole MiB).
pub fn memory(bytes: f64) -> String {
    let mib = (bytes / 1024.0 / 1024.0).ceil().max(1.0) as u64;
    format!("{mib}Mi")
}

/// Bytes for people: `1.5 GiB`, `64 MiB`.
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", units[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_base_units() {
        assert_eq!(parse("100m"), Ok(0.1));
        assert_eq!(parse("2"), Ok(2.0));
        assert_eq!(parse("64Mi"), Ok(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Ok(1e9));
        assert_eq!(parse("2e3"), Ok(2000.0));
        assert_eq!(parse("1.5Gi"), Ok(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert!(parse("12q").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1").is_err());
        assert_eq!(cpu(0.0123), "13m");
        assert_eq!(cpu(2.0), "2");
        assert_eq!(memory(64.0 * 1024.0 * 1024.0), "64Mi");
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics(text in "\\PC{0,20}") {
            let _ = parse(&text);
        }

        #[test]
        fn written_quantities_read_back_at_least_as_large(milli in 1u64..10_000_000, mib in 1u64..1_000_000) {
            let c = milli as f64 / 1000.0;
            proptest::prop_assert!(parse(&cpu(c)).unwrap_or(0.0) >= c - 1e-9);
            let b = mib as f64 * 1024.0 * 1024.0;
            proptest::prop_assert!(parse(&memory(b)).unwrap_or(0.0) >= b);
        }
    }
}
