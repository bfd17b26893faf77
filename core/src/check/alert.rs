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

impl AlertThresholds {
    /// Thresholds from durations (`[alerts]` in the agent config, `status --warning`):
    /// each must be whole days, at least one day, and ERROR may not exceed WARNING.
    pub fn from_durations(
        warning: std::time::Duration,
        error: std::time::Duration,
    ) -> Result<Self, crate::Error> {
        let days = |what: &str, d: std::time::Duration| -> Result<i64, crate::Error> {
            let secs = d.as_secs();
            if secs == 0 || !secs.is_multiple_of(86_400) || d.subsec_nanos() != 0 {
                return Err(crate::Error::InvalidInput(format!(
                    "the {what} threshold must be a whole number of days (e.g. 30d, 2w)"
                )));
            }
            Ok(i64::try_from(secs / 86_400).unwrap_or(i64::MAX))
        };
        let t = AlertThresholds {
            warning_days: days("warning", warning)?,
            error_days: days("error", error)?,
        };
        if t.error_days > t.warning_days {
            return Err(crate::Error::InvalidInput(format!(
                "the error threshold ({}d) must not be longer than the warning threshold ({}d)",
                t.error_days, t.warning_days
            )));
        }
        Ok(t)
    }
}

/// The alert level of a certificate its holder renews automatically (a workload SVID):
/// fixed day thresholds would flag every short-lived SVID, so the level follows its
/// renewal instead. OK until the renewal point (`renew_fraction` of the lifetime, with
/// a grace of 5% of the lifetime) has passed, then WARNING (renewal overdue), ERROR in
/// the last 10% of the lifetime, CRITICAL once expired.
pub fn renewal_alert_level(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    renew_fraction: f64,
) -> AlertLevel {
    if now >= not_after {
        return AlertLevel::Critical;
    }
    let lifetime = (not_after - not_before).as_seconds_f64().max(1.0);
    let left = (not_after - now).as_seconds_f64() / lifetime;
    if left <= 0.1 {
        AlertLevel::Error
    } else if left < 1.0 - renew_fraction - 0.05 {
        AlertLevel::Warning
    } else {
        AlertLevel::Ok
    }
}
