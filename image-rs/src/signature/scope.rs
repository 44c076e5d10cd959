//! Scope matching for `transports.docker` (policy) and `docker` (registries.d):
//! the most specific scope wins, as containers/image does. For
//! `host:5000/ns/repo:tag` the candidates are, in order: `host:5000/ns/repo:tag`
//! (or `...@digest`), `host:5000/ns/repo`, `host:5000/ns`, `host:5000`, then
//! `*.` wildcards over the host's parent domains.

use crate::reference::Reference;

/// The scope names an image matches, most specific first.
pub fn candidates(r: &Reference) -> Vec<String> {
    let name = format!("{}/{}", r.registry(), r.repository());
    let mut out = Vec::new();
    if let Some(t) = r.tag() {
        out.push(format!("{name}:{t}"));
    }
    if let Some(d) = r.digest() {
        out.push(format!("{name}@{d}"));
    }
    let mut cur = name.as_str();
    loop {
        out.push(cur.to_string());
        match cur.rfind('/') {
            Some(i) => cur = &cur[..i],
            None => break,
        }
    }
    // Wildcards: *.example.com matches a.example.com and b.a.example.com.
    let host = crate::reference::host_of(r.registry());
    if host.parse::<std::net::IpAddr>().is_err() {
        let mut rest = host;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if !rest.is_empty() {
                out.push(format!("*.{rest}"));
            }
        }
    }
    out
}

/// Picks the most specific of `scopes` that `r` matches.
pub fn best_match<'a, I>(r: &Reference, scopes: I) -> Option<String>
where
    I: IntoIterator<Item = &'a String> + Clone,
{
    candidates(r)
        .into_iter()
        .find(|c| scopes.clone().into_iter().any(|s| s == c))
}

/// Checks a scope key as written in a policy or registries.d file.
pub fn validate(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if let Some(dom) = scope.strip_prefix("*.") {
        if dom.is_empty() || dom.contains(['/', '*', ':', '@']) {
            return Err(format!("scope {scope:?}: a wildcard must be *.DOMAIN"));
        }
        return Ok(());
    }
    if scope.contains('*') {
        return Err(format!(
            "scope {scope:?}: '*' is only allowed as a leading *. wildcard"
        ));
    }
    if scope.chars().any(|c| c.is_whitespace() || c.is_control()) || scope.ends_with('/') {
        return Err(format!(
            "scope {scope:?} is not a host[/namespace][/repo][:tag|@digest]"
        ));
    }
    if scope.contains('/') || scope.contains('@') {
        // A repository scope must parse as a reference.
        let probe = scope.split(['@']).next().unwrap_or(scope);
        let probe = if probe.contains('/') {
            probe.to_string()
        } else {
            format!("{probe}/x")
        };
        probe
            .parse::<Reference>()
            .map_err(|e| format!("scope {scope:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn candidates_most_specific_first() {
        assert_eq!(
            candidates(&r("reg.example.com:5000/ns/app:v1")),
            vec![
                "reg.example.com:5000/ns/app:v1",
                "reg.example.com:5000/ns/app",
                "reg.example.com:5000/ns",
                "reg.example.com:5000",
                "*.example.com",
                "*.com",
            ]
        );
        let c = candidates(&r("busybox"));
        assert_eq!(c[0], "docker.io/library/busybox:latest");
        assert!(c.contains(&"docker.io/library".to_string()));
        assert!(c.contains(&"*.io".to_string()));
    }

    #[test]
    fn longest_prefix_wins() {
        let scopes: Vec<String> = [
            "127.0.0.1:5000",
            "127.0.0.1:5000/team",
            "127.0.0.1:5000/team/app:v2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            best_match(&r("127.0.0.1:5000/team/app:v2"), &scopes).as_deref(),
            Some("127.0.0.1:5000/team/app:v2")
        );
        assert_eq!(
            best_match(&r("127.0.0.1:5000/team/app:v1"), &scopes).as_deref(),
            Some("127.0.0.1:5000/team")
        );
        assert_eq!(
            best_match(&r("127.0.0.1:5000/other/app:v1"), &scopes).as_deref(),
            Some("127.0.0.1:5000")
        );
        // A prefix that is not a whole path component does not match.
        assert_eq!(
            best_match(&r("127.0.0.1:5000/teamx/app"), &scopes[1..]),
            None
        );
        assert_eq!(best_match(&r("127.0.0.1:5001/team/app"), &scopes), None);
    }

    #[test]
    fn validates_scopes() {
        assert!(validate("").is_ok());
        assert!(validate("*.example.com").is_ok());
        assert!(validate("example.com/ns/repo:tag").is_ok());
        assert!(validate("a*b.com").is_err());
        assert!(validate("example.com/").is_err());
        assert!(validate("example.com/UPPER").is_err());
    }
}
