//! Unique ids for responses and tool calls, and the clock of `created` fields.
//!
//! OpenAI's ids are a prefix and a random suffix (`chatcmpl-...`, `cmpl-...`,
//! `call_...`); the generator is the engine's ([`formwork_engine::id`]), which also
//! names the tool calls it reads from a reply.
//!
//! ```
//! use formwork_server::id::random_id;
//!
//! let a = random_id("chatcmpl-");
//! assert!(a.starts_with("chatcmpl-") && a.len() == 9 + 24);
//! assert_ne!(a, random_id("chatcmpl-"));
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

pub use formwork_engine::id::{SUFFIX_LEN, random_id};

/// The current time in seconds since the Unix epoch, as `created` fields carry it.
pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_after_2024() {
        assert!(unix_time() > 1_700_000_000);
    }
}
