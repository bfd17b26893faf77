//! Expiry alert levels for `status`: OK, WARNING, ERROR, CRITICAL.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How urgently a certificate needs renewing. Ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertLevel {
    /// More than the warning threshold left.
    Ok,
    /// The warning threshold (30 days by default) or less left.
    Warning,
    /// The error threshold (7 days by default) or less left.
    Error,
    /// Expired.
    Critical,
}

impl AlertLevel {
    /// The level as printed and serialized: `OK`, `WARNING`, `ERROR`, `CRITICAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Ok => "OK",
            AlertLevel::Warning => "WARNING",
            AlertLevel::Error => "ERROR",
            AlertLevel::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for AlertLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Days-left thresholds at which a certificate becomes WARNING and ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertThresholds {
    /// WARNING when this many whole days or fewer are left (default 30).
    pub warning_days: i64,
    /// ERROR when this many whole days or fewer are left (default 7).
    pub error_days: i64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            warning_days: 30,
            error_days: 7,
        }
    }
}

/// Whole days from `now` until `not_after`, rounded down; negative once expired.
/// This is the "days left" figure `status` prints, and the one the thresholds compare.
pub fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    let secs = (not_after - now).whole_seconds();
    secs.div_euclid(86_400)
}

/// The alert level of a certificate that expires at `not_after`, seen at `now`:
/// CRITICAL once `now` is at or past `not_after`, otherwise ERROR or WARNING when the
/// whole days left are at or under the thresholds, else OK.
pub fn alert_level(
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    t: &AlertThresholds,
) -> AlertLevel {
    if now >= not_after {
        return AlertLevel::Critical;
    }
    let days = days_left(not_after, now);
    if days <= t.error_days {
        AlertLevel::Error
    } else if days <= t.warning_days {
        AlertLevel::Warning
    } else {
        AlertLevel::Ok
    }
}
