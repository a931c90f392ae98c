//! A link-layer (Ethernet, Wi-Fi) address.

use std::fmt;
use std::str::FromStr;

/// A 48-bit MAC address. Written lower case with colons (`3c:2e:f9:12:34:56`); read with
/// colons or hyphens, in either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a MAC address; write six two-digit hex bytes, e.g. \"3c:2e:f9:12:34:56\"")]
pub struct MacError(pub String);

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Mac, MacError> {
        let err = || MacError(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(sep);
        for b in &mut bytes {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(bytes))
    }
}

impl TryFrom<&[u8]> for Mac {
    type Error = ();

    /// From a netlink `NDA_LLADDR` or a lease's hardware address: exactly six bytes.
    fn try_from(b: &[u8]) -> Result<Mac, ()> {
        <[u8; 6]>::try_from(b).map(Mac).map_err(|_| ())
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Mac;

    #[test]
    fn reads_colons_and_hyphens_in_any_case() {
        let m: Mac = "3C:2e:F9:12:34:56".parse().unwrap();
        assert_eq!(m.to_string(), "3c:2e:f9:12:34:56");
        assert_eq!("3c-2e-f9-12-34-56".parse::<Mac>().unwrap(), m);
    }

    #[test]
    fn rejects_what_is_not_six_bytes() {
        for bad in [
            "",
            "3c:2e:f9:12:34",
            "3c:2e:f9:12:34:56:78",
            "3c:2e:f9:12:34:5",
            "zz:2e:f9:12:34:56",
            "3c2ef9123456",
        ] {
            let e = bad.parse::<Mac>().unwrap_err();
            assert!(e.to_string().contains("3c:2e:f9:12:34:56"), "{e}");
        }
    }
}
