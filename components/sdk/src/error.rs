//! The component's error, mirroring `verge:inference/types.error`.

use std::fmt;

/// Why a request got no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request itself is wrong (a 4xx): the message says what was expected.
    InvalidInput(String),
    /// The model or its engine failed.
    Model(String),
    /// Anything else that went wrong inside the component (a bad setting, a bug).
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidInput(message.into())
    }

    pub fn model(message: impl Into<String>) -> Error {
        Error::Model(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(message.into())
    }

    /// A `wasi:nn` error: its code and the message the backend gave.
    pub fn from_nn(code: impl fmt::Debug, message: &str) -> Error {
        let code = format!("{code:?}");
        if message.is_empty() {
            Error::Model(format!("wasi:nn {code}"))
        } else {
            Error::Model(format!("wasi:nn {code}: {message}"))
        }
    }

    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidInput(m) | Error::Model(m) | Error::Internal(m) => m,
        }
    }

    /// The kind as WIT names it: `invalid-input`, `model` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid-input",
            Error::Model(_) => "model",
            Error::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for Error {}

#[cfg(target_arch = "wasm32")]
mod wit {
    use super::Error;
    use crate::bindings::verge::inference::types::Error as WitError;
    use crate::bindings::wasi::nn::errors::Error as NnError;

    impl From<NnError> for Error {
        fn from(e: NnError) -> Error {
            Error::from_nn(e.code(), &e.data())
        }
    }

    impl From<Error> for WitError {
        fn from(e: Error) -> WitError {
            match e {
                Error::InvalidInput(m) => WitError::InvalidInput(m),
                Error::Model(m) => WitError::Model(m),
                Error::Internal(m) => WitError::Internal(m),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Code {
        InvalidArgument,
    }

    #[test]
    fn nn_errors_keep_code_and_message() {
        let e = Error::from_nn(Code::InvalidArgument, "no input named 'x'");
        assert_eq!(
            e,
            Error::Model("wasi:nn InvalidArgument: no input named 'x'".into())
        );
        assert_eq!(e.kind(), "model");
        assert_eq!(
            Error::from_nn(Code::InvalidArgument, "").message(),
            "wasi:nn InvalidArgument"
        );
        assert_eq!(
            Error::invalid("empty text").to_string(),
            "invalid-input: empty text"
        );
    }
}
