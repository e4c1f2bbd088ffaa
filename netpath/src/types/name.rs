//! The names a request may carry: interface names (the kernel's rule), the names of
//! networks and endpoint ids (Docker's rule), and the names containers answer to on their
//! network (DNS's rule).
use std::net::Ipv4Addr;

use crate::error::{Error, Field, Message, Result};

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

/// The longest name DNS carries (RFC 1035 2.3.4, without the root's trailing dot).
pub const HOSTNAME_MAX: usize = 253;
/// The longest label of a name.
const LABEL_MAX: usize = 63;
/// The rule of [`hostname_problem`], as a user reads it.
const HOSTNAME_RULE: &str = "a container name is letters, digits, '-' and '.'; each part between dots is 1-63 long and starts and ends with a letter or digit, 253 at most in all";
/// How much of a refused name a message repeats: a name of 10 kB is not echoed whole.
const SHOWN_MAX: usize = 64;

/// What is wrong with a container's name or alias, if anything: it must be an RFC 1123 host
/// name (dotted labels of ASCII letters, digits and inner '-'), so that a resolver can serve
/// it, and not an IPv4 address, which a resolver would never look up. The text starts with
/// the name, quoted and escaped onto one line, for the caller to say whose.
fn hostname_problem(name: &str) -> Option<String> {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        (1..=LABEL_MAX).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    let ok = name.len() <= HOSTNAME_MAX && name.split('.').all(label_ok);
    if !ok {
        return Some(format!("{}: {HOSTNAME_RULE}", shown(name)));
    }
    name.parse::<Ipv4Addr>().is_ok().then(|| format!("{}: an IPv4 address is not a container name", shown(name)))
}

/// A name quoted for a one-line message: control characters escaped, a long one cut short.
fn shown(name: &str) -> String {
    let head: String = name.chars().take(SHOWN_MAX).flat_map(char::escape_debug).collect();
    match name.chars().count() > SHOWN_MAX {
        true => format!("'{head}...' ({} bytes)", name.len()),
        false => format!("'{head}'"),
    }
}

/// A name a container answers to on its network: its name or one of its aliases. Kept as
/// given; two names are the same name whatever their case, as in DNS.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    /// The name, or the error of the request's `field` that carried it.
    pub fn parse(field: Field, name: &str) -> Result<Self> {
        match hostname_problem(name) {
            None => Ok(Self(name.to_string())),
            Some(problem) => Err(Error::invalid(Message::field(field).and(format!(" {problem}")))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is the same name, as DNS compares names.
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

/// The name an attach asks for, and how firmly.
#[derive(Clone, Debug)]
pub enum Naming {
    /// Chosen by the user (`--name`, an annotation): refused when another endpoint has it.
    Chosen(Hostname),
    /// Derived by a frontend from something chosen for another purpose (a pod's name, a
    /// hostname): left out when another endpoint has it, as a container must not fail to
    /// start for a name it did not choose.
    Derived(Hostname),
}

impl Naming {
    pub fn hostname(&self) -> &Hostname {
        match self {
            Naming::Chosen(name) | Naming::Derived(name) => name,
        }
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_dotted_labels_of_letters_digits_and_inner_hyphens() {
        for good in ["web", "Web-1", "a", "1", "123", "0web", "web.svc", "a.b.c.d.e", "x--y", "db-primary.prod"] {
            assert_eq!(hostname_problem(good), None, "{good}");
        }
        for bad in [
            "",
            ".",
            "web.",
            ".web",
            "a..b",
            "-web",
            "web-",
            "a.-b",
            "a-.b",
            "web_1",
            "web_1!",
            "web 1",
            "web/1",
            "web:1",
            "wéb",
            "web\u{0}",
            "web\n",
            "ｗｅｂ",
            "'; DROP TABLE endpoints; --",
            "10.0.0.1",
        ] {
            assert!(hostname_problem(bad).is_some(), "{bad:?} is refused");
        }
    }

    #[test]
    fn labels_reach_63_bytes_and_names_253() {
        let label = |n: usize| "a".repeat(n);
        assert_eq!(hostname_problem(&label(63)), None);
        assert!(hostname_problem(&label(64)).is_some());
        // Four labels of 63 and one of 1, with their dots: 253 bytes.
        let longest = [label(63), label(63), label(63), label(61)].join(".");
        assert_eq!(longest.len(), 253);
        assert_eq!(hostname_problem(&longest), None);
        assert!(hostname_problem(&format!("{longest}a")).is_some());
        assert!(hostname_problem(&format!("{longest}.a")).is_some());
    }

    #[test]
    fn a_refusal_is_one_short_line_that_names_the_field() {
        let e = Hostname::parse(Field::Name, "web_1!").unwrap_err();
        assert_eq!(e.to_string(), format!("name 'web_1!': {HOSTNAME_RULE}"));
        let e = Hostname::parse(Field::Alias, &format!("a\n\u{1b}[2J{}", "b".repeat(5000))).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}') && text.len() < 400, "{text}");
        assert!(text.starts_with("alias 'a\\n\\u{1b}[2Jbbb") && text.contains("(5006 bytes)"), "{text}");
    }

    #[test]
    fn names_compare_without_case() {
        let web = Hostname::parse(Field::Name, "Web").unwrap();
        assert!(web.is("wEB") && !web.is("web1"));
        assert_eq!(web.to_string(), "Web");
    }
}
