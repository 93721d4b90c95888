//! An Ingress path as Kong route paths, as the controller translates it
//! (subtranslator/ingress.go `PathsFromIngressPaths`, `flattenMultipleSlashes`,
//! `MaybePrependRegexPrefix`):
//! - `Prefix` `/foo` → `/foo/` and `~/foo$` (so `/foo` and `/foo/…` match, `/foobar` not);
//!   `Prefix` `/` → `/`;
//! - `Exact` `/foo` → `~/foo$`;
//! - `ImplementationSpecific` (and no pathType) verbatim, `""` → `/`;
//! - a path starting with the regex prefix (`/~` unless `konghq.com/regex-prefix` says
//!   otherwise) becomes a Kong regex path (`~…`);
//! - runs of `/` collapse to one.

/// The route paths for one Ingress path.
pub fn route_paths(path: &str, path_type: Option<&str>, regex_prefix: &str) -> Option<Vec<String>> {
    let mut path = flatten_slashes(path);
    if path.is_empty() {
        path = "/".into();
    }
    let out = match path_type.unwrap_or("ImplementationSpecific") {
        "Prefix" => {
            let base = path.trim_matches('/');
            if base.is_empty() {
                vec!["/".to_string()]
            } else {
                vec![format!("/{base}/"), format!("~/{base}$")]
            }
        }
        "Exact" => vec![format!("~/{}$", path.trim_start_matches('/'))],
        "ImplementationSpecific" => vec![path],
        _ => return None,
    };
    Some(
        out.into_iter()
            // An empty prefix marks every path (Go's `strings.Replace` of "" prepends).
            .map(|p| match p.strip_prefix(regex_prefix) {
                Some(rest) => format!("~{rest}"),
                None => p,
            })
            .collect(),
    )
}

fn flatten_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' && last_slash {
            continue;
        }
        last_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::route_paths;

    fn p(path: &str, ty: Option<&str>) -> Vec<String> {
        route_paths(path, ty, "/~").unwrap()
    }

    // Facts from the controller's subtranslator/ingress_test.go and golden files.
    #[test]
    fn prefix_matches_the_path_and_below_it() {
        assert_eq!(p("/foo", Some("Prefix")), ["/foo/", "~/foo$"]);
        assert_eq!(p("/foo/", Some("Prefix")), ["/foo/", "~/foo$"]);
        assert_eq!(p("/", Some("Prefix")), ["/"]);
        assert_eq!(p("//foo//bar", Some("Prefix")), ["/foo/bar/", "~/foo/bar$"]);
    }

    #[test]
    fn exact_is_an_anchored_regex() {
        assert_eq!(p("/whatever", Some("Exact")), ["~/whatever$"]);
        assert_eq!(p("/", Some("Exact")), ["~/$"]);
    }

    #[test]
    fn implementation_specific_is_verbatim() {
        assert_eq!(p("/httpbin", Some("ImplementationSpecific")), ["/httpbin"]);
        assert_eq!(p("", None), ["/"]);
        assert_eq!(
            p("/.well-known/acme-challenge/yolo", None),
            ["/.well-known/acme-challenge/yolo"]
        );
    }

    #[test]
    fn the_regex_prefix_makes_a_kong_regex() {
        assert_eq!(p("/~/foo/\\d{3}", None), ["~/foo/\\d{3}"]);
        assert_eq!(route_paths("#/foo", None, "#").unwrap(), ["~/foo"]);
        assert_eq!(route_paths("/foo", None, "").unwrap(), ["~/foo"]);
    }

    #[test]
    fn unknown_path_types_are_refused() {
        assert_eq!(route_paths("/a", Some("Glob"), "/~"), None);
    }
}
