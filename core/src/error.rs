//! The one error type of keyward's core and of every backend's `KeySigner`.

use std::fmt;

/// A boxed error kept as the source of an [`Error`], so the cause chain survives.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong with a key, a backend, a certificate or the state directory.
///
/// Each variant's `Display` is one line naming the cause; the underlying error (if
/// any) stays reachable through [`std::error::Error::source`], and is not repeated in
/// the line, so a caller printing the chain with `": "` gets no duplicates.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not be reached or is temporarily unable to answer (network
    /// down, server sealed or starting, session pool exhausted); a retry may succeed.
    #[error("{message}")]
    Unavailable {
        /// What was unreachable, e.g. `"OpenBao at http://127.0.0.1:8200 unreachable"`.
        message: String,
        /// The transport or library error behind it.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend answered and refused or failed the operation; retrying will not help.
    #[error("{message}")]
    Backend {
        /// The cause in plain words, e.g. `"PIN incorrect for token 'ca-token'"`.
        message: String,
        /// The library error behind it (which carries raw codes such as `CKR_*`).
        #[source]
        source: Option<BoxError>,
    },
    /// The key (or token, alias, Transit key) named by a URI does not exist.
    #[error("key not found: {0}")]
    NotFound(String),
    /// `generate` was asked to create a key that already exists; nothing was changed.
    #[error("key already exists: {0}")]
    AlreadyExists(String),
    /// The backend or the issuer cannot do this (an algorithm, a mechanism, a CSR feature).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A key URI could not be parsed; the message names the offending part.
    #[error("invalid key URI: {0}")]
    InvalidUri(String),
    /// The URI's scheme belongs to a backend this binary was built without.
    #[error("backend '{0}' not compiled in (rebuild keyward with the '{0}' feature)")]
    NotCompiled(String),
    /// Input from the user was malformed: a CSR, a certificate, a name, a duration.
    #[error("{0}")]
    InvalidInput(String),
    /// A certificate or signature failed a check (signature, validity, constraints).
    #[error("verification failed: {0}")]
    Verification(String),
    /// The state directory is not in the expected state (no CA yet, CA already there,
    /// an unfinished operation from an earlier run).
    #[error("{0}")]
    State(String),
    /// A file system operation failed; the message names the path.
    #[error("{context}")]
    Io {
        /// What was being done, with the path, e.g. `"cannot write /x/ca.pem"`.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A non-retryable backend failure with a plain-words message.
    pub fn backend(message: impl Into<String>) -> Self {
        Error::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// A non-retryable backend failure, keeping the library error as its source.
    pub fn backend_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A retryable "cannot reach the backend" failure, keeping the transport error.
    pub fn unavailable(message: impl Into<String>, source: Option<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source,
        }
    }

    /// An I/O failure with the path or action that failed.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// Formats an error with its whole source chain on one line, joined by `": "`.
pub fn chain_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !line.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        cur = e.source();
    }
    elide_middle(&line.replace('\n', " "))
}

/// The longest error line printed whole; longer ones (a 100 KB argument echoed back)
/// keep their start and end, which name the cause, around a note of what was cut.
const MAX_ERROR_LINE: usize = 2048;

/// Shortens `line` to about [`MAX_ERROR_LINE`] bytes by cutting out its middle.
fn elide_middle(line: &str) -> String {
    if line.len() <= MAX_ERROR_LINE {
        return line.to_string();
    }
    let floor = |mut i: usize| {
        while !line.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let head = floor(MAX_ERROR_LINE / 2);
    let tail = floor(line.len() - MAX_ERROR_LINE / 4);
    format!(
        "{}...[{} bytes elided]...{}",
        &line[..head],
        tail - head,
        &line[tail..]
    )
}

#[cfg(test)]
mod elide_tests {
    use super::*;

    #[test]
    fn a_huge_echoed_value_is_cut_from_the_middle_of_the_line() {
        let e = Error::InvalidInput(format!("bad name '{}é' (too long)", "é".repeat(50_000)));
        let line = chain_line(&e);
        assert!(line.len() <= MAX_ERROR_LINE + 40, "{}", line.len());
        assert!(line.starts_with("invalid input: bad name") || line.contains("bad name"));
        assert!(line.ends_with("(too long)") && line.contains("bytes elided"));
        let short = Error::InvalidInput("short".into());
        assert!(!chain_line(&short).contains("elided"));
    }
}
