//! One DNS question, answered from the directory or handed on: a name of the requester's
//! networks gets its addresses (`A`, TTL 0: a container that restarts elsewhere is found at
//! once), or no data for another type; an address of a netpath network its name (`PTR`); a
//! single-label name nobody has `NXDOMAIN`; everything else goes to the upstream resolvers.
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, Record, RecordType, rdata},
};

use crate::{
    core::resolver::{Directory, Found},
    error::Result,
};

/// The largest reply sent over UDP to a client that did not offer more (RFC 1035); a longer
/// one is cut and marked truncated, and the client asks again over TCP.
pub const UDP_REPLY_MAX: usize = 512;

/// What becomes of a query.
#[derive(Debug)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// Not netpath's to answer: the upstream resolvers get the query as it came.
    Forward,
    /// Not even a header to answer to.
    Ignore,
}

/// Answers `query` from the endpoint at `from`.
pub fn answer(directory: &mut Directory, from: Ipv4Addr, query: &[u8]) -> Result<Outcome> {
    let Ok(request) = Message::from_vec(query) else {
        return Ok(match id_of(query) {
            Some(id) => Outcome::Reply(error(id, OpCode::Query, ResponseCode::FormErr)),
            None => Outcome::Ignore,
        });
    };
    if request.message_type() != MessageType::Query {
        return Ok(Outcome::Ignore);
    }
    if request.op_code() != OpCode::Query {
        return Ok(Outcome::Reply(error(request.id(), request.op_code(), ResponseCode::NotImp)));
    }
    let [question] = request.queries() else {
        return Ok(Outcome::Reply(error(request.id(), OpCode::Query, ResponseCode::FormErr)));
    };
    if question.query_class() != DNSClass::IN {
        return Ok(Outcome::Forward);
    }
    let name = question.name();
    if question.query_type() == RecordType::PTR {
        if let Ok(net) = name.parse_arpa_name() {
            if let IpAddr::V4(ip) = net.addr() {
                return reverse(directory, from, &request, question, ip);
            }
        }
        return Ok(Outcome::Forward);
    }
    let found = directory.addresses(from, &name.to_lowercase().to_ascii())?;
    Ok(match found {
        Found::Stranger => Outcome::Reply(reply(&request, ResponseCode::Refused, Vec::new())),
        Found::Answer(addresses) => {
            let records = match question.query_type() {
                RecordType::A | RecordType::ANY => addresses
                    .into_iter()
                    .map(|ip| Record::from_rdata(name.clone(), 0, RData::A(rdata::A(ip))))
                    .collect(),
                // The name exists, without an address of that type.
                _ => Vec::new(),
            };
            Outcome::Reply(reply(&request, ResponseCode::NoError, records))
        }
        Found::Nothing if name.num_labels() <= 1 => Outcome::Reply(reply(&request, ResponseCode::NXDomain, Vec::new())),
        Found::Nothing => Outcome::Forward,
    })
}

/// A `PTR` question about `ip`: the name of an endpoint the requester sees, `NXDOMAIN` for
/// another address of netpath's networks, the upstreams' answer for the rest.
fn reverse(
    directory: &mut Directory,
    from: Ipv4Addr,
    request: &Message,
    question: &Query,
    ip: Ipv4Addr,
) -> Result<Outcome> {
    Ok(match directory.name_at(from, ip)? {
        Found::Stranger => Outcome::Reply(reply(request, ResponseCode::Refused, Vec::new())),
        Found::Answer(host) => match Name::from_ascii(format!("{host}.")) {
            Ok(target) => {
                let ptr = Record::from_rdata(question.name().clone(), 0, RData::PTR(rdata::PTR(target)));
                Outcome::Reply(reply(request, ResponseCode::NoError, vec![ptr]))
            }
            Err(_) => Outcome::Reply(reply(request, ResponseCode::ServFail, Vec::new())),
        },
        Found::Nothing if directory.is_netpath_address(ip)? => {
            Outcome::Reply(reply(request, ResponseCode::NXDomain, Vec::new()))
        }
        Found::Nothing => Outcome::Forward,
    })
}

/// The response to `request` with `answers`, authoritative: netpath owns these names.
fn reply(request: &Message, code: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(code != ResponseCode::Refused)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code)
        .add_queries(request.queries().to_vec())
        .add_answers(answers);
    encode(response)
}

/// A message's id, its first two bytes, whatever follows them.
pub fn id_of(message: &[u8]) -> Option<u16> {
    match message {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// `SERVFAIL` to `query`: what a client gets when netpath cannot find out the answer.
pub fn servfail(query: &[u8]) -> Vec<u8> {
    error(id_of(query).unwrap_or(0), OpCode::Query, ResponseCode::ServFail)
}

/// A response that carries no question: for a request that could not be read.
pub fn error(id: u16, op_code: OpCode, code: ResponseCode) -> Vec<u8> {
    encode(Message::error_msg(id, op_code, code))
}

fn encode(mut message: Message) -> Vec<u8> {
    match message.to_vec() {
        Ok(bytes) => bytes,
        // Names and addresses that came in a message encode again; this is a safety net.
        Err(_) => {
            let (id, op_code) = (message.id(), message.op_code());
            message = Message::error_msg(id, op_code, ResponseCode::ServFail);
            message.to_vec().unwrap_or_default()
        }
    }
}

/// `reply` cut to what UDP carries: the question without its answers, marked truncated.
pub fn for_udp(reply: Vec<u8>) -> Vec<u8> {
    if reply.len() <= UDP_REPLY_MAX {
        return reply;
    }
    match Message::from_vec(&reply) {
        Ok(mut message) => {
            message.take_answers();
            message.set_truncated(true);
            encode(message)
        }
        Err(_) => reply,
    }
}
