//! Query parameter matching (Gateway API HTTPRouteQueryParamMatching), as Envoy's
//! `query_parameters` matcher does it: the query is split at `&`, each name and value is
//! percent-decoded, and a name given more than once is matched by its first value.

use std::borrow::Cow;

use snapshot::QueryParamMatch;

/// Whether every one of `params` holds for `query` (the request target after `?`, or "").
pub(crate) fn all_match(params: &[QueryParamMatch], query: &str) -> bool {
    params
        .iter()
        .all(|p| first_value(query, &p.name).is_some_and(|v| v == p.value.as_bytes()))
}

/// The decoded value of the first `name` parameter in `query`; a parameter without `=` has the
/// empty value.
fn first_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    query.split('&').filter(|p| !p.is_empty()).find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decoded(n).as_ref() == name.as_bytes()).then(|| percent_decoded(v))
    })
}

/// `%XX` decoded; a `%` not followed by two hex digits stays as it is (Envoy's
/// PercentEncoding::decode). `+` is not a space here, as in Envoy.
fn percent_decoded(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, value: &str) -> QueryParamMatch {
        QueryParamMatch {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn names_are_case_sensitive_and_values_exact() {
        let whale = [param("animal", "whale")];
        assert!(all_match(&whale, "animal=whale"));
        assert!(all_match(&whale, "x=1&animal=whale&y"));
        assert!(!all_match(&whale, "ANIMAL=whale"));
        assert!(!all_match(&whale, "animal=Whale"));
        assert!(!all_match(&whale, "animal=whaledolphin"));
        assert!(!all_match(&whale, ""));
        assert!(all_match(&[], ""));
    }

    #[test]
    fn every_param_must_match_and_the_first_value_counts() {
        let both = [param("animal", "dolphin"), param("color", "blue")];
        assert!(all_match(&both, "color=blue&animal=dolphin"));
        assert!(!all_match(&both, "animal=dolphin&color=yellow"));
        assert!(!all_match(&[param("a", "2")], "a=1&a=2"));
        assert!(all_match(&[param("a", "")], "a"));
    }

    #[test]
    fn names_and_values_are_percent_decoded() {
        assert!(all_match(
            &[param("animal", "whale shark")],
            "anim%61l=whale%20shark"
        ));
        assert!(all_match(&[param("a", "100%")], "a=100%"));
        assert!(!all_match(&[param("a", "b c")], "a=b+c"));
    }
}
