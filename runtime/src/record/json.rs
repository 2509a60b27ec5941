//! How recorded messages become JSON, and how readers get floats back.
//!
//! # Contract
//! - Finite `f64` and `f32` values are written by `serde_json` in their shortest round-tripping form (ryu), and
//!   the crate enables `serde_json`'s `float_roundtrip` feature, so parsing the text gives back the same bits
//!   (the default parser may be one ULP off). An `f32` parsed as `f32` is the same `f32`; an `f32` parsed as
//!   `f64` is the nearest `f64` to its shortest decimal, which casts back to the same `f32`.
//! - **Non-finite values are written explicitly**, as the JSON strings `"NaN"`, `"Infinity"` and
//!   `"-Infinity"`. Plain `serde_json` would write `null` for them, indistinguishable from a missing
//!   `Option`, and a replay would silently read something else. Inputs (sensors) may be non-finite and are
//!   recorded as they were; a JSON schema for such a field should say `"type": ["number", "string"]`.
//!   Readers use [`float`] (or [`f64_or_nonfinite`] in a `#[serde(deserialize_with)]`) to get them back.
//! - `-0.0` is written as `-0.0` and reads back as `-0.0`.
//! - **Record types must be typed structs where a value can be non-finite**: a `serde_json::Value` built with
//!   `json!` or `Value::from` has already turned NaN into `null` before the recorder sees it.
//!
//! The adapter ([`to_writer`]) wraps `serde_json`'s serializer and changes nothing but non-finite floats.

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};
use serde::Deserialize;

/// The JSON string a non-finite float is written as.
pub fn nonfinite_name(value: f64) -> &'static str {
    if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Appends `msg` as compact JSON to `out`, with non-finite floats written as strings (see the module doc).
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, msg: &T) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::new(out);
    msg.serialize(Explicit(&mut ser))
}

/// `msg` as compact JSON bytes, with non-finite floats written as strings.
pub fn to_vec<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    to_writer(&mut out, msg)?;
    Ok(out)
}

/// A float read back from a recorded JSON value: a number, or one of the strings of [`nonfinite_name`].
/// `None` for anything else (including `null`).
pub fn float(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// For `#[serde(deserialize_with = "coxswain::record::json::f64_or_nonfinite")]` on an `f64` field that was
/// recorded through [`to_writer`].
pub fn f64_or_nonfinite<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    FloatRepr::deserialize(deserializer)?.value()
}

/// One recorded float: a number, or one of the names of [`nonfinite_name`].
#[derive(Deserialize)]
#[serde(untagged)]
enum FloatRepr {
    Number(f64),
    Name(String),
}

impl FloatRepr {
    fn value<E: serde::de::Error>(self) -> Result<f64, E> {
        match self {
            FloatRepr::Number(v) => Ok(v),
            FloatRepr::Name(s) => float(&serde_json::Value::String(s.clone()))
                .ok_or_else(|| E::custom(format!("`{s}` is neither a number nor NaN/Infinity/-Infinity"))),
        }
    }
}

/// For `#[serde(deserialize_with = ...)]` on a `heapless::Vec<f64, N>` recorded through [`to_writer`]: more
/// than `N` values is an error, never a panic.
pub fn f64s_or_nonfinite<'de, D: serde::Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<heapless::Vec<f64, N>, D::Error> {
    let items = Vec::<FloatRepr>::deserialize(deserializer)?;
    let len = items.len();
    let mut out = heapless::Vec::new();
    for item in items {
        out.push(item.value()?).map_err(|_| serde::de::Error::invalid_length(len, &format!("at most {N}").as_str()))?;
    }
    Ok(out)
}

/// The same for `heapless::Vec<f32, N>` (an `f32` written in its shortest form reads back as itself).
pub fn f32s_or_nonfinite<'de, D: serde::Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<heapless::Vec<f32, N>, D::Error> {
    let wide: heapless::Vec<f64, N> = f64s_or_nonfinite(deserializer)?;
    Ok(wide.iter().map(|&v| v as f32).collect())
}

/// The same for `[f32; N]`: exactly `N` values.
pub fn f32_array_or_nonfinite<'de, D: serde::Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[f32; N], D::Error> {
    let wide: heapless::Vec<f64, N> = f64s_or_nonfinite(deserializer)?;
    if wide.len() != N {
        return Err(serde::de::Error::invalid_length(wide.len(), &format!("{N} values").as_str()));
    }
    let mut out = [0.0f32; N];
    for (dst, src) in out.iter_mut().zip(&wide) {
        *dst = *src as f32;
    }
    Ok(out)
}

/// Wraps a serializer; forwards everything, except that non-finite floats become strings.
struct Explicit<S>(S);

/// A value to be serialized through [`Explicit`] (what compound serializers hand their elements).
struct Wrap<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Explicit(serializer))
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<Self::Ok, Self::Error> { self.0.$method(v) })*
    };
}

