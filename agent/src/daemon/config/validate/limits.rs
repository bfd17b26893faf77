//! `[agent] idle_timeout`, `max_connections`, `max_connections_per_uid`,
//! `request_timeout` and `rate_limit`: the bounds on what one caller of the socket may
//! hold open or ask for.

use keyward_core::Error;

use super::super::CallerLimits;
use super::super::raw::{RawAgent, RawRateLimit};
use super::Src;

/// The most connections the setting accepts (each costs a file descriptor).
const MAX_CONNECTIONS_LIMIT: i64 = 1_000_000;

/// The caller limits of `[agent]`; absent keys keep the defaults.
pub(super) fn caller_limits(src: &Src, a: &RawAgent) -> Result<CallerLimits, Error> {
    let mut limits = CallerLimits::default();
    if let Some(t) = &a.idle_timeout {
        // parse_duration refuses zero, so a connection always gets some time.
        limits.idle_timeout = src.duration(t)?;
    }
    if let Some(m) = &a.max_connections {
        let n = *m.get_ref();
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&n) {
            return Err(src.err(
                &m.span(),
                format!("max_connections {n} is outside 1 to {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
    }
    limits.max_connections_per_uid = (limits.max_connections / 4).max(1);
    if let Some(m) = &a.max_connections_per_uid {
        let n = *m.get_ref();
        let most = limits.max_connections;
        limits.max_connections_per_uid = usize::try_from(n)
            .ok()
            .filter(|n| (1..=most).contains(n))
            .ok_or_else(|| {
                src.err(
                    &m.span(),
                    format!("max_connections_per_uid {n} is outside 1 to max_connections ({most})"),
                )
            })?;
    }
    if let Some(t) = &a.request_timeout {
        // parse_duration refuses zero, so a request always gets some time to arrive.
        limits.request_timeout = src.duration(t)?;
    }
    if let Some(r) = &a.rate_limit {
        (limits.rate_per_second, limits.rate_burst) = rate_limit(
            src,
            r.get_ref(),
            (limits.rate_per_second, limits.rate_burst),
        )?;
    }
    Ok(limits)
}

/// A `rate_limit = { per_second, burst }` table (`[agent]`'s, `[acme]`'s): `per_second`
/// in (0, 1e6], `burst` in 1 to 1e6; an absent key keeps its value in `defaults`.
pub(super) fn rate_limit(
    src: &Src,
    r: &RawRateLimit,
    defaults: (f64, u32),
) -> Result<(f64, u32), Error> {
    let (mut per_second, mut burst) = defaults;
    if let Some(p) = &r.per_second {
        let v = *p.get_ref();
        if !(v.is_finite() && v > 0.0 && v <= 1e6) {
            return Err(src.err(
                &p.span(),
                format!("rate_limit per_second {v} is outside (0, 1000000]"),
            ));
        }
        per_second = v;
    }
    if let Some(b) = &r.burst {
        let v = *b.get_ref();
        burst = u32::try_from(v)
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                src.err(
                    &b.span(),
                    format!("rate_limit burst {v} is outside 1 to 1000000"),
                )
            })?;
    }
    Ok((per_second, burst))
}
