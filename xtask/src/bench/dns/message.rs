//! The two DNS messages the client needs, by hand (RFC 1035, section 4): an A query for one
//! name, and the first A record of the answer to it.
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail, ensure};

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Header flags of a query: recursion desired, as a stub resolver (glibc) sends it.
const RECURSION_DESIRED: u16 = 0x0100;
const RESPONSE: u16 = 0x8000;
const HEADER_LEN: usize = 12;
/// A label whose first two bits are set is a pointer (two bytes) to a name elsewhere.
const POINTER: u8 = 0xc0;

/// An A query for `name` with `id`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut msg = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    // One question, no answer, authority or additional records.
    for field in [id, RECURSION_DESIRED, 1, 0, 0, 0] {
        msg.extend(field.to_be_bytes());
    }
    for label in name.trim_end_matches('.').split('.') {
        ensure!(!label.is_empty() && label.len() < 64, "{name:?} is not a name a query can carry");
        msg.push(label.len() as u8);
        msg.extend(label.as_bytes());
    }
    msg.push(0);
    msg.extend(TYPE_A.to_be_bytes());
    msg.extend(CLASS_IN.to_be_bytes());
    Ok(msg)
}

/// The ID of a message, to match an answer to its query; `None` for less than a header.
pub fn id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(msg.get(..2)?.try_into().ok()?))
}

/// The address of the first A record of the answer `msg`; an error says what else it was.
pub fn first_a(msg: &[u8]) -> Result<Ipv4Addr> {
    let mut r = Reader { msg, at: 0 };
    let (_id, flags, questions, answers) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
    r.skip(4)?;
    ensure!(flags & RESPONSE != 0, "a query came back, not an answer");
    let rcode = flags & 0xf;
    ensure!(rcode == 0, "answered with rcode {rcode} ({})", rcode_name(rcode));
    for _ in 0..questions {
        r.name()?;
        r.skip(4)?;
    }
    for _ in 0..answers {
        r.name()?;
        let (kind, class) = (r.u16()?, r.u16()?);
        r.skip(4)?;
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        if kind == TYPE_A && class == CLASS_IN && len == 4 {
            return Ok(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
    }
    bail!("no A record among {answers} answer record(s)")
}

fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let bytes = self.msg.get(self.at..self.at + len).with_context(|| {
            format!("the answer ends at byte {} of a {len}-byte field at {}", self.msg.len(), self.at)
        })?;
        self.at += len;
        Ok(bytes)
    }

    fn skip(&mut self, len: usize) -> Result<()> {
        self.take(len).map(drop)
    }

    fn u16(&mut self) -> Result<u16> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// Steps over a name: labels up to the root, or up to a pointer (which ends it).
    fn name(&mut self) -> Result<()> {
        loop {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                l if l & POINTER == POINTER => return self.skip(1),
                l => self.skip(usize::from(l))?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{first_a, id, query};

    /// The answer a resolver gives to `query(7, "db")`: the question, then `db` as a pointer
    /// to it, A, IN, TTL 0, 10.1.2.3.
    fn answer(rcode: u8) -> Vec<u8> {
        let mut msg = query(7, "db").unwrap();
        msg[2] |= 0x80;
        msg[3] = rcode;
        msg[7] = 1;
        msg.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 1, 2, 3]);
        msg
    }

    #[test]
    fn a_query_is_the_header_and_one_question() {
        let q = query(0x1234, "db").unwrap();
        assert_eq!(q, [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'd', b'b', 0, 0, 1, 0, 1]);
        assert_eq!(id(&q), Some(0x1234));
        assert!(query(1, "a..b").is_err());
    }

    #[test]
    fn the_first_a_record_of_an_answer() {
        assert_eq!(first_a(&answer(0)).unwrap(), Ipv4Addr::new(10, 1, 2, 3));
        assert!(first_a(&answer(3)).unwrap_err().to_string().contains("NXDOMAIN"));
        assert!(first_a(&query(7, "db").unwrap()).is_err(), "a query is no answer");
        let cut = answer(0);
        assert!(first_a(&cut[..cut.len() - 2]).is_err(), "a cut answer is an error, not a panic");
    }
}
