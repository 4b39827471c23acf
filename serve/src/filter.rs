//! The filters a request narrows the map with: a workload search ([`Filter`]), server ports
//! ([`Ports`]) and byte sizes ([`parse_bytes`]).
//!
//! The search is a list of terms separated by spaces, matched case-insensitively as substrings
//! of either a raw name or the name of the node it is grouped in:
//! - `word`: an edge whose client or server matches;
//! - `client:word`, `server:word`: an edge whose client (server) matches;
//! - `-word`: no edge whose client or server matches.
//!
//! An edge is kept when it matches at least one positive term (or there are none) and no
//! negative one. Other words with a `:` are plain words (names like `external:10.0.0.0/8`
//! contain one).

/// A search that cannot be read; the message says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFilter(pub String);

/// A term's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Either end.
    Either,
    /// The client.
    Client,
    /// The server.
    Server,
}

/// A parsed search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Positive terms (lowercase) and the end they apply to.
    pub positive: Vec<(Side, String)>,
    /// Negative terms (lowercase), either end.
    pub negative: Vec<String>,
}

/// Terms a search may hold.
const MAX_TERMS: usize = 32;
/// Characters a search may hold.
const MAX_LEN: usize = 1024;

impl Filter {
    /// Reads a search.
    ///
    /// # Errors
    /// [`BadFilter`] for an empty `client:`/`server:`/`-` term, control characters, more than
    /// 32 terms or more than 1,024 characters.
    pub fn parse(text: &str) -> Result<Self, BadFilter> {
        if text.len() > MAX_LEN {
            return Err(BadFilter(format!("filter is {} characters long; at most {MAX_LEN}", text.len())));
        }
        if text.chars().any(char::is_control) {
            return Err(BadFilter("filter holds control characters".into()));
        }
        let mut filter = Filter::default();
        for term in text.split_whitespace() {
            let lower = term.to_lowercase();
            if let Some(rest) = lower.strip_prefix('-') {
                if rest.is_empty() {
                    return Err(BadFilter("filter term `-` needs a word after it".into()));
                }
                filter.negative.push(rest.to_owned());
            } else if let Some((key, value)) = lower.split_once(':').filter(|(k, _)| *k == "client" || *k == "server") {
                if value.is_empty() {
                    return Err(BadFilter(format!("filter term `{term}` needs a word after the colon")));
                }
                let side = if key == "client" { Side::Client } else { Side::Server };
                filter.positive.push((side, value.to_owned()));
            } else {
                filter.positive.push((Side::Either, lower));
            }
        }
        if filter.positive.len() + filter.negative.len() > MAX_TERMS {
            return Err(BadFilter(format!("filter has more than {MAX_TERMS} terms")));
        }
        Ok(filter)
    }

    /// Whether the search keeps everything.
    pub fn is_empty(&self) -> bool {
        self.positive.is_empty() && self.negative.is_empty()
    }

    /// What a name matches: the sides of the positive terms it matches (as client, as server),
    /// and whether it matches a negative term. `names` are the forms matched (raw and group
    /// names).
    pub fn classify(&self, names: &[&str]) -> NameMatch {
        let lower: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
        let hit = |term: &str| lower.iter().any(|n| n.contains(term));
        let mut m = NameMatch::default();
        for (side, term) in &self.positive {
            if hit(term) {
                match side {
                    Side::Either => (m.as_client, m.as_server) = (true, true),
                    Side::Client => m.as_client = true,
                    Side::Server => m.as_server = true,
                }
            }
        }
        m.excluded = self.negative.iter().any(|t| hit(t));
        m
    }
}

/// How one name fares against a search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameMatch {
    /// It matches a positive term that applies to clients.
    pub as_client: bool,
    /// It matches a positive term that applies to servers.
    pub as_server: bool,
    /// It matches a negative term.
    pub excluded: bool,
}

impl NameMatch {
    /// Whether an edge from `client` to `server` is kept (`has_positive`: the search has a
    /// positive term).
    pub fn keeps(client: NameMatch, server: NameMatch, has_positive: bool) -> bool {
        !client.excluded && !server.excluded && (!has_positive || client.as_client || server.as_server)
    }
}

/// A set of server ports: ranges, inclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports(Vec<(u16, u16)>);

