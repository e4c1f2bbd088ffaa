//! netpath's one error type. Every variant renders as a single line that names the thing and,
//! where the user can act, what to do.
use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user: a flag, an address, a name.
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request collides with something that exists.
    #[error("{0}")]
    Conflict(String),
    /// The database names objects the kernel lacks (after a reboot): `netpath restore` fixes it.
    #[error("{0}")]
    Stale(String),
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

    pub fn stale(msg: impl Display) -> Self {
        Self::Stale(msg.to_string())
    }

    /// Every error of a teardown, on one line; the class is the first one's.
    pub fn all(errors: Vec<Error>) -> Result<()> {
        let mut errors = errors.into_iter();
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
        if rest.is_empty() {
            return Err(first);
        }
        let text = format!("{first}; {}", rest.join("; "));
        Err(match first {
            Error::Invalid(_) => Error::Invalid(text),
            Error::NotFound(_) => Error::NotFound(text),
            Error::Conflict(_) => Error::Conflict(text),
            Error::Stale(_) => Error::Stale(text),
            Error::System { .. } => Error::system(text, "teardown incomplete"),
        })
    }

    pub fn invalid(msg: impl Display) -> Self {
        Self::Invalid(msg.to_string())
    }
    pub fn not_found(msg: impl Display) -> Self {
        Self::NotFound(msg.to_string())
    }
    pub fn conflict(msg: impl Display) -> Self {
        Self::Conflict(msg.to_string())
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
