//! The generic webhook's signature: `X-Cutover-Signature: sha256=<hex>`, an HMAC-SHA256
//! over `<timestamp>.<body>` with the subscription's secret, where `<timestamp>` is the
//! `X-Cutover-Timestamp` header (Unix seconds). Signing the timestamp with the body lets
//! a receiver refuse a replayed request: it checks the signature, then that the timestamp
//! is recent (say, within five minutes). `docs/notifications.md` shows a receiver's check.

use ring::hmac;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-cutover-signature";

/// The header carrying the signed timestamp, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-cutover-timestamp";

/// `sha256=<hex>` of `<timestamp>.<body>` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("sha256={}", hex(context.sign().as_ref()))
}

/// Whether `signature` (the header's value) is `body`'s at `timestamp` under `secret`,
/// compared in constant time. What a receiver written in Rust would call.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Some(digest) = unhex(hex_digest) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    hmac::verify(&key, &signed, &digest).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // The HMAC-SHA256 of "1700000000.{}" under the key "Jefe",
        // computed independently: `printf '1700000000.{}' | openssl dgst -sha256 -hmac Jefe`.
        let signature = sign(b"Jefe", 1_700_000_000, b"{}");
        assert_eq!(
            signature,
            "sha256=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }

    #[test]
    fn verify_refuses_another_body_timestamp_secret_or_form() {
        let signature = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(verify(b"s3cret", 1_700_000_000, b"{\"a\":1}", &signature));
        assert!(!verify(b"s3cret", 1_700_000_000, b"{\"a\":2}", &signature));
        assert!(!verify(b"s3cret", 1_700_000_001, b"{\"a\":1}", &signature));
        assert!(!verify(b"other", 1_700_000_000, b"{\"a\":1}", &signature));
        assert!(!verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &signature[7..]
        ));
        assert!(!verify(b"s3cret", 1_700_000_000, b"{\"a\":1}", "sha256=zz"));
    }
}
