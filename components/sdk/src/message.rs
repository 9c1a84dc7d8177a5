//! Requests and outcomes, mirroring `verge:inference/types`, with helpers.

use crate::Error;

/// One unit of work (`verge:inference/types.request`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// MIME type of `body` as the caller declared it ("" when unknown).
    pub content_type: String,
    pub body: Vec<u8>,
    /// Headers at the edge, `--attr` on the device; keys are lower-case.
    pub attributes: Vec<(String, String)>,
    /// The host could not pass the whole body.
    pub truncated: bool,
}

impl Request {
    /// The body as UTF-8 text, or `invalid-input`.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body).map_err(|e| {
            Error::invalid(format!(
                "the body is not UTF-8 text (invalid byte at {})",
                e.valid_up_to()
            ))
        })
    }

    /// An attribute by (lower-case) name.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// A generated answer (`verge:inference/types.response`).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// What the component decided (`verge:inference/types.outcome`).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer now.
    Respond(Response),
    /// Let the request go on with these headers / attributes added.
    Annotate(Vec<(String, String)>),
    /// Hand over to the origin or the cloud, with a reason.
    Defer(String),
}

impl Outcome {
    /// Respond with a JSON body (already serialised).
    pub fn json(status: u16, body: impl Into<String>) -> Outcome {
        Outcome::Respond(Response {
            status,
            content_type: "application/json".into(),
            body: body.into().into_bytes(),
            headers: vec![],
        })
    }

    /// Let the request go on, annotated with these pairs.
    pub fn annotate<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Outcome {
        Outcome::Annotate(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Hand over to the origin or the cloud.
    pub fn defer(reason: impl Into<String>) -> Outcome {
        Outcome::Defer(reason.into())
    }

    /// Adds a header to a response, or a pair to an annotation (no-op on defer).
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Outcome {
        match &mut self {
            Outcome::Respond(r) => r.headers.push((key.into(), value.into())),
            Outcome::Annotate(pairs) => pairs.push((key.into(), value.into())),
            Outcome::Defer(_) => {}
        }
        self
    }
}

#[cfg(target_arch = "wasm32")]
mod wit {
    use super::{Outcome, Request, Response};
    use crate::bindings::verge::inference::types as t;

    impl From<t::Request> for Request {
        fn from(r: t::Request) -> Request {
            Request {
                content_type: r.content_type,
                body: r.body,
                attributes: r.attributes,
                truncated: r.truncated,
            }
        }
    }

    impl From<Outcome> for t::Outcome {
        fn from(o: Outcome) -> t::Outcome {
            match o {
                Outcome::Respond(Response {
                    status,
                    content_type,
                    body,
                    headers,
                }) => t::Outcome::Respond(t::Response {
                    status,
                    content_type,
                    body,
                    headers,
                }),
                Outcome::Annotate(pairs) => t::Outcome::Annotate(pairs),
                Outcome::Defer(reason) => t::Outcome::Defer(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_build_outcomes() {
        let Outcome::Respond(r) = Outcome::json(403, "{}").with_header("x-a", "1") else {
            panic!()
        };
        assert_eq!(
            (r.status, r.content_type.as_str(), r.body.as_slice()),
            (403, "application/json", b"{}".as_slice())
        );
        assert_eq!(r.headers, vec![("x-a".to_string(), "1".to_string())]);
        assert_eq!(
            Outcome::annotate([("x-score", "0.1")]).with_header("x-b", "2"),
            Outcome::Annotate(vec![
                ("x-score".into(), "0.1".into()),
                ("x-b".into(), "2".into())
            ])
        );
        assert_eq!(Outcome::defer("why"), Outcome::Defer("why".into()));
    }

    #[test]
    fn text_and_attributes() {
        let req = Request {
            body: b"hi".to_vec(),
            attributes: vec![("x-id".into(), "7".into())],
            ..Request::default()
        };
        assert_eq!(req.text().unwrap(), "hi");
        assert_eq!(req.attribute("X-Id"), Some("7"));
        let bad = Request {
            body: vec![b'a', 0xff],
            ..Request::default()
        };
        assert!(matches!(bad.text(), Err(Error::InvalidInput(m)) if m.contains("at 1")));
    }
}
