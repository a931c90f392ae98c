//! Domain names in lists: checked, lower-cased and turned to punycode in one pass, and the
//! glob patterns of wildcard lines turned into regexes.

use super::*;

pub(super) enum Scan {
    Valid,
    Upper,
    NonAscii,
}

// Bit flags, so one branch-free pass can OR them over a whole name.
pub(super) const N_UPPER: u8 = 1;
pub(super) const N_NON_ASCII: u8 = 2;
pub(super) const N_BAD: u8 = 4;

/// Byte classes for [`scan_name`]: `[a-z0-9_-]` and `.` are 0.
static NAME_CLASS: [u8; 256] = {
    let mut t = [N_BAD; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.' {
            t[c] = 0;
        } else if b.is_ascii_uppercase() {
            t[c] = N_UPPER;
        } else if b >= 0x80 {
            t[c] = N_NON_ASCII;
        }
        c += 1;
    }
    t
};

/// Checks a name without its trailing dot, saying what work normalising needs.
pub(super) fn scan_name(s: &str) -> Result<Scan, SkipReason> {
    let b = s.as_bytes();
    let mut class = 0;
    // An empty label is a dot after a dot (or at either end); found without a branch a byte.
    let mut prev = b'.';
    let mut empty_label = false;
    for &c in b {
        class |= NAME_CLASS[usize::from(c)];
        empty_label |= (c == b'.') & (prev == b'.');
        prev = c;
    }
    if class & N_NON_ASCII != 0 && class & N_BAD == 0 {
        // Length and labels are checked after punycode conversion.
        return Ok(Scan::NonAscii);
    }
    if class & N_BAD != 0 {
        return Err(if b.contains(&b':') && is_ip(s) {
            SkipReason::IpAddress
        } else {
            SkipReason::InvalidName
        });
    }
    // Only here: UTF-8 can be longer than its punycode, so non-ASCII names are measured after.
    if empty_label
        || prev == b'.'
        || b.len() > 253
        || (b.len() > 63 && b.split(|&c| c == b'.').any(|l| l.len() > 63))
    {
        return Err(SkipReason::InvalidName);
    }
    let tld = b.rsplit(|&c| c == b'.').next().unwrap_or_default();
    if tld.iter().all(u8::is_ascii_digit) {
        // No top-level domain is all digits: this is an address or garbage.
        return Err(if s.parse::<Ipv4Addr>().is_ok() {
            SkipReason::IpAddress
        } else {
            SkipReason::InvalidName
        });
    }
    Ok(if class & N_UPPER != 0 {
        Scan::Upper
    } else {
        Scan::Valid
    })
}

pub(super) fn normalize_name(s: &str) -> Result<Cow<'_, str>, SkipReason> {
    let s = s.strip_suffix('.').unwrap_or(s);
    match scan_name(s)? {
        Scan::Valid => Ok(Cow::Borrowed(s)),
        Scan::Upper => Ok(Cow::Owned(s.to_ascii_lowercase())),
        Scan::NonAscii => {
            let ascii = idna::domain_to_ascii(s).map_err(|_| SkipReason::InvalidName)?;
            match scan_name(&ascii) {
                Ok(Scan::Valid) => Ok(Cow::Owned(ascii)),
                _ => Err(SkipReason::InvalidName),
            }
        }
    }
}

/// `*` matches any characters, dots included; everything else must be a name character.
pub(super) fn glob_to_regex(prefix: &str, body: &str, suffix: &str) -> Result<String, SkipReason> {
    let mut re = String::with_capacity(prefix.len() + 2 * body.len() + suffix.len());
    re.push_str(prefix);
    let mut literal = false;
    let mut last_star = false;
    for c in body.bytes() {
        match c {
            b'*' if last_star => {}
            b'*' => re.push_str(".*"),
            b'.' => re.push_str(r"\."),
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {
                literal = true;
                re.push(char::from(c));
            }
            b'A'..=b'Z' => {
                literal = true;
                re.push(char::from(c.to_ascii_lowercase()));
            }
            _ => return Err(SkipReason::InvalidName),
        }
        last_star = c == b'*';
    }
    if !literal {
        // `*`, `*.*`: would match every name.
        return Err(SkipReason::InvalidName);
    }
    re.push_str(suffix);
    Ok(re)
}
