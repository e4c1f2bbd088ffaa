//! netpath's one error type. Every variant renders as a single line that names the thing and,
//! where the user can act, what to do. The layers below the frontends say which part of the
//! request is at fault as a [`Field`]; each frontend names it in its own terms when it renders
//! the error (the CLI by its flag, the Docker driver by `docker`'s, the CNI plugin by its
//! configuration keys), so no message of the core speaks one frontend's language.
use std::{borrow::Cow, fmt::Display};

/// A part of a request that a message speaks of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Subnet,
    Gateway,
    Bridge,
    Mtu,
    Uplink,
    Xdp,
    EndpointId,
    Ip,
    Mac,
    Ifname,
    Publish,
    Force,
    /// The name a container answers to on its network.
    Name,
    /// One of the other names it answers to.
    Alias,
}

impl Field {
    /// The core's own words for it, where no frontend renders the message.
    pub fn noun(self) -> &'static str {
        match self {
            Field::Subnet => "subnet",
            Field::Gateway => "gateway",
            Field::Bridge => "bridge name",
            Field::Mtu => "MTU",
            Field::Uplink => "uplink",
            Field::Xdp => "XDP",
            Field::EndpointId => "endpoint id",
            Field::Ip => "address",
            Field::Mac => "MAC address",
            Field::Ifname => "interface name",
            Field::Publish => "published port",
            Field::Force => "force",
            Field::Name => "name",
            Field::Alias => "alias",
        }
    }
}

/// One line of text in which the request's fields are left for the frontend to name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message(Vec<Part>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

impl Message {
    /// A message that starts by naming `field`.
    pub fn field(field: Field) -> Self {
        Self(vec![Part::Field(field)])
    }

    pub fn and(mut self, text: impl Display) -> Self {
        self.0.push(Part::Text(text.to_string()));
        self
    }

    pub fn and_field(mut self, field: Field) -> Self {
        self.0.push(Part::Field(field));
        self
    }

    /// The message with each field named by `name`.
    pub fn render(&self, name: &dyn Fn(Field) -> Cow<'static, str>) -> String {
        self.0
            .iter()
            .map(|part| match part {
                Part::Text(text) => Cow::Borrowed(text.as_str()),
                Part::Field(field) => name(*field),
            })
            .collect()
    }

    pub fn and_message(mut self, more: Message) -> Self {
        self.0.extend(more.0);
        self
    }

