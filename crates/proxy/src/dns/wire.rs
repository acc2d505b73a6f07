//! The DNS wire format (RFC 1035 section 4), only as far as asking for a name's A or AAAA
//! records and reading the answer's TTL: a query of one question, and an answer whose records
//! are walked (owner names skipped, never decompressed) for their type and TTL.
//!
//! Written here rather than taken from hickory-proto: that crate is not in the cargo cache and
//! brings idna and its Unicode tables (dozens of crates) for a header, one question and a walk
//! over fixed-size record headers; the whole of what is needed fits below and is tested here.

use std::time::Duration;

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_AAAA: u16 = 28;
const TYPE_CNAME: u16 = 5;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
/// QR: a response. TC: truncated (ask again over TCP). RD: recursion desired.
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const RCODE_NOERROR: u16 = 0;
const RCODE_NXDOMAIN: u16 = 3;

/// Why an answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The name cannot be asked for (an empty label, a label over 63 bytes, a name over 255).
    BadName,
    /// Not an answer to this query (another ID, not a response, another question).
    NotOurs,
    /// The bytes end inside a header, a name or a record.
    Short,
    /// A label type RFC 1035 does not define (0b01 or 0b10 in the top bits).
    BadLabel,
    /// The server failed (SERVFAIL, REFUSED...): another server may know.
    ServerFailure(u16),
}

/// What an answer says about the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// TC is set: the answer did not fit in a datagram; ask again over TCP.
    Truncated,
    /// Records of the asked type: the least TTL over the answer section (the CNAMEs leading to
    /// them included: the chain is only good as long as its shortest-lived link).
    Ttl(Duration),
    /// The name has no record of the type (NOERROR without one).
    NoRecords,
    /// The name does not exist (NXDOMAIN): it has no record of any type.
    NoName,
}

