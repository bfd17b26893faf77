//! Which identifiers a client may order (`[acme] allowed`): DNS names, exact or under a
//! `*.` pattern, and IP addresses inside a network in CIDR notation (RFC 8738).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::problem::Problem;

/// An ACME identifier as it travels (`{"type": "dns", "value": "api.internal"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifier {
    /// `dns` or `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name or the address.
    pub value: String,
}

impl Identifier {
    /// A `dns` identifier.
    pub fn dns(name: &str) -> Identifier {
        Identifier {
            kind: "dns".into(),
            value: name.into(),
        }
    }

    /// An `ip` identifier.
    pub fn ip(addr: IpAddr) -> Identifier {
        Identifier {
            kind: "ip".into(),
            value: addr.to_string(),
        }
    }

    /// The identifier in canonical form (a lower-case name; an address as Rust prints
    /// it), or the problem that refuses it.
    pub fn canonical(&self) -> Result<Identifier, Problem> {
        match self.kind.as_str() {
            "dns" => {
                let name = self.value.to_ascii_lowercase();
                if name.starts_with("*.") {
                    return Err(Problem::rejected_identifier(format!(
                        "{name}: wildcard names need dns-01, which this server does not offer"
                    )));
                }
                if !is_dns_name(&name) {
                    return Err(Problem::malformed(format!(
                        "'{}' is not a DNS name",
                        self.value
                    )));
                }
                Ok(Identifier::dns(&name))
            }
            "ip" => self
                .value
                .parse::<IpAddr>()
                .map(Identifier::ip)
                .map_err(|_| Problem::malformed(format!("'{}' is not an IP address", self.value))),
            other => Err(Problem::unsupported_identifier(format!(
                "identifier type '{other}' (this server issues for dns and ip)"
            ))),
        }
    }
}

/// One entry of `[acme] allowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedPattern {
    /// Exactly this name.
    Name(String),
    /// Any name with at least one more label in front of this suffix (`*.internal`
    /// holds `a.internal` and `a.b.internal`, not `internal`).
    Under(String),
    /// Any address in this network.
    Network(IpNet),
}

impl std::str::FromStr for AllowedPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(AllowedPattern::Network(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowedPattern::Network(IpNet::from(ip)));
        }
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix("*.") {
            Some(suffix) if is_dns_name(suffix) => Ok(AllowedPattern::Under(suffix.to_string())),
            None if is_dns_name(&lower) => Ok(AllowedPattern::Name(lower)),
            _ => Err(format!(
                "'{s}' is neither a DNS name, a '*.' pattern nor an IP network (e.g. \"*.internal\", \"10.0.0.0/8\")"
            )),
        }
    }
}

impl AllowedPattern {
    /// Whether the canonical identifier `id` falls under this pattern.
    pub fn admits(&self, id: &Identifier) -> bool {
        match (self, id.kind.as_str()) {
            (AllowedPattern::Name(n), "dns") => *n == id.value,
            (AllowedPattern::Under(suffix), "dns") => id
                .value
                .strip_suffix(suffix.as_str())
                .is_some_and(|front| front.len() > 1 && front.ends_with('.')),
            (AllowedPattern::Network(net), "ip") => {
                id.value.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip))
            }
            _ => false,
        }
    }
}

/// Checks and canonicalizes the identifiers of a new order: at least one, no more than
/// `max`, each allowed by `allowed`, duplicates dropped.
pub fn check_order(
    requested: &[Identifier],
    allowed: &[AllowedPattern],
    max: usize,
) -> Result<Vec<Identifier>, Problem> {
    if requested.is_empty() {
        return Err(Problem::malformed("the order names no identifiers"));
    }
    if requested.len() > max {
        return Err(Problem::rejected_identifier(format!(
            "an order may name at most {max} identifiers"
        )));
    }
    let mut out: Vec<Identifier> = Vec::new();
    for id in requested {
        let id = id.canonical()?;
        if !allowed.iter().any(|p| p.admits(&id)) {
            return Err(Problem::rejected_identifier(format!(
                "{} '{}' is outside what this server may issue for ([acme] allowed)",
                id.kind, id.value
            )));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A DNS name of letter-digit-hyphen labels (no trailing dot), at most 253 octets.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<AllowedPattern> {
        ["*.internal", "exact.example", "10.0.0.0/8", "192.0.2.7"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect()
    }

    fn dns(v: &str) -> Identifier {
        Identifier::dns(v)
    }

    #[test]
    fn patterns_admit_what_they_say_and_nothing_else() {
        let a = allowed();
        for ok in [
            "api.internal",
            "a.b.internal",
            "API.Internal",
            "exact.example",
        ] {
            assert!(check_order(&[dns(ok)], &a, 10).is_ok(), "{ok}");
        }
        for ip in ["10.1.2.3", "192.0.2.7"] {
            let id = Identifier {
                kind: "ip".into(),
                value: ip.into(),
            };
            assert!(check_order(&[id], &a, 10).is_ok(), "{ip}");
        }
        for bad in [
            "internal",
            "evilinternal",
            "x.exact.example",
            "api.internal.evil",
        ] {
            let p = check_order(&[dns(bad)], &a, 10).unwrap_err();
            assert_eq!(p.kind, "rejectedIdentifier", "{bad}");
        }
        let outside = Identifier {
            kind: "ip".into(),
            value: "11.0.0.1".into(),
        };
        assert_eq!(
            check_order(&[outside], &a, 10).unwrap_err().kind,
            "rejectedIdentifier"
        );
    }

    #[test]
    fn malformed_and_unsupported_identifiers_are_refused_by_type() {
        let a = allowed();
        assert_eq!(
            check_order(&[dns("*.x.internal")], &a, 10)
                .unwrap_err()
                .kind,
            "rejectedIdentifier"
        );
        assert_eq!(
            check_order(&[dns("a..internal")], &a, 10).unwrap_err().kind,
            "malformed"
        );
        assert_eq!(check_order(&[], &a, 10).unwrap_err().kind, "malformed");
        let email = Identifier {
            kind: "email".into(),
            value: "a@b".into(),
        };
        assert_eq!(
            check_order(&[email], &a, 10).unwrap_err().kind,
            "unsupportedIdentifier"
        );
        assert!("bad pattern!".parse::<AllowedPattern>().is_err());
    }

    #[test]
    fn duplicates_collapse_and_the_count_is_bounded() {
        let a = allowed();
        let ids = check_order(&[dns("a.internal"), dns("A.internal")], &a, 10).unwrap();
        assert_eq!(ids, vec![dns("a.internal")]);
        let many: Vec<_> = (0..3).map(|i| dns(&format!("n{i}.internal"))).collect();
        assert_eq!(
            check_order(&many, &a, 2).unwrap_err().kind,
            "rejectedIdentifier"
        );
    }
}