impl<S: Serializer> Serializer for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Explicit<S::SerializeSeq>;
    type SerializeTuple = Explicit<S::SerializeTuple>;
    type SerializeTupleStruct = Explicit<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Explicit<S::SerializeTupleVariant>;
    type SerializeMap = Explicit<S::SerializeMap>;
    type SerializeStruct = Explicit<S::SerializeStruct>;
    type SerializeStructVariant = Explicit<S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<Self::Ok, Self::Error> {
        if v.is_finite() {
            self.0.serialize_f32(v)
        } else {
            self.0.serialize_str(nonfinite_name(f64::from(v)))
        }
    }

    fn serialize_f64(self, v: f64) -> Result<Self::Ok, Self::Error> {
        if v.is_finite() {
            self.0.serialize_f64(v)
        } else {
            self.0.serialize_str(nonfinite_name(v))
        }
    }

    fn serialize_none(self) -> Result<Self::Ok, Self::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Self::Ok, Self::Error> {
        self.0.serialize_some(&Wrap(value))
    }

    fn serialize_unit(self) -> Result<Self::Ok, Self::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, Self::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        self.0.serialize_newtype_struct(name, &Wrap(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        self.0.serialize_newtype_variant(name, index, variant, &Wrap(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        self.0.serialize_seq(len).map(Explicit)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        self.0.serialize_tuple(len).map(Explicit)
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeTupleStruct, Self::Error> {
        self.0.serialize_tuple_struct(name, len).map(Explicit)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        self.0.serialize_tuple_variant(name, index, variant, len).map(Explicit)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        self.0.serialize_map(len).map(Explicit)
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeStruct, Self::Error> {
        self.0.serialize_struct(name, len).map(Explicit)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        self.0.serialize_struct_variant(name, index, variant, len).map(Explicit)
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<Self::Ok, Self::Error> {
        self.0.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<S: SerializeSeq> SerializeSeq for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_element(&Wrap(value))
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

impl<S: SerializeTuple> SerializeTuple for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_element(&Wrap(value))
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

impl<S: SerializeTupleStruct> SerializeTupleStruct for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_field(&Wrap(value))
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

impl<S: SerializeTupleVariant> SerializeTupleVariant for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_field(&Wrap(value))
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

impl<S: SerializeMap> SerializeMap for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.0.serialize_key(&Wrap(key))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_value(&Wrap(value))
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

impl<S: SerializeStruct> SerializeStruct for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_field(key, &Wrap(value))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

impl<S: SerializeStructVariant> SerializeStructVariant for Explicit<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_field(key, &Wrap(value))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    fn f64_bits_edge() -> Vec<f64> {
        vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1.0 / 3.0,
            std::f64::consts::PI,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 2.0, // subnormal
            f64::from_bits(1),       // smallest subnormal
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1e300,
            -1e-300,
            9_007_199_254_740_992.0, // 2^53
            123_456_789.123_456_79,
            f64::from(f32::MAX),
            f64::from(f32::MIN_POSITIVE),
        ]
    }

    fn f32_bits_edge() -> Vec<f32> {
        vec![
            0.0,
            -0.0,
            0.1,
            1.0 / 3.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::MAX,
            f32::MIN,
            f32::EPSILON,
            16777217.0,
            3.4028235e38,
            1.1754942e-38,
        ]
    }

    /// A small deterministic generator (xorshift) so the test needs no extra dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn finite_f64_round_trips_bit_for_bit_through_the_json_text() {
        let mut values = f64_bits_edge();
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        values.extend((0..100_000).map(|_| f64::from_bits(xorshift(&mut s))).filter(|v| v.is_finite()));
        for v in values {
            let text = to_vec(&v).unwrap();
            let back: f64 = serde_json::from_slice(&text).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e} -> {}", String::from_utf8_lossy(&text));
            // Through a serde_json::Value too (what the report reads).
            let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
            assert_eq!(float(&value).unwrap().to_bits(), v.to_bits());
        }
    }

    #[test]
    fn finite_f32_round_trips_as_f32_and_through_f64() {
        let mut values = f32_bits_edge();
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        values.extend((0..100_000).map(|_| f32::from_bits(xorshift(&mut s) as u32)).filter(|v| v.is_finite()));
        for v in values {
            let text = to_vec(&v).unwrap();
            let back: f32 = serde_json::from_slice(&text).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e} -> {}", String::from_utf8_lossy(&text));
            let wide: f64 = serde_json::from_slice(&text).unwrap();
            assert_eq!((wide as f32).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn nonfinite_floats_are_written_as_named_strings_not_null() {
        #[derive(Serialize)]
        struct Input {
            imu: Vec<f64>,
            gain: f32,
            missing: Option<f64>,
            present: Option<f64>,
            nested: BTreeMap<String, (f64, f32)>,
        }
        let input = Input {
            imu: vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0],
            gain: f32::NAN,
            missing: None,
            present: Some(f64::INFINITY),
            nested: [("a".to_string(), (f64::NEG_INFINITY, f32::INFINITY))].into(),
        };
        let text = String::from_utf8(to_vec(&input).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"imu":["NaN","Infinity","-Infinity",-0.0],"gain":"NaN","missing":null,"present":"Infinity","nested":{"a":["-Infinity","Infinity"]}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(float(&value["imu"][0]).unwrap().is_nan());
        assert_eq!(float(&value["imu"][1]), Some(f64::INFINITY));
        assert_eq!(float(&value["imu"][2]), Some(f64::NEG_INFINITY));
        assert_eq!(float(&value["imu"][3]).unwrap().to_bits(), (-0.0f64).to_bits());
        assert_eq!(float(&value["missing"]), None);
    }

    #[test]
    fn f64_or_nonfinite_reads_numbers_and_the_three_names_and_refuses_other_strings() {
        #[derive(serde::Deserialize)]
        struct Field {
            #[serde(deserialize_with = "f64_or_nonfinite")]
            v: f64,
        }
        let read = |s: &str| serde_json::from_str::<Field>(s).map(|f| f.v);
        assert!(read(r#"{"v":"NaN"}"#).unwrap().is_nan());
        assert_eq!(read(r#"{"v":"-Infinity"}"#).unwrap(), f64::NEG_INFINITY);
        assert_eq!(read(r#"{"v":0.1}"#).unwrap(), 0.1);
        assert!(read(r#"{"v":"nan"}"#).is_err());
    }
}
