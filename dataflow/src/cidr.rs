//! CIDR blocks, to tell fleet addresses from external ones.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use flowmap_operators::Ip;
use serde::{Deserialize, Deserializer};

/// An IPv4 or IPv6 CIDR block, stored in the 128-bit form of [`Ip`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u128,
    mask: u128,
    text_prefix: u8,
    v4: bool,
}

/// A string that is not a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR block {text:?}: {why}")]
pub struct CidrError {
    text: String,
    why: &'static str,
}

impl Cidr {
    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: Ip) -> bool {
        ip.0 & self.mask == self.base
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| CidrError { text: text.to_string(), why };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| err("expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("prefix is not a number"))?;
        let (v4, max) = match addr {
            IpAddr::V4(_) => (true, 32),
            IpAddr::V6(_) => (false, 128),
        };
        if prefix > max {
            return Err(err("prefix longer than the address"));
        }
        let bits = if v4 { u32::from(prefix) + 96 } else { u32::from(prefix) };
        let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
        let base = Ip::from_addr(addr).0;
        if base & mask != base {
            return Err(err("host bits set below the prefix"));
        }
        Ok(Cidr { base, mask, text_prefix: prefix, v4 })
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ip(self.base), self.text_prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ip {
        Ip::from_addr(s.parse().unwrap())
    }

    #[test]
    fn contains_v4_and_v6() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::a00:1")), "IPv6 outside the mapped range");
        let c6: Cidr = "fd00::/8".parse().unwrap();
        assert!(c6.contains(ip("fd12::1")));
        assert!(!c6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("fd00::1")));
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn rejects_bad_blocks() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.1/8", "x/8", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
