//! Delivery errors carry who is to blame and whether another attempt may help.

use std::time::Duration;

use http::StatusCode;

/// Who caused a failed delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The subscriber answered with an error or misbehaved.
    Subscriber,
    /// The network between us and the subscriber (connect, reset, timeout).
    Network,
}

/// One failed delivery attempt.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("subscriber answered {status}")]
    Status {
        status: StatusCode,
        /// `Retry-After` from a 429 or 503, if any.
        retry_after: Option<Duration>,
        /// The first bytes of the response body, for `knativeerrordata`.
        body: bytes::Bytes,
    },
    #[error("subscriber answered 200 with a body that is not a CloudEvent: {reason}")]
    BadReply { reason: String, body: bytes::Bytes },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the subscriber: {0}")]
    Network(String),
}

impl AttemptError {
    pub fn blame(&self) -> Blame {
        match self {
            AttemptError::Status { .. } | AttemptError::BadReply { .. } => Blame::Subscriber,
            AttemptError::Timeout(_) | AttemptError::Network(_) => Blame::Network,
        }
    }

    /// Knative's rule: network errors, timeouts, 404, 408, 409, 429 and 5xx are retried;
    /// every other answer goes straight to the dead-letter sink.
    pub fn retryable(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => {
                status.is_server_error() || matches!(status.as_u16(), 404 | 408 | 409 | 429)
            }
            AttemptError::BadReply { .. } => false,
            AttemptError::Timeout(_) | AttemptError::Network(_) => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The status code for `knativeerrorcode`, when the subscriber answered at all.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AttemptError::Status { status, .. } => Some(*status),
            AttemptError::BadReply { .. } => Some(StatusCode::OK),
            _ => None,
        }
    }

    /// The response body for `knativeerrordata`.
    pub fn body(&self) -> Option<&bytes::Bytes> {
        match self {
            AttemptError::Status { body, .. } | AttemptError::BadReply { body, .. } => Some(body),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> AttemptError {
        AttemptError::Status {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
            retry_after: None,
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn knative_retry_rule() {
        for code in [404, 408, 409, 429, 500, 502, 503, 504] {
            assert!(status(code).retryable(), "{code} must be retried");
        }
        for code in [400, 401, 403, 405, 410, 413, 415, 422] {
            assert!(
                !status(code).retryable(),
                "{code} must go to the dead-letter sink"
            );
        }
        assert!(AttemptError::Timeout(Duration::from_secs(1)).retryable());
        assert!(AttemptError::Network("reset".into()).retryable());
        assert_eq!(AttemptError::Network("x".into()).blame(), Blame::Network);
        assert_eq!(status(500).blame(), Blame::Subscriber);
    }
}
