//! AWS's Greengrass IPC mock server, as a test peer: the nucleus end of the
//! IPC socket, which checks each packet a component sends against what the
//! test expects, and answers as a nucleus would.
//!
//! The mock is C code in `aws-greengrass-component-sdk` (`mock/mock.c`,
//! `gg_test_*`); this crate wraps it. It is one per process and sets
//! `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT` and `SVCUID` in the
//! process's environment, so a test using it lives in a test binary of its
//! own, and the component under test is a child process that inherits them.
//! Expectations are strict and in order: stream ids count the component's
//! IPC calls (1 for its first after connecting).

use std::ffi::{CString, c_char, c_int};
use std::path::Path;

// The SDK's static library holds the mock; link it.
use base64::prelude::{BASE64_STANDARD, Engine as _};
use gg_sdk as _;

unsafe extern "C" {
    fn verge_mock_setup(prefix: *const c_char, token: *const c_char) -> c_int;
    fn verge_mock_accept_handshake(timeout: c_int) -> c_int;
    fn verge_mock_expect_update_state(stream: i32, state: *const c_char, timeout: c_int) -> c_int;
    fn verge_mock_expect_publish_iot(
        stream: i32,
        topic: *const c_char,
        b64: *const c_char,
        qos: *const c_char,
        timeout: c_int,
    ) -> c_int;
    fn verge_mock_expect_publish_iot_error(
        stream: i32,
        topic: *const c_char,
        b64: *const c_char,
        qos: *const c_char,
        code: *const c_char,
        message: *const c_char,
        timeout: c_int,
    ) -> c_int;
    fn verge_mock_expect_publish_iot_no_reply(
        stream: i32,
        topic: *const c_char,
        b64: *const c_char,
        qos: *const c_char,
        timeout: c_int,
    ) -> c_int;
    fn verge_mock_expect_any_publish_iot(stream: i32, timeout: c_int) -> c_int;
    fn verge_mock_answer_publish_iot(stream: i32, timeout: c_int) -> c_int;
    fn verge_mock_expect_publish_local(
        stream: i32,
        topic: *const c_char,
        b64: *const c_char,
        timeout: c_int,
    ) -> c_int;
    fn verge_mock_disconnect() -> c_int;
    fn verge_mock_wait_disconnect(timeout: c_int) -> c_int;
    fn verge_mock_close();
}

/// What went wrong, with the mock's `GgError` code (its log on stderr says more).
#[derive(Debug)]
pub struct MockError {
    pub what: String,
    pub code: i32,
}

impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IPC mock: {} failed (GgError {})", self.what, self.code)
    }
}

impl std::error::Error for MockError {}

type Result = std::result::Result<(), MockError>;

fn check(what: impl Into<String>, code: c_int) -> Result {
    if code == 0 {
        Ok(())
    } else {
        Err(MockError {
            what: what.into(),
            code,
        })
    }
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL in a test string")
}

/// Timeouts are whole seconds (the mock's unit).
fn secs(s: u32) -> c_int {
    c_int::try_from(s).unwrap_or(c_int::MAX)
}

/// How the mock answers a request it expected.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    Accepted,
    /// An IPC error with this code and message (a nucleus that cannot take it now).
    Refused(&'a str, &'a str),
    /// No answer (a nucleus about to go away); [`Mock::answer_publish`] may answer later.
    None,
}

/// The mock nucleus; closed (socket and its folder removed) when dropped.
pub struct Mock(());

impl Mock {
    /// Opens the socket in a new folder `<prefix>_XXXXXX` and sets the two
    /// variables in this process's environment. Call it before starting threads.
    pub fn setup(prefix: &Path, token: &str) -> std::result::Result<Mock, MockError> {
        let prefix = cs(prefix.to_str().expect("a UTF-8 path"));
        check("setup", unsafe {
            verge_mock_setup(prefix.as_ptr(), cs(token).as_ptr())
        })?;
        Ok(Mock(()))
    }

    /// Waits for a component to connect and checks its token.
    pub fn accept(&self, timeout: u32) -> Result {
        check("accepting the connection", unsafe {
            verge_mock_accept_handshake(secs(timeout))
        })
    }

    /// UpdateState with `state` ("RUNNING", "ERRORED"); accepted.
    pub fn expect_update_state(&self, stream: i32, state: &str, timeout: u32) -> Result {
        check(format!("UpdateState {state} on stream {stream}"), unsafe {
            verge_mock_expect_update_state(stream, cs(state).as_ptr(), secs(timeout))
        })
    }

    /// PublishToIoTCore of exactly `payload` to `topic` at `qos`, answered as `answer` says.
    pub fn expect_publish(
        &self,
        stream: i32,
        (topic, payload, qos): (&str, &[u8], u8),
        answer: Answer,
        timeout: u32,
    ) -> Result {
        let (topic, b64, qos) = (
            cs(topic),
            cs(&BASE64_STANDARD.encode(payload)),
            cs(&qos.to_string()),
        );
        let (topic, b64, qos, t) = (topic.as_ptr(), b64.as_ptr(), qos.as_ptr(), secs(timeout));
        let what = format!("PublishToIoTCore on stream {stream}, {answer:?}");
        check(what, unsafe {
            match answer {
                Answer::Accepted => verge_mock_expect_publish_iot(stream, topic, b64, qos, t),
                Answer::Refused(code, message) => verge_mock_expect_publish_iot_error(
                    stream,
                    topic,
                    b64,
                    qos,
                    cs(code).as_ptr(),
                    cs(message).as_ptr(),
                    t,
                ),
                Answer::None => verge_mock_expect_publish_iot_no_reply(stream, topic, b64, qos, t),
            }
        })
    }

    /// Any PublishToIoTCore on `stream` (its payload not checked); accepted.
    pub fn expect_any_publish(&self, stream: i32, timeout: u32) -> Result {
        check(format!("a PublishToIoTCore on stream {stream}"), unsafe {
            verge_mock_expect_any_publish_iot(stream, secs(timeout))
        })
    }

    /// Answers the PublishToIoTCore left unanswered on `stream`: accepted.
    pub fn answer_publish(&self, stream: i32, timeout: u32) -> Result {
        check(
            format!("answering the PublishToIoTCore on stream {stream}"),
            unsafe { verge_mock_answer_publish_iot(stream, secs(timeout)) },
        )
    }

    /// PublishToTopic (local pub/sub) of exactly `payload` to `topic`; accepted.
    pub fn expect_local_publish(
        &self,
        stream: i32,
        topic: &str,
        payload: &[u8],
        timeout: u32,
    ) -> Result {
        check(format!("PublishToTopic on stream {stream}"), unsafe {
            verge_mock_expect_publish_local(
                stream,
                cs(topic).as_ptr(),
                cs(&BASE64_STANDARD.encode(payload)).as_ptr(),
                secs(timeout),
            )
        })
    }

    /// Hangs up on the component, as a nucleus that stops does.
    pub fn hang_up(&self) -> Result {
        check("hanging up", unsafe { verge_mock_disconnect() })
    }

    /// Waits for the component to close the connection, sending nothing more.
    pub fn expect_disconnect(&self, timeout: u32) -> Result {
        check("waiting for the component to disconnect", unsafe {
            verge_mock_wait_disconnect(secs(timeout))
        })
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        unsafe { verge_mock_close() };
    }
}
