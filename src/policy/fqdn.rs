//! FQDN matcher: a trie over reversed labels (`com` -> `contoso` -> `www`).
//!
//! Patterns are exact names (`mcr.microsoft.com`), left-most wildcards (`*.contoso.com`) or `*`
//! (every name). A wildcard matches one or more labels in its place, at any depth, as Azure
//! Firewall does: `*.contoso.com` matches `a.contoso.com` and `a.b.contoso.com`, not
//! `contoso.com`. Matching is ASCII case-insensitive and tolerates one trailing dot and a
//! `:port` suffix (as in an HTTP Host header).
//! Lookups never allocate.

use std::cmp::Ordering;

use super::bitset::{SetArena, SetId};

/// Why a name pattern is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FqdnError {
    #[error("the name is empty")]
    Empty,
    #[error("a wildcard is only allowed as the whole left-most label, as in \"*.example.com\"")]
    MisplacedWildcard,
    #[error("the name has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("the label \"{0}\" is longer than 63 characters")]
    LabelTooLong(String),
    #[error("the name is longer than 253 characters")]
    TooLong,
    #[error("the label \"{0}\" has a character other than a letter, digit, '-' or '_'")]
    BadCharacter(String),
}

/// A validated, normalized name pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FqdnPattern {
    /// `*`: any name.
    Any,
    /// An exact name, lower-case, no trailing dot.
    Exact(String),
    /// `*.suffix`: any name with one or more labels before `suffix` (stored without `*.`).
    Wildcard(String),
}

impl FqdnPattern {
    /// Parses and normalizes a pattern.
    pub fn parse(s: &str) -> Result<FqdnPattern, FqdnError> {
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() {
            return Err(FqdnError::Empty);
        }
        if s == "*" {
            return Ok(FqdnPattern::Any);
        }
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest.contains('*') {
            return Err(FqdnError::MisplacedWildcard);
        }
        if rest.len() > 253 {
            return Err(FqdnError::TooLong);
        }
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(FqdnError::EmptyLabel);
            }
            if label.len() > 63 {
                return Err(FqdnError::LabelTooLong(label.to_string()));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(FqdnError::BadCharacter(label.to_string()));
            }
        }
        let rest = rest.to_ascii_lowercase();
        Ok(if wild {
            FqdnPattern::Wildcard(rest)
        } else {
            FqdnPattern::Exact(rest)
        })
    }

    /// Whether the pattern matches `name` (reference implementation, allocation allowed).
    pub fn matches(&self, name: &str) -> bool {
        let name = normalize_host(name).to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        match self {
            FqdnPattern::Any => true,
            FqdnPattern::Exact(e) => name == *e,
            FqdnPattern::Wildcard(sfx) => {
                name.len() > sfx.len() + 1
                    && name.ends_with(sfx.as_str())
                    && name.as_bytes()[name.len() - sfx.len() - 1] == b'.'
                    && !name[..name.len() - sfx.len() - 1].is_empty()
            }
        }
    }

    /// Whether every name this pattern matches is also matched by `other`.
    pub fn covered_by(&self, other: &FqdnPattern) -> bool {
        match (self, other) {
            (_, FqdnPattern::Any) => true,
            (FqdnPattern::Any, _) => false,
            (FqdnPattern::Exact(a), o) => o.matches(a),
            (FqdnPattern::Wildcard(a), FqdnPattern::Wildcard(b)) => {
                a == b || FqdnPattern::Wildcard(b.clone()).matches(a)
            }
            (FqdnPattern::Wildcard(_), FqdnPattern::Exact(_)) => false,
        }
    }
}

impl std::fmt::Display for FqdnPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FqdnPattern::Any => f.write_str("*"),
            FqdnPattern::Exact(e) => f.write_str(e),
            FqdnPattern::Wildcard(w) => write!(f, "*.{w}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Children sorted by label (lower-case bytes).
    children: Vec<(Box<str>, u32)>,
    exact: Option<SetId>,
    wild: Option<SetId>,
}

#[derive(Debug, Default)]
struct BuildNode {
    children: Vec<(String, usize)>,
    exact: Vec<u32>,
    wild: Vec<u32>,
}

/// Reversed-label trie mapping a name to the sets of rules whose patterns match it.
#[derive(Debug, Clone)]
pub struct FqdnTrie {
    nodes: Vec<Node>,
}

/// Most candidate sets a lookup yields: one wildcard per label plus the exact match.
pub const MAX_CANDIDATES: usize = 130;

