//! The Jupyter wire format: message headers, HMAC-SHA256 signing, and framing to and from ZeroMQ multipart messages.
//!
//! Frames: `[identities..] <IDS|MSG> signature header parent_header metadata content [buffers..]`, where the
//! signature is the hex HMAC of the four JSON frames. Incoming JSON parts stay as [`Bytes`] (no copies) until a
//! caller decodes the content it cares about.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeromq::ZmqMessage;

use crate::error::{Channel, Error};

/// The frame separating routing identities from the message.
pub(crate) const DELIMITER: &[u8] = b"<IDS|MSG>";
/// Protocol version we speak.
const PROTOCOL_VERSION: &str = "5.3";
/// Empty JSON object, for metadata and absent parent headers.
const EMPTY_OBJECT: &[u8] = b"{}";

/// A message header (`header` and `parent_header` frames).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Header {
    /// Unique id; replies and outputs carry it as their parent's `msg_id`.
    #[serde(default)]
    pub(crate) msg_id: String,
    /// Client session id.
    #[serde(default)]
    pub(crate) session: String,
    /// User name, informational.
    #[serde(default)]
    pub(crate) username: String,
    /// ISO 8601 timestamp.
    #[serde(default)]
    pub(crate) date: String,
    /// e.g. `execute_request`, `stream`.
    #[serde(default)]
    pub(crate) msg_type: String,
    /// Protocol version.
    #[serde(default)]
    pub(crate) version: String,
}

impl Header {
    /// A fresh header with a random `msg_id`, stamped now.
    pub(crate) fn new(msg_type: &str, session: &str) -> Self {
        Header {
            msg_id: uuid::Uuid::new_v4().simple().to_string(),
            session: session.to_owned(),
            username: "gateway".to_owned(),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            msg_type: msg_type.to_owned(),
            version: PROTOCOL_VERSION.to_owned(),
        }
    }
}

/// Only the part of a parent header we route on.
#[derive(Deserialize)]
struct ParentRef {
    #[serde(default)]
    msg_id: Option<String>,
}

/// A received, verified message. JSON parts other than the headers are left undecoded.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// Routing identities (ROUTER peers) or the iopub topic. Only the fake kernel routes replies.
    #[cfg_attr(not(feature = "fake-kernel"), allow(dead_code))]
    pub(crate) identities: Vec<Bytes>,
    /// The decoded header.
    pub(crate) header: Header,
    /// The header as received, reusable verbatim as the parent of a reply (by the fake kernel).
    #[cfg_attr(not(feature = "fake-kernel"), allow(dead_code))]
    pub(crate) header_bytes: Bytes,
    /// `parent_header.msg_id`, if there is a parent.
    pub(crate) parent_msg_id: Option<String>,
    /// Raw `content` JSON.
    pub(crate) content: Bytes,
}

impl Incoming {
    /// True if this message answers or reports on the request `msg_id`.
    pub(crate) fn is_child_of(&self, msg_id: &str) -> bool {
        self.parent_msg_id.as_deref() == Some(msg_id)
    }

    /// Decodes the content as `T`, naming `what` on failure.
    pub(crate) fn content<'a, T: Deserialize<'a>>(&'a self, what: &'static str) -> Result<T, Error> {
        serde_json::from_slice(&self.content).map_err(|source| Error::Decode { what, source })
    }
}

/// Signs and verifies with one keyed HMAC, cloned per message instead of re-keyed.
#[derive(Clone)]
pub(crate) struct Signer {
    /// `None` for an empty key: Jupyter then sends empty signatures and checks nothing.
    mac: Option<Hmac<Sha256>>,
}

