//! Request signing shared by the adapter and the fake receiver.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `sha256=` + hex HMAC-SHA256(`secret`, `message`).
pub fn signature(secret: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The timestamp signature's message: `"{timestamp}.{body}"` (the Stripe convention), so
/// the time cannot be changed without the secret.
pub fn timestamped(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    message
}