impl Ports {
    /// Reads `443`, `8000-8999` or a comma-separated list of them; empty means every port.
    ///
    /// # Errors
    /// [`BadFilter`] for anything else (a port above 65535, a reversed range, ...).
    pub fn parse(text: &str) -> Result<Self, BadFilter> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || BadFilter(format!("port {part:?}: write a port (443), a range (8000-8999) or a list of them"));
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => {
                    (lo.trim().parse::<u16>().map_err(|_| bad())?, hi.trim().parse::<u16>().map_err(|_| bad())?)
                }
                None => {
                    let p = part.parse::<u16>().map_err(|_| bad())?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(bad());
            }
            out.push((lo, hi));
        }
        Ok(Ports(out))
    }

    /// Whether `port` is in the set (always, for the empty set).
    pub fn contains(&self, port: u16) -> bool {
        self.0.is_empty() || self.0.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }

    /// Whether the set is every port.
    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads a byte size: an integer or decimal number with an optional unit, `k`/`M`/`G`/`T`
/// (powers of 1000) or `Ki`/`Mi`/`Gi`/`Ti` (powers of 1024), optionally followed by `B`.
///
/// # Errors
/// [`BadFilter`] for anything else, negative or too large.
pub fn parse_bytes(text: &str) -> Result<u64, BadFilter> {
    let t = text.trim();
    let bad = || BadFilter(format!("{text:?} is not a byte size (write 1048576, 10MB, 1.5GiB, ...)"));
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(multiplier).ok_or_else(bad);
    }
    let x = number.parse::<f64>().map_err(|_| bad())? * multiplier as f64;
    if !x.is_finite() || x >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(x.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_read_terms() {
        let f = Filter::parse("  Checkout client:svc-03 -canary server:db external:10.0 ").expect("valid");
        assert_eq!(
            f.positive,
            vec![
                (Side::Either, "checkout".into()),
                (Side::Client, "svc-03".into()),
                (Side::Server, "db".into()),
                (Side::Either, "external:10.0".into())
            ]
        );
        assert_eq!(f.negative, vec!["canary".to_owned()]);
        assert!(Filter::parse("").expect("empty is valid").is_empty());
    }

    #[test]
    fn bad_searches_say_why() {
        assert_eq!(Filter::parse("a -").unwrap_err().0, "filter term `-` needs a word after it");
        assert_eq!(Filter::parse("client:").unwrap_err().0, "filter term `client:` needs a word after the colon");
        assert!(Filter::parse("a\u{7}b").is_err());
        assert!(Filter::parse(&"x ".repeat(33)).is_err());
        assert!(Filter::parse(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn matches_follow_sides_and_negation() {
        let f = Filter::parse("client:web server:db -canary").expect("valid");
        let web = f.classify(&["web-1", "web"]);
        let db = f.classify(&["db-0", "db"]);
        let canary = f.classify(&["web-canary", "web"]);
        let other = f.classify(&["cache", "cache"]);
        assert!(NameMatch::keeps(web, other, true));
        assert!(NameMatch::keeps(other, db, true));
        assert!(!NameMatch::keeps(db, other, true), "db matches only as a server");
        assert!(!NameMatch::keeps(canary, db, true), "excluded");
        assert!(NameMatch::keeps(other, other, false));
        assert!(Filter::parse("WEB").expect("valid").classify(&["my-Web-1"]).as_client, "case-insensitive");
    }

    #[test]
    fn ports_read_lists_and_ranges() {
        let p = Ports::parse("443, 8000-8999,5432").expect("valid");
        assert!(p.contains(443) && p.contains(8000) && p.contains(8999) && p.contains(5432));
        assert!(!p.contains(80) && !p.contains(9000));
        assert!(Ports::parse("").expect("valid").contains(1));
        for bad in ["http", "70000", "9-1", "1-", "-5", "4.5"] {
            assert!(Ports::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes_read_units() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("2048"), Ok(2048));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("10 mb"), Ok(10_000_000));
        assert_eq!(parse_bytes("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("3k"), Ok(3000));
        assert_eq!(parse_bytes("1Ki"), Ok(1024));
        for bad in ["", "MB", "-1", "1.2.3", "5 parsecs", "99999999999999999999T", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
