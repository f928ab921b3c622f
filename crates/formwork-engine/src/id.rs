//! Unique ids with OpenAI's shape: a prefix and a random suffix (`call_...`,
//! `chatcmpl-...`).
//!
//! Ids are unique within the process (a counter goes into every one) and unpredictable
//! across processes (the counter is hashed with the process's random `RandomState` keys),
//! without a random-number dependency.
//!
//! ```
//! use formwork_engine::id::random_id;
//!
//! let a = random_id("call_");
//! assert!(a.starts_with("call_") && a.len() == 5 + 24);
//! assert_ne!(a, random_id("call_"));
//! ```

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many characters follow the prefix in a [`random_id`].
pub const SUFFIX_LEN: usize = 24;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `prefix` followed by [`SUFFIX_LEN`] random alphanumeric characters, unique in this process.
pub fn random_id(prefix: &str) -> String {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(prefix.len() + SUFFIX_LEN);
    id.push_str(prefix);
    // 24 base-62 digits need 143 bits: three 64-bit hashes of (counter, round), 8 digits each.
    for round in 0..3u64 {
        let mut h = keys.build_hasher();
        h.write_u64(n);
        h.write_u64(round);
        let mut x = h.finish();
        for _ in 0..8 {
            id.push(char::from(ALPHABET[(x % 62) as usize]));
            x /= 62;
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_alphanumeric() {
        let ids: HashSet<String> = (0..10_000).map(|_| random_id("chatcmpl-")).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let suffix = id.strip_prefix("chatcmpl-").unwrap();
            assert_eq!(suffix.len(), SUFFIX_LEN);
            assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
}