impl Signer {
    /// A signer for `key` (its UTF-8 bytes are the HMAC key).
    pub(crate) fn new(key: &str) -> Self {
        let mac = (!key.is_empty())
            .then(|| Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length"));
        Signer { mac }
    }

    fn mac_of(&self, parts: [&[u8]; 4]) -> Option<Hmac<Sha256>> {
        let mut mac = self.mac.clone()?;
        for part in parts {
            mac.update(part);
        }
        Some(mac)
    }

    /// Hex signature of the four JSON frames (empty without a key).
    fn sign(&self, parts: [&[u8]; 4]) -> Bytes {
        match self.mac_of(parts) {
            Some(mac) => Bytes::from(hex::encode(mac.finalize().into_bytes())),
            None => Bytes::new(),
        }
    }

    /// Constant-time check of a hex signature.
    fn verify(&self, signature_hex: &[u8], parts: [&[u8]; 4]) -> bool {
        let Some(mac) = self.mac_of(parts) else {
            return true;
        };
        let mut signature = [0u8; 32];
        hex::decode_to_slice(signature_hex, &mut signature).is_ok() && mac.verify_slice(&signature).is_ok()
    }

    /// Frames and signs a message. `parent` is the raw parent header (`b"{}"` for none).
    pub(crate) fn encode<C: Serialize>(
        &self,
        identities: &[Bytes],
        header: &Header,
        parent: Bytes,
        content: &C,
    ) -> Result<ZmqMessage, Error> {
        let header = serde_json::to_vec(header).map_err(|source| Error::Decode { what: "header", source })?;
        let content = serde_json::to_vec(content).map_err(|source| Error::Decode { what: "content", source })?;
        let metadata = Bytes::from_static(EMPTY_OBJECT);
        let signature = self.sign([&header, &parent, &metadata, &content]);
        let mut frames = Vec::with_capacity(identities.len() + 6);
        frames.extend(identities.iter().cloned());
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(signature);
        frames.push(Bytes::from(header));
        frames.push(parent);
        frames.push(metadata);
        frames.push(Bytes::from(content));
        Ok(ZmqMessage::try_from(frames).expect("frames are not empty"))
    }

    /// Splits, verifies and decodes the headers of a received message.
    pub(crate) fn decode(&self, message: ZmqMessage, channel: Channel) -> Result<Incoming, Error> {
        let mut frames = message.into_vec();
        let delimiter = frames
            .iter()
            .position(|frame| frame.as_ref() == DELIMITER)
            .ok_or(Error::Framing { channel, problem: "no <IDS|MSG> delimiter" })?;
        if frames.len() < delimiter + 6 {
            return Err(Error::Framing { channel, problem: "fewer than 5 frames after the delimiter" });
        }
        let mut rest = frames.split_off(delimiter + 1);
        frames.truncate(delimiter);
        // rest: signature header parent metadata content buffers..
        rest.truncate(5);
        let [signature, header_bytes, parent, metadata, content]: [Bytes; 5] =
            rest.try_into().expect("exactly five frames");
        if !self.verify(&signature, [&header_bytes, &parent, &metadata, &content]) {
            return Err(Error::Signature { channel });
        }
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|source| Error::Decode { what: "header", source })?;
        let parent: ParentRef =
            serde_json::from_slice(&parent).map_err(|source| Error::Decode { what: "parent_header", source })?;
        Ok(Incoming {
            identities: frames,
            header,
            header_bytes,
            parent_msg_id: parent.msg_id.filter(|id| !id.is_empty()),
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signed(identities: &[Bytes]) -> (Signer, Header, ZmqMessage) {
        let signer = Signer::new("secret");
        let header = Header::new("execute_request", "s1");
        let parent = Bytes::from_static(br#"{"msg_id":"p1","msg_type":"x"}"#);
        let message = signer.encode(identities, &header, parent, &json!({"code": "1+1"})).unwrap();
        (signer, header, message)
    }

    /// Pins that what we sign and frame decodes back, identities and parent id included.
    #[test]
    fn sign_and_frame_round_trip() {
        let ids = [Bytes::from_static(b"peer")];
        let (signer, header, message) = signed(&ids);
        assert_eq!(message.len(), 7);
        let incoming = signer.decode(message, Channel::Shell).unwrap();
        assert_eq!(incoming.identities, ids);
        assert_eq!(incoming.header, header);
        assert!(incoming.is_child_of("p1"));
        let content: serde_json::Value = incoming.content("content").unwrap();
        assert_eq!(content["code"], "1+1");
    }

    /// Pins the signature itself against a known HMAC-SHA256 value (interoperability with jupyter_client).
    #[test]
    fn signature_matches_reference() {
        let signer = Signer::new("key");
        let sig = signer.sign([b"The quick brown fox ", b"jumps over ", b"the lazy dog", b""]);
        assert_eq!(&sig[..], b"f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }

    /// Pins rejection of messages signed with another key or tampered with.
    #[test]
    fn bad_signatures_are_rejected() {
        let (_, _, message) = signed(&[]);
        let other = Signer::new("other");
        assert!(matches!(other.decode(message.clone(), Channel::IoPub), Err(Error::Signature { .. })));

        let mut frames = message.into_vec();
        frames[4] = Bytes::from_static(br#"{"msg_id":"forged"}"#);
        let tampered = ZmqMessage::try_from(frames).unwrap();
        let signer = Signer::new("secret");
        assert!(matches!(signer.decode(tampered, Channel::IoPub), Err(Error::Signature { .. })));
    }

    /// Pins that an empty key means unsigned messages, as in jupyter_client.
    #[test]
    fn empty_key_sends_empty_signature() {
        let signer = Signer::new("");
        let message = signer.encode(&[], &Header::new("a", "s"), Bytes::from_static(b"{}"), &json!({})).unwrap();
        assert!(message.get(1).unwrap().is_empty());
        let incoming = signer.decode(message, Channel::Shell).unwrap();
        assert_eq!(incoming.parent_msg_id, None);
    }

    /// Pins framing errors: no delimiter, too few frames.
    #[test]
    fn malformed_frames_are_reported() {
        let signer = Signer::new("k");
        let no_delim = ZmqMessage::from("hello");
        assert!(matches!(signer.decode(no_delim, Channel::Shell), Err(Error::Framing { .. })));
        let short = ZmqMessage::try_from(vec![Bytes::from_static(DELIMITER), Bytes::new()]).unwrap();
        assert!(matches!(signer.decode(short, Channel::Shell), Err(Error::Framing { .. })));
    }
}
