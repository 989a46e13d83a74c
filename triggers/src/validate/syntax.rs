//! Syntax of Kubernetes names and of subscriber URIs.

/// RFC 1123 label: lowercase alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub(super) fn check_dns_label(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = name.len() <= 63
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use at most 63 lowercase letters, digits and '-', starting \
             and ending with a letter or digit"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253 (ConfigMap names and references).
pub(super) fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() <= 253 && name.split('.').all(|label| check_dns_label(label).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use lowercase letters, digits, '-' and '.', starting and \
             ending with a letter or digit"
        ))
    }
}

/// An absolute `http` or `https` URL with a host and, if given, a valid port.
pub(super) fn check_http_url(uri: &str) -> Result<(), String> {
    let wrong = |why: &str| Err(format!("invalid uri {uri:?}: {why}"));
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return wrong("it contains spaces or control characters");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return wrong("expected an absolute http:// or https:// URL");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return wrong("the scheme must be http or https");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return wrong("unclosed '[' in the host");
        };
        let ipv6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        if address.is_empty() || !address.bytes().all(ipv6) {
            return wrong("invalid IPv6 address");
        }
        match after {
            "" => (address, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return wrong("unexpected characters after the IPv6 address"),
            },
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        let host_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'%');
        if !host.bytes().all(host_char) {
            return wrong("invalid characters in the host");
        }
        (host, port)
    };
    if host.is_empty() {
        return wrong("it has no host");
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return wrong("the port must be a number from 1 to 65535");
    }
    Ok(())
}

/// A relative reference such as `/events` or `events?x=1`, appended to a `ref`'s address.
pub(super) fn check_relative_uri(uri: &str) -> Result<(), String> {
    let has_scheme = uri.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if has_scheme || uri.starts_with("//") {
        return Err(format!(
            "invalid uri {uri:?}: with ref, uri must be a relative path such as /events (an \
             absolute URL is not allowed)"
        ));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid uri {uri:?}: it contains spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "http://svc",
            "https://svc.ns.svc.cluster.local:8443/path?q=1#f",
            "HTTP://127.0.0.1:8080",
            "http://[::1]:9000/x",
            "http://user:pw@host/",
        ] {
            assert_eq!(check_http_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("svc/path", "absolute"),
            ("ftp://host", "scheme"),
            ("http://", "no host"),
            ("http:///path", "no host"),
            ("http://:80/", "no host"),
            ("http://host:0", "port"),
            ("http://host:99999", "port"),
            ("http://host:x", "port"),
            ("http://ho st", "spaces"),
            ("http://[::1", "unclosed"),
            ("http://[::1]x", "after the IPv6"),
            ("http://a$b", "host"),
        ] {
            let err = check_http_url(bad).err().unwrap_or_default();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn relative_uris() {
        assert!(check_relative_uri("/events").is_ok());
        assert!(check_relative_uri("events?x=1").is_ok());
        assert!(check_relative_uri("http://x/events").is_err());
        assert!(check_relative_uri("//x/events").is_err());
        assert!(check_relative_uri("/a b").is_err());
    }

    #[test]
    fn names() {
        assert!(check_dns_label("a-1").is_ok());
        assert!(check_dns_label(&"a".repeat(63)).is_ok());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        for bad in ["", "-a", "a-", "A", "a.b", "a_b"] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_subdomain("kafka.config").is_ok());
        assert!(check_dns_subdomain("a..b").is_err());
    }
}
