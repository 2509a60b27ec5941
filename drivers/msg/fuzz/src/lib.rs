//! The one check every fuzz target runs, for its own message type.

use coxswain_msg::Message;

/// Decodes arbitrary bytes as `M`. Errors are fine; panics are the bug being hunted. When the bytes do
/// decode, they are at most `MAX_RECEIVE_LEN` long, and the message must re-encode, decode again, and
/// re-encode to the same bytes.
///
/// Compared as bytes rather than with `==`: NaN is a valid value on the wire and NaN != NaN, while its bits
/// must come through unchanged. The first re-encoding may be shorter than the input (decoders accept
/// non-shortest varints, encoders write the shortest), never longer.
pub fn decode_round_trip<M: Message>(data: &[u8]) {
    let Ok(first) = M::decode(data) else { return };
    assert!(data.len() <= M::MAX_RECEIVE_LEN, "{} bytes decoded, above MAX_RECEIVE_LEN", data.len());
    let mut buf = vec![0u8; M::MAX_ENCODED_LEN];
    let once = first.encode(&mut buf).expect("a decoded message re-encodes").to_vec();
    assert!(once.len() <= data.len(), "re-encoding grew from {} to {} bytes", data.len(), once.len());
    let second = M::decode(&once).expect("a re-encoded message decodes");
    let twice = second.encode(&mut buf).expect("re-encodes again");
    assert_eq!(once, twice, "decode(encode(m)) differs from m");
}
