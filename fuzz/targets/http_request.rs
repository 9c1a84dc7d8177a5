//! The local API's mapping of an HTTP request to the component's `request`
//! (`api::to_request`): the input is a raw HTTP/1.1 request, parsed as hyper
//! parses it (httparse, then `HeaderName`/`HeaderValue`), the rest its body.
//! Checked: `Content-Type` becomes the content type (the last one given),
//! every other header not about the exchange an attribute, in order, the body
//! unchanged; refusals only for non-ASCII header values and a JSON body that
//! is not JSON.
#![no_main]

use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use verge_device::api::{HOP_BY_HOP, to_request};


libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for h in parsed.headers.iter() {
        // hyper answers 400 to what these refuse; such requests never map.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let body = data[head..].to_vec();

    let texts: Option<Vec<(&HeaderName, &str)>> = headers
        .iter()
        .map(|(n, v)| v.to_str().ok().map(|v| (n, v)))
        .collect();
    match to_request(&headers, body.clone()) {
        Ok(request) => {
            let texts = texts.expect("a header that is not text was accepted");
            let content_type = texts
                .iter()
                .rev()
                .find(|(n, _)| **n == CONTENT_TYPE)
                .map_or("", |(_, v)| v);
            assert_eq!(request.content_type, content_type);
            let attributes: Vec<(String, String)> = texts
                .iter()
                .filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()))
                .map(|(n, v)| (n.as_str().to_string(), v.to_string()))
                .collect();
            assert_eq!(request.attributes, attributes);
            assert_eq!(request.body, body);
            assert!(!request.truncated);
        }
        Err(("bad-header", _)) => assert!(texts.is_none(), "refused text headers"),
        Err(("bad-json", message)) => {
            assert!(texts.is_some());
            assert!(
                serde_json::from_slice::<serde_json::Value>(&body).is_err(),
                "{message}"
            );
        }
        Err((kind, message)) => panic!("unexpected refusal {kind}: {message}"),
    }
});