/// A query for `name`'s records of `record_type`, recursion desired, as a stub resolver sends.
/// `name` is absolute (a trailing dot is allowed, and implied).
pub(crate) fn query(id: u16, name: &str, record_type: u16) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    // QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0.
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    let name = name.strip_suffix('.').unwrap_or(name);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(WireError::BadName);
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    // The encoded name (from the first length byte to the root's 0) is at most 255 bytes.
    if out.len() - HEADER_LEN > 255 {
        return Err(WireError::BadName);
    }
    out.extend_from_slice(&record_type.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// Reads `answer` as the reply to `query` (the bytes `query()` made).
pub(crate) fn reply(query: &[u8], answer: &[u8]) -> Result<Reply, WireError> {
    let mut at = Cursor { bytes: answer, at: 0 };
    let id = at.u16()?;
    let flags = at.u16()?;
    let questions = at.u16()?;
    let answers = at.u16()?;
    at.skip(4)?; // NSCOUNT, ARCOUNT: authority and additional records are not read.
    if id.to_be_bytes() != query[..2] || flags & FLAG_QR == 0 {
        return Err(WireError::NotOurs);
    }
    if flags & FLAG_TC != 0 {
        return Ok(Reply::Truncated);
    }
    match flags & 0x000f {
        RCODE_NOERROR => {}
        RCODE_NXDOMAIN => return Ok(Reply::NoName),
        rcode => return Err(WireError::ServerFailure(rcode)),
    }
    // The question comes back as it was asked (servers keep its case; compared without).
    let asked = &query[HEADER_LEN..];
    let echoed = at.take(asked.len())?;
    if questions != 1 || !echoed.eq_ignore_ascii_case(asked) {
        return Err(WireError::NotOurs);
    }
    let record_type = u16::from_be_bytes([asked[asked.len() - 4], asked[asked.len() - 3]]);
    let mut least: Option<u32> = None;
    let mut found = false;
    for _ in 0..answers {
        at.skip_name()?;
        let rr_type = at.u16()?;
        let class = at.u16()?;
        let ttl = at.u32()?;
        let length = at.u16()?;
        at.skip(usize::from(length))?;
        if class != CLASS_IN || (rr_type != record_type && rr_type != TYPE_CNAME) {
            continue;
        }
        found |= rr_type == record_type;
        // RFC 2181 8: a TTL with the top bit set is read as zero.
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        least = Some(least.map_or(ttl, |l| l.min(ttl)));
    }
    Ok(match least {
        Some(ttl) if found => Reply::Ttl(Duration::from_secs(u64::from(ttl))),
        _ => Reply::NoRecords,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(WireError::Short)?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.take(n).map(|_| ())
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Steps over a name: labels up to the root, or up to a compression pointer (which ends
    /// the name where it stands; what it points to is not needed).
    fn skip_name(&mut self) -> Result<(), WireError> {
        loop {
            let length = self.take(1)?[0];
            match length >> 6 {
                0 if length == 0 => return Ok(()),
                0 => self.skip(usize::from(length))?,
                0b11 => return self.skip(1),
                _ => return Err(WireError::BadLabel),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `q` with `rcode` and `flags`, and `records` (type, ttl, rdata), each owned
    /// by a pointer to the question's name (offset 12), as servers compress them.
    fn answer(q: &[u8], flags: u16, records: &[(u16, u32, &[u8])]) -> Vec<u8> {
        let mut out = q[..2].to_vec();
        out.extend_from_slice(&(FLAG_QR | FLAG_RD | 0x0080 | flags).to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&q[HEADER_LEN..]);
        for (rr_type, ttl, data) in records {
            out.extend_from_slice(&[0xc0, 12]);
            out.extend_from_slice(&rr_type.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn a_query_is_one_question_with_recursion_desired() {
        let q = query(0xbeef, "a.example.test.", TYPE_A).unwrap();
        let mut want = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x01a\x07example\x04test\x00\x00\x01\x00\x01");
        assert_eq!(q, want);
        // The trailing dot is implied.
        assert_eq!(query(0xbeef, "a.example.test", TYPE_A).unwrap(), want);
        assert_eq!(query(1, "a..test", TYPE_A), Err(WireError::BadName));
        assert_eq!(query(1, &"x".repeat(64), TYPE_A), Err(WireError::BadName));
        let long = vec!["x".repeat(63); 4].join(".");
        assert_eq!(query(1, &long, TYPE_A), Err(WireError::BadName));
    }

    #[test]
    fn a_canned_answer_gives_the_least_ttl_of_its_records() {
        let q = query(7, "www.example.test", TYPE_A).unwrap();
        // A CNAME (300 s; its data, a compressed name, is not read) and two A records.
        let a = answer(
            &q,
            0,
            &[
                (TYPE_CNAME, 300, &[0xc0, 12]),
                (TYPE_A, 60, &[127, 0, 0, 2]),
                (TYPE_A, 30, &[127, 0, 0, 3]),
            ],
        );
        assert_eq!(reply(&q, &a), Ok(Reply::Ttl(Duration::from_secs(30))));
        // A CNAME shorter-lived than the records it leads to bounds them.
        let a = answer(
            &q,
            0,
            &[(TYPE_CNAME, 5, &[0xc0, 12]), (TYPE_A, 60, &[127, 0, 0, 2])],
        );
        assert_eq!(reply(&q, &a), Ok(Reply::Ttl(Duration::from_secs(5))));
        // A server that upper-cases the question is still answering it.
        let mut shouted = answer(&q, 0, &[(TYPE_A, 9, &[127, 0, 0, 2])]);
        shouted[HEADER_LEN + 1] = b'W';
        assert_eq!(reply(&q, &shouted), Ok(Reply::Ttl(Duration::from_secs(9))));
        // RFC 2181: a TTL with the top bit set is zero.
        let a = answer(&q, 0, &[(TYPE_A, 0x8000_0000, &[127, 0, 0, 2])]);
        assert_eq!(reply(&q, &a), Ok(Reply::Ttl(Duration::ZERO)));
    }

    #[test]
    fn an_answer_without_records_of_the_type_has_no_ttl() {
        let q = query(7, "v6only.example.test", TYPE_A).unwrap();
        // NOERROR with no record (the name has only AAAA records).
        assert_eq!(reply(&q, &answer(&q, 0, &[])), Ok(Reply::NoRecords));
        // A record of another type, or a CNAME alone, is no answer to the question.
        let a = answer(&q, 0, &[(TYPE_AAAA, 60, &[0; 16]), (TYPE_CNAME, 60, &[0xc0, 12])]);
        assert_eq!(reply(&q, &a), Ok(Reply::NoRecords));
        // NXDOMAIN.
        assert_eq!(reply(&q, &answer(&q, RCODE_NXDOMAIN, &[])), Ok(Reply::NoName));
        // SERVFAIL: another server may answer.
        assert_eq!(reply(&q, &answer(&q, 2, &[])), Err(WireError::ServerFailure(2)));
        // AAAA asked, AAAA answered.
        let q6 = query(8, "v6only.example.test", TYPE_AAAA).unwrap();
        let a = answer(&q6, 0, &[(TYPE_AAAA, 42, &[0; 16])]);
        assert_eq!(reply(&q6, &a), Ok(Reply::Ttl(Duration::from_secs(42))));
    }

    #[test]
    fn a_truncated_answer_asks_for_tcp_and_a_cut_one_is_refused() {
        let q = query(7, "big.example.test", TYPE_A).unwrap();
        // TC set: whatever follows is not read.
        let tc = answer(&q, FLAG_TC, &[(TYPE_A, 60, &[127, 0, 0, 2])]);
        assert_eq!(reply(&q, &tc[..tc.len() - 3]), Ok(Reply::Truncated));
        // Without TC, an answer cut inside a record, the question or the header is refused.
        let a = answer(&q, 0, &[(TYPE_A, 60, &[127, 0, 0, 2])]);
        for cut in [a.len() - 1, a.len() - 6, HEADER_LEN + 3, 5] {
            assert_eq!(reply(&q, &a[..cut]), Err(WireError::Short), "cut at {cut}");
        }
    }

    #[test]
    fn an_answer_to_another_query_is_not_taken() {
        let q = query(7, "a.example.test", TYPE_A).unwrap();
        let a = answer(&q, 0, &[(TYPE_A, 60, &[127, 0, 0, 2])]);
        // Another ID.
        let other = query(8, "a.example.test", TYPE_A).unwrap();
        assert_eq!(reply(&other, &a), Err(WireError::NotOurs));
        // Another question.
        let other = query(7, "b.example.test", TYPE_A).unwrap();
        assert_eq!(reply(&other, &a), Err(WireError::NotOurs));
        // A query (QR clear) is not an answer.
        assert_eq!(reply(&q, &q), Err(WireError::NotOurs));
        // A label type RFC 1035 does not define.
        let mut bad = a.clone();
        let owner = bad.len() - 16;
        bad[owner] = 0x40;
        assert_eq!(reply(&q, &bad), Err(WireError::BadLabel));
    }
}
