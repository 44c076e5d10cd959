//! serde glue for the generated protobuf messages.
//!
//! rust-protobuf 3 has no serde support of its own; `tests/protos.rs` adds
//! serde derives to every generated message and routes the two field kinds
//! serde cannot handle by itself through these functions. The JSON shape is
//! Kata's: proto field names (a Rust keyword keeps rust-protobuf's trailing
//! `_`, e.g. `type_`, as genpolicy's rules expect), enums as numbers, an unset
//! message field as `null`, 64-bit integers as JSON numbers and `bytes` as
//! arrays of numbers.

use std::fmt;

use protobuf::{EnumFull, EnumOrUnknown, MessageField};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

/// Serializes an enum field as its number (Kata's policy input shape).
pub fn serialize_enum<E: EnumFull, S: Serializer>(
    value: &EnumOrUnknown<E>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_i32(value.value())
}

/// Reads an enum field from its number or from its proto name (`"SERVING"`),
/// so hand-written agentctl requests may use either.
pub fn deserialize_enum<'de, E: EnumFull, D: Deserializer<'de>>(
    d: D,
) -> Result<EnumOrUnknown<E>, D::Error> {
    struct EnumVisitor<E>(std::marker::PhantomData<E>);

    impl<E: EnumFull> Visitor<'_> for EnumVisitor<E> {
        type Value = EnumOrUnknown<E>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an enum number or name")
        }

        fn visit_i64<Er: de::Error>(self, v: i64) -> Result<Self::Value, Er> {
            i32::try_from(v)
                .map(EnumOrUnknown::from_i32)
                .map_err(|_| Er::custom(format!("enum value {v} out of range")))
        }

        fn visit_u64<Er: de::Error>(self, v: u64) -> Result<Self::Value, Er> {
            i32::try_from(v)
                .map(EnumOrUnknown::from_i32)
                .map_err(|_| Er::custom(format!("enum value {v} out of range")))
        }

        fn visit_str<Er: de::Error>(self, v: &str) -> Result<Self::Value, Er> {
            E::enum_descriptor()
                .value_by_name(v)
                .map(|value| EnumOrUnknown::from_i32(value.value()))
                .ok_or_else(|| {
                    Er::custom(format!(
                        "unknown value {v:?} for enum {}",
                        E::enum_descriptor().name()
                    ))
                })
        }
    }

    d.deserialize_any(EnumVisitor::<E>(std::marker::PhantomData))
}

/// Serializes a singular message field: the message, or `null` when unset.
pub fn serialize_message_field<M: Serialize, S: Serializer>(
    value: &MessageField<M>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value.as_ref() {
        Some(m) => m.serialize(s),
        None => s.serialize_none(),
    }
}

/// Reads a singular message field; `null` leaves it unset.
pub fn deserialize_message_field<'de, M: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<MessageField<M>, D::Error> {
    Option::<M>::deserialize(d).map(MessageField::from_option)
}

#[cfg(test)]
mod tests {
    use crate::protocols::agent::{ExecProcessRequest, StringUser};
    use crate::protocols::health::{health_check_response::ServingStatus, HealthCheckResponse};
    use crate::protocols::types::{IPAddress, IPFamily};

    #[test]
    fn enum_round_trips_as_number_and_reads_names() {
        let mut resp = HealthCheckResponse::new();
        resp.status = ServingStatus::SERVING.into();
        let json = serde_json::to_value(&resp).unwrap();
        assert_eq!(json, serde_json::json!({"status": 1}));
        let back: HealthCheckResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, resp);
        let named: HealthCheckResponse =
            serde_json::from_str(r#"{"status": "NOT_SERVING"}"#).unwrap();
        assert_eq!(named.status.enum_value(), Ok(ServingStatus::NOT_SERVING));
        assert!(serde_json::from_str::<HealthCheckResponse>(r#"{"status": "BOGUS"}"#).is_err());
    }

    #[test]
    fn message_field_is_null_or_object_and_missing_fields_default() {
        let mut req = ExecProcessRequest::new();
        req.container_id = "c1".into();
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["string_user"], serde_json::Value::Null);
        assert_eq!(json["container_id"], "c1");

        req.string_user = Some(StringUser {
            uid: "1000".into(),
            ..Default::default()
        })
        .into();
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["string_user"]["uid"], "1000");
        let back: ExecProcessRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);

        let partial: ExecProcessRequest = serde_json::from_str(r#"{"exec_id": "e1"}"#).unwrap();
        assert_eq!(partial.exec_id, "e1");
        assert!(partial.process.is_none());
    }

    #[test]
    fn field_names_are_proto_names() {
        let mut addr = IPAddress::new();
        addr.family = IPFamily::v6.into();
        addr.address = "::1".into();
        addr.mask = "128".into();
        let json = serde_json::to_value(&addr).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"family": 1, "address": "::1", "mask": "128"})
        );
    }
}