/// The name without a `:port` suffix (an HTTP Host header) and without one trailing dot.
pub fn normalize_host(name: &str) -> &str {
    let name = match name.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => name,
    };
    name.strip_suffix('.').unwrap_or(name)
}

fn cmp_label(stored: &str, query: &str) -> Ordering {
    let a = stored.as_bytes();
    let b = query.as_bytes();
    for (x, y) in a.iter().zip(b.iter()) {
        let y = y.to_ascii_lowercase();
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

impl FqdnTrie {
    /// Builds the trie from `(pattern, rule)` pairs; sets are stored in `arena`.
    pub fn build(arena: &mut SetArena, patterns: &[(FqdnPattern, u32)]) -> FqdnTrie {
        let mut b: Vec<BuildNode> = vec![BuildNode::default()];
        for (p, rule) in patterns {
            let (name, wild) = match p {
                FqdnPattern::Any => {
                    b[0].wild.push(*rule);
                    continue;
                }
                FqdnPattern::Exact(n) => (n, false),
                FqdnPattern::Wildcard(n) => (n, true),
            };
            let mut cur = 0usize;
            for label in name.rsplit('.') {
                let found = b[cur].children.iter().find(|c| c.0 == label).map(|c| c.1);
                cur = match found {
                    Some(n) => n,
                    None => {
                        b.push(BuildNode::default());
                        let n = b.len() - 1;
                        b[cur].children.push((label.to_string(), n));
                        n
                    }
                };
            }
            if wild {
                b[cur].wild.push(*rule);
            } else {
                b[cur].exact.push(*rule);
            }
        }
        let nodes = b
            .into_iter()
            .map(|bn| {
                let mut children: Vec<(Box<str>, u32)> = bn
                    .children
                    .into_iter()
                    .map(|(l, n)| (l.into_boxed_str(), n as u32))
                    .collect();
                children.sort_by(|x, y| x.0.cmp(&y.0));
                Node {
                    children,
                    exact: (!bn.exact.is_empty()).then(|| arena.insert_list(&bn.exact)),
                    wild: (!bn.wild.is_empty()).then(|| arena.insert_list(&bn.wild)),
                }
            })
            .collect();
        FqdnTrie { nodes }
    }

    /// Calls `f` with every set of rules whose pattern matches `name`.
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(SetId)) {
        let name = normalize_host(name);
        if name.is_empty() || self.nodes.is_empty() {
            return;
        }
        let mut cur = 0usize;
        for label in name.rsplit('.') {
            let node = &self.nodes[cur];
            if let Some(w) = node.wild {
                f(w);
            }
            if label.is_empty() {
                return;
            }
            match node.children.binary_search_by(|c| cmp_label(&c.0, label)) {
                Ok(i) => cur = node.children[i].1 as usize,
                Err(_) => return,
            }
        }
        if let Some(e) = self.nodes[cur].exact {
            f(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FqdnPattern {
        FqdnPattern::parse(s).unwrap()
    }

    #[test]
    fn parse_rejects_bad_wildcards() {
        assert_eq!(
            FqdnPattern::parse("foo.*.com"),
            Err(FqdnError::MisplacedWildcard)
        );
        assert_eq!(
            FqdnPattern::parse("*foo.com"),
            Err(FqdnError::MisplacedWildcard)
        );
        assert_eq!(FqdnPattern::parse("a..b"), Err(FqdnError::EmptyLabel));
        assert_eq!(
            p("WWW.Example.COM."),
            FqdnPattern::Exact("www.example.com".into())
        );
    }

    #[test]
    fn trie_matches_like_reference() {
        let pats = [
            (p("*.contoso.com"), 0),
            (p("contoso.com"), 1),
            (p("a.b.contoso.com"), 2),
            (p("*"), 3),
            (p("*.b.contoso.com"), 4),
        ];
        let mut a = SetArena::new(5);
        let t = FqdnTrie::build(&mut a, &pats);
        for name in [
            "contoso.com",
            "x.contoso.com",
            "a.b.contoso.com",
            "A.B.Contoso.Com.",
            "b.contoso.com",
            "com",
            "other.net",
            "x.a.b.contoso.com",
            "x.contoso.com:8080",
        ] {
            let mut got = Vec::new();
            t.for_each_match(name, |s| {
                let mut r = a.first_common(&[s]);
                while let Some(x) = r {
                    got.push(x);
                    // enumerate: only first is needed for ordering checks
                    r = None;
                }
            });
            let want_min = pats
                .iter()
                .filter(|(p, _)| p.matches(name))
                .map(|x| x.1)
                .min();
            assert_eq!(got.iter().copied().min(), want_min, "{name}");
        }
    }
}
