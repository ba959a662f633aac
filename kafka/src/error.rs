//! [`KafkaError`]: what went wrong talking to Kafka, with librdkafka's code kept.

use rdkafka::types::RDKafkaErrorCode;

/// A failed call to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka answered with an error.
    #[error("{what}: {source}")]
    Client {
        /// What was asked (`watermarks of orders/3`, `assign orders`, ...).
        what: String,
        /// librdkafka's error, with its code.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A request's answer carried an error code.
    #[error("{what}: {code}")]
    Code {
        /// What was asked.
        what: String,
        /// librdkafka's code.
        code: RDKafkaErrorCode,
    },
    /// The topic does not exist, or the broker lists it without partitions.
    #[error("topic {topic} does not exist or has no partitions")]
    NoSuchTopic {
        /// The topic.
        topic: String,
    },
    /// The cluster refused the client's credentials or TLS settings: retrying cannot help,
    /// the configuration must change.
    #[error(
        "Kafka at {brokers} refused the connection: {reason}. Check kafka.options: security.protocol, sasl.mechanisms, sasl.username, sasl.password (set it with SLUICE__KAFKA__OPTIONS__SASL_PASSWORD) and ssl.ca.location"
    )]
    Refused {
        /// The bootstrap servers.
        brokers: String,
        /// What librdkafka said (never the secret itself).
        reason: String,
    },
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A blocking call's task ended without an answer (it panicked or was cancelled).
    #[error("{what}: the task ended without an answer")]
    TaskLost {
        /// What the task was doing.
        what: &'static str,
    },
}

impl KafkaError {
    /// Wraps librdkafka's error with what was being done.
    pub fn client(what: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Client {
            what: what.into(),
            source,
        }
    }

    /// librdkafka's error code, when librdkafka gave one.
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Self::Client { source, .. } => source.rdkafka_error_code(),
            Self::Code { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the error says the position is outside the partition's log (below its start
    /// after a deletion, or past its end).
    pub fn is_offset_out_of_range(&self) -> bool {
        is_out_of_range(self.code())
    }
}

/// True for the codes that mean the cluster refused the client itself (credentials, TLS):
/// the same settings will be refused again.
pub(crate) fn is_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState
    )
}

/// librdkafka's account of the cluster refusing a client (credentials, TLS), kept by the
/// client's context: the errors its calls return carry only a code, and the owner reports
/// one [`KafkaError::Refused`] with the reason.
#[derive(Debug, Default)]
pub(crate) struct Refusal(std::sync::Mutex<Option<String>>);

impl Refusal {
    /// Keeps `reason` (the first one) when `error` is a refusal; true if it was.
    pub(crate) fn note(&self, error: &rdkafka::error::KafkaError, reason: &str) -> bool {
        let refused = error.rdkafka_error_code().is_some_and(is_refusal);
        if refused {
            tracing::debug!("librdkafka: {error}: {reason}");
            if let Ok(mut r) = self.0.lock() {
                r.get_or_insert_with(|| reason.to_string());
            }
        }
        refused
    }

    fn reason(&self) -> Option<String> {
        self.0.lock().ok().and_then(|r| r.clone())
    }

    /// The refusal of the client of `brokers`, described by what librdkafka said (or by
    /// `fallback` when it said nothing yet).
    pub(crate) fn error(&self, brokers: &str, fallback: &dyn std::fmt::Display) -> KafkaError {
        KafkaError::Refused {
            brokers: brokers.to_string(),
            reason: self.reason().unwrap_or_else(|| fallback.to_string()),
        }
    }

    /// `e`, or the refusal when the cluster refused the client (a lookup then fails with a
    /// timeout or a transport error, which would not say why).
    pub(crate) fn explain(&self, brokers: &str, e: KafkaError) -> KafkaError {
        match self.reason() {
            Some(_) => self.error(brokers, &e),
            None => e,
        }
    }
}

/// True for the codes librdkafka uses for a position outside the log.
pub(crate) fn is_out_of_range(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}
