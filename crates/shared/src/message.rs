//! The stream message format: what pub-api appends and sub-worker decodes.
//!
//! Fields are flat strings (Redis stream fields), with a schema version in `v`. The
//! message is a versioned enum so a `V2` can ship while `V1` entries are still in
//! flight: a worker decodes every version it knows and dead-letters the rest with the
//! reason, never blocking the shard and never dropping an entry silently.

use std::collections::HashMap;

use uuid::Uuid;

/// Field holding the schema version.
pub const VERSION_FIELD: &str = "v";

/// One booking request as accepted by the API (schema version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRequestV1 {
    /// Made by the API; the decision is stored under it (exactly-once effect).
    pub request_id: Uuid,
    pub goods_id: i64,
    pub user_id: i64,
    pub quantity: i32,
    /// When the API accepted it, in Unix milliseconds.
    pub accepted_at_ms: i64,
    /// The HTTP request id (`x-request-id`), so worker logs join API logs.
    pub trace_id: String,
}

/// Every message version a worker understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    BookingRequestV1(BookingRequestV1),
}

/// Why an entry could not be decoded; stored with the entry in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("unsupported message version `{0}`")]
    UnsupportedVersion(String),
}

impl StreamMessage {
    /// The flat field list for XADD.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::BookingRequestV1(m) => vec![
                (VERSION_FIELD, "1".to_owned()),
                ("rid", m.request_id.simple().to_string()),
                ("gid", m.goods_id.to_string()),
                ("uid", m.user_id.to_string()),
                ("qty", m.quantity.to_string()),
                ("at", m.accepted_at_ms.to_string()),
                ("trace", m.trace_id.clone()),
            ],
        }
    }

    /// Decodes the fields of one stream entry.
    ///
    /// # Errors
    /// A missing or malformed field, or a version this build does not know.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, DecodeError> {
        let get = |name: &'static str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or(DecodeError::MissingField(name))
        };
        match get(VERSION_FIELD)? {
            "1" => {
                let request_id = get("rid")?;
                let request_id =
                    Uuid::try_parse(request_id).map_err(|e| DecodeError::InvalidField {
                        field: "rid",
                        reason: e.to_string(),
                    })?;
                let message = BookingRequestV1 {
                    request_id,
                    goods_id: positive(get("gid")?, "gid")?,
                    user_id: positive(get("uid")?, "uid")?,
                    quantity: i32::try_from(positive(get("qty")?, "qty")?).map_err(|_| {
                        DecodeError::InvalidField {
                            field: "qty",
                            reason: "out of range".into(),
                        }
                    })?,
                    accepted_at_ms: positive(get("at")?, "at")?,
                    trace_id: fields.get("trace").cloned().unwrap_or_default(),
                };
                Ok(Self::BookingRequestV1(message))
            }
            other => Err(DecodeError::UnsupportedVersion(
                other.chars().take(32).collect(),
            )),
        }
    }
}

fn positive(raw: &str, field: &'static str) -> Result<i64, DecodeError> {
    match raw.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(DecodeError::InvalidField {
            field,
            reason: "must be positive".into(),
        }),
        Err(e) => Err(DecodeError::InvalidField {
            field,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StreamMessage {
        StreamMessage::BookingRequestV1(BookingRequestV1 {
            request_id: Uuid::new_v4(),
            goods_id: 42,
            user_id: 7,
            quantity: 2,
            accepted_at_ms: 1_700_000_000_000,
            trace_id: "abc".into(),
        })
    }

    fn as_map(fields: Vec<(&'static str, String)>) -> HashMap<String, String> {
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn a_message_survives_the_round_trip_through_fields() {
        let message = sample();
        let decoded = StreamMessage::from_fields(&as_map(message.to_fields()));
        assert_eq!(decoded, Ok(message));
    }

    #[test]
    fn an_unknown_version_is_refused_with_its_version() {
        let mut fields = as_map(sample().to_fields());
        fields.insert("v".into(), "9".into());
        assert_eq!(
            StreamMessage::from_fields(&fields),
            Err(DecodeError::UnsupportedVersion("9".into()))
        );
    }

    #[test]
    fn a_missing_or_bad_field_is_named() {
        let mut fields = as_map(sample().to_fields());
        fields.remove("uid");
        assert_eq!(
            StreamMessage::from_fields(&fields),
            Err(DecodeError::MissingField("uid"))
        );
        let mut fields = as_map(sample().to_fields());
        fields.insert("qty".into(), "-1".into());
        assert!(matches!(
            StreamMessage::from_fields(&fields),
            Err(DecodeError::InvalidField { field: "qty", .. })
        ));
    }
}
