//! The one place that reads the time; everything else is handed `now`.

/// The current time.
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