    /// The message with `field` named `text`; its other fields stay for the renderer.
    fn naming(mut self, field: Field, text: &str) -> Self {
        for part in &mut self.0 {
            if *part == Part::Field(field) {
                *part = Part::Text(text.to_string());
            }
        }
        self
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&|field| Cow::Borrowed(field.noun())))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self(vec![Part::Text(text)])
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        text.to_string().into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user: a flag, an address, a name.
    #[error("{0}")]
    Invalid(Message),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(Message),
    /// The request collides with something that exists.
    #[error("{0}")]
    Conflict(Message),
    /// The database names objects the kernel lacks (after a reboot): `netpath restore` fixes it.
    #[error("{0}")]
    Stale(Message),
    /// The kernel, the filesystem or the database failed underneath an operation.
    #[error("{what}: {}", chain(source.as_ref()))]
    System {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, so the errno under a library's message is not lost.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

impl Error {
    /// The process exit code of each class, as the README documents them.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::System { .. } => 1,
            Error::Invalid(_) => 2,
            Error::NotFound(_) => 3,
            Error::Conflict(_) => 4,
            Error::Stale(_) => 5,
        }
    }

    /// The class of each error in one word, as metrics label it (the exit codes' classes).
    pub fn class(&self) -> &'static str {
        match self {
            Error::System { .. } => "system",
            Error::Invalid(_) => "invalid",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Stale(_) => "stale",
        }
    }

    pub fn stale(msg: impl Into<Message>) -> Self {
        Self::Stale(msg.into())
    }

    /// The error with each field of the request named by `name` (a frontend's words).
    pub fn render(&self, name: &dyn Fn(Field) -> Cow<'static, str>) -> String {
        match self {
            Error::Invalid(m) | Error::NotFound(m) | Error::Conflict(m) | Error::Stale(m) => m.render(name),
            Error::System { .. } => self.to_string(),
        }
    }

    /// The error with `field` named `text` already: for a frontend that took that part of the
    /// request from elsewhere than the flags of the renderer its errors go through (the OCI
    /// hook's names come from annotations, its other fields from the command line's flags).
    pub fn naming(self, field: Field, text: &str) -> Self {
        match self {
            Error::Invalid(m) => Error::Invalid(m.naming(field, text)),
            Error::NotFound(m) => Error::NotFound(m.naming(field, text)),
            Error::Conflict(m) => Error::Conflict(m.naming(field, text)),
            Error::Stale(m) => Error::Stale(m.naming(field, text)),
            system @ Error::System { .. } => system,
        }
    }

    /// Every error of a teardown, on one line; the class is the first one's.
    pub fn all(errors: Vec<Error>) -> Result<()> {
        let mut errors = errors.into_iter();
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let rest: Vec<Message> = errors.map(|e| e.message()).collect();
        if rest.is_empty() {
            return Err(first);
        }
        let joined = rest.into_iter().fold(first.message(), |all, m| all.and("; ").and_message(m));
        Err(match first {
            Error::Invalid(_) => Error::Invalid(joined),
            Error::NotFound(_) => Error::NotFound(joined),
            Error::Conflict(_) => Error::Conflict(joined),
            Error::Stale(_) => Error::Stale(joined),
            Error::System { .. } => Error::system(joined, "teardown incomplete"),
        })
    }

    /// The error as text with its fields, whatever its class.
    fn message(&self) -> Message {
        match self {
            Error::Invalid(m) | Error::NotFound(m) | Error::Conflict(m) | Error::Stale(m) => m.clone(),
            system => system.to_string().into(),
        }
    }

    pub fn invalid(msg: impl Into<Message>) -> Self {
        Self::Invalid(msg.into())
    }
    pub fn not_found(msg: impl Into<Message>) -> Self {
        Self::NotFound(msg.into())
    }
    pub fn conflict(msg: impl Into<Message>) -> Self {
        Self::Conflict(msg.into())
    }
    pub fn system(what: impl Display, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::System { what: what.to_string(), source: source.into() }
    }
}

/// Attaches what was being done to a lower-level error.
pub trait Context<T> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::system(what(), e))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::system("state database", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(field: Field) -> Cow<'static, str> {
        Cow::Owned(format!("--{}", field.noun().replace(' ', "-")))
    }

    #[test]
    fn each_frontend_names_the_fields_its_way() {
        let e = Error::conflict(Message::from("address 10.0.0.2 is in use; pick another ").and_field(Field::Ip));
        assert_eq!(e.to_string(), "address 10.0.0.2 is in use; pick another address");
        assert_eq!(e.render(&flag), "address 10.0.0.2 is in use; pick another --address");
        assert_eq!(e.exit_code(), 4);
    }

    #[test]
    fn a_teardown_keeps_every_error_and_every_field() {
        let errors = vec![
            Error::invalid(Message::field(Field::Mtu).and(" 9 is out of range")),
            Error::conflict(Message::from("pick another ").and_field(Field::Subnet)),
            Error::system("deleting np-web", "EBUSY"),
        ];
        let all = Error::all(errors).unwrap_err();
        assert_eq!(all.exit_code(), 2, "the class is the first error's");
        assert_eq!(all.render(&flag), "--MTU 9 is out of range; pick another --subnet; deleting np-web: EBUSY");
        assert!(Error::all(Vec::new()).is_ok());
    }

    #[test]
    fn a_field_named_early_keeps_the_others_for_the_renderer() {
        let e = Error::conflict(Message::field(Field::Name).and(" is taken; pick another ").and_field(Field::Ip));
        let e = e.naming(Field::Name, "annotation io.netpath.name");
        assert_eq!(e.render(&flag), "annotation io.netpath.name is taken; pick another --address");
        assert_eq!(e.exit_code(), 4);
    }
}
