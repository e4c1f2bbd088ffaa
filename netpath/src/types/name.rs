//! The names a request may carry: interface names (the kernel's rule) and the names of
//! networks and endpoints (Docker's rule).
use crate::error::{Error, Result};

/// The longest interface name the kernel takes (IFNAMSIZ less its NUL).
pub const IFNAMSIZ_MAX: usize = 15;

/// What is wrong with an interface name, if anything: 1 to 15 bytes, no '/', ':' or
/// whitespace, not "." or "..". The text starts with the name, for the caller to say whose.
pub fn ifname_problem(name: &str) -> Option<String> {
    if name.len() > IFNAMSIZ_MAX {
        return Some(format!("'{name}' is {} bytes; interface names are at most {IFNAMSIZ_MAX}", name.len()));
    }
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    (!ok).then(|| format!("'{name}' is not a valid interface name"))
}

/// Names of networks and endpoint ids: what Docker accepts for names.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} '{name}': use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}
