//! Turns the raw file into a [`Config`], checking every value; each error is one line
//! `file:line:column: what is wrong`.

use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_core::{Algorithm, Error};
use toml::Spanned;

use super::names::{check_spiffe_id, check_trust_domain, lookup_group};
use super::observe::{check_metrics_listen, thresholds};
use super::raw::{GroupValue, ModeValue, RawAgent, RawAlerts, RawAudit, RawConfig, RawWorkload};
use super::{
    AgentSettings, AuditSettings, Config, DEFAULT_RENEW_FRACTION, DEFAULT_TTL, LogFormat,
    WorkloadEntry,
};
use crate::duration::parse_duration;

mod acme;
mod attestation;
mod ca;
mod enroll;
mod grants;
mod jwt;
mod kek;
mod limits;
mod sds;

/// The longest socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Positions in one configuration text.
struct Src<'a> {
    name: &'a str,
    text: &'a str,
    base: &'a Path,
}

impl Src<'_> {
    /// `file:line:column` of a byte offset.
    fn at(&self, span: &Range<usize>) -> String {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{col}", self.name)
    }

    /// An `InvalidInput` error at `span`.
    fn err(&self, span: &Range<usize>, msg: impl std::fmt::Display) -> Error {
        Error::InvalidInput(format!("{}: {msg}", self.at(span)))
    }

    /// Wraps an error from a helper (URI, duration, algorithm) with the position.
    fn wrap(&self, span: &Range<usize>, e: Error) -> Error {
        self.err(span, e)
    }

    /// A path from the file, made absolute against the file's directory.
    fn path(&self, v: &Spanned<String>) -> Result<PathBuf, Error> {
        if v.get_ref().is_empty() {
            return Err(self.err(&v.span(), "empty path"));
        }
        Ok(self.base.join(v.get_ref()))
    }

    /// A key URI's text with a relative `file:` path made absolute against the file's
    /// directory, like every other path in the file.
    fn key_text(&self, v: &Spanned<String>) -> String {
        match v.get_ref().strip_prefix("file:") {
            Some(rest) if !rest.starts_with('/') && !rest.is_empty() => {
                format!("file:{}", self.base.join(rest).display())
            }
            _ => v.get_ref().clone(),
        }
    }

    fn duration(&self, v: &Spanned<String>) -> Result<std::time::Duration, Error> {
        parse_duration(v.get_ref()).map_err(|e| self.wrap(&v.span(), e))
    }
}

/// Parses and validates the whole configuration.
pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, Error> {
    let src = Src { name, text, base };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => src.err(&span, msg),
            None => Error::InvalidInput(format!("{name}: {msg}")),
        }
    })?;
    let agent = agent(&src, raw.agent.get_ref())?;
    let ca = ca::settings(&src, &raw.ca, raw.vault.as_ref())?;
    let mut workloads = Vec::with_capacity(raw.workload.len());
    for w in &raw.workload {
        workloads.push(Arc::new(workload(&src, w, &agent.trust_domain)?));
    }
    let audit = audit(&src, raw.audit.as_ref(), &agent.state_dir)?;
    let jwt = jwt::settings(&src, raw.jwt.as_ref())?;
    let sds = sds::settings(&src, raw.sds.as_ref())?;
    let enroll_listener = enroll::listener(&src, raw.acme.as_ref())?;
    let acme = acme::settings(&src, raw.acme.as_ref())?;
    let est = enroll::est(&src, raw.est.as_ref(), enroll_listener.as_ref())?;
    Ok(Config {
        source: name.to_string(),
        agent,
        ca,
        audit,
        jwt,
        sds,
        metrics_listen: raw
            .metrics
            .as_ref()
            .map(|m| metrics_listen(&src, &m.listen))
            .transpose()?,
        alerts: raw
            .alerts
            .as_ref()
            .map(|a| alerts(&src, a))
            .transpose()?
            .unwrap_or_default(),
        workloads,
        enroll_listener,
        acme,
        est,
        keks: kek::schedules(&src, &raw.kek)?,
    })
}

fn audit(src: &Src, a: Option<&RawAudit>, state_dir: &Path) -> Result<AuditSettings, Error> {
    use keyward_core::audit::{DEFAULT_KEEP, DEFAULT_MAX_BYTES, default_path};
    let Some(a) = a else {
        return Ok(AuditSettings {
            path: default_path(state_dir),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        });
    };
    let int = |v: &Option<Spanned<i64>>, min: i64, max: i64, default: i64| match v {
        None => Ok(default),
        Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(src.err(&v.span(), format!("must be from {min} to {max}"))),
    };
    let default_max = i64::try_from(DEFAULT_MAX_BYTES).unwrap_or(i64::MAX);
    Ok(AuditSettings {
        path: match &a.path {
            Some(p) => src.path(p)?,
            None => default_path(state_dir),
        },
        max_bytes: int(&a.max_bytes, 1024, i64::MAX, default_max)?.unsigned_abs(),
        keep: u32::try_from(int(&a.keep, 1, 1000, i64::from(DEFAULT_KEEP))?).unwrap_or(1),
    })
}

fn agent(src: &Src, a: &RawAgent) -> Result<AgentSettings, Error> {
    let socket = src.path(&a.socket)?;
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(src.err(
            &a.socket.span(),
            format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes, the limit for Unix sockets",
                socket.display()
            ),
        ));
    }
    let socket_mode = match &a.socket_mode {
        None => 0o666,
        Some(m) => mode(src, m)?,
    };
    let socket_group = a.socket_group.as_ref().map(|g| group(src, g)).transpose()?;
    let trust_domain = a.trust_domain.get_ref().clone();
    check_trust_domain(&trust_domain).map_err(|why| src.err(&a.trust_domain.span(), why))?;
    let log_format = match a
        .log_format
        .as_ref()
        .map(|f| (f.get_ref().as_str(), f.span()))
    {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, span)) => {
            return Err(src.err(
                &span,
                format!("unknown log_format '{other}' (expected \"text\" or \"json\")"),
            ));
        }
    };
    let renew_fraction = match &a.renew_fraction {
        None => DEFAULT_RENEW_FRACTION,
        Some(f) if (0.1..=0.9).contains(f.get_ref()) => *f.get_ref(),
        Some(f) => {
            return Err(src.err(
                &f.span(),
                format!("renew_fraction {} is outside 0.1 to 0.9", f.get_ref()),
            ));
        }
    };
    Ok(AgentSettings {
        socket,
        socket_mode,
        socket_group,
        state_dir: src.path(&a.state_dir)?,
        trust_domain,
        log_format,
        renew_fraction,
        limits: limits::caller_limits(src, a)?,
        max_hash_bytes: attestation::max_hash_bytes(src, a)?,
    })
}

fn mode(src: &Src, m: &Spanned<ModeValue>) -> Result<u32, Error> {
    let value = match m.get_ref() {
        ModeValue::Text(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
            src.err(
                &m.span(),
                format!("socket_mode '{s}' is not an octal mode such as \"0660\""),
            )
        })?,
        ModeValue::Number(n) => u32::try_from(*n).unwrap_or(u32::MAX),
    };
    if value > 0o777 {
        return Err(src.err(
            &m.span(),
            "socket_mode must be permission bits up to 0777, written \"0660\" or 0o660",
        ));
    }
    if value & 0o200 == 0 {
        return Err(src.err(
            &m.span(),
            "socket_mode must let the owner write (connecting needs write permission)",
        ));
    }
    Ok(value)
}

fn group(src: &Src, g: &Spanned<GroupValue>) -> Result<u32, Error> {
    match g.get_ref() {
        GroupValue::Id(n) => u32::try_from(*n)
            .map_err(|_| src.err(&g.span(), format!("socket_group {n} is not a gid"))),
        GroupValue::Name(name) => {
            if let Ok(n) = name.parse::<u32>() {
                return Ok(n);
            }
            lookup_group(name).map_err(|why| src.err(&g.span(), why))
        }
    }
}

fn workload(
    src: &Src,
    w: &Spanned<RawWorkload>,
    trust_domain: &str,
) -> Result<WorkloadEntry, Error> {
    let r = w.get_ref();
    let id = r.spiffe_id.get_ref();
    check_spiffe_id(id, trust_domain).map_err(|why| src.err(&r.spiffe_id.span(), why))?;
    let mut dns = Vec::new();
    for d in &r.dns {
        let name = d.get_ref();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
        if !ok {
            return Err(src.err(&d.span(), format!("'{name}' is not a DNS name")));
        }
        dns.push(name.clone());
    }
    let mut ips = Vec::new();
    for ip in &r.ip {
        ips.push(ip.get_ref().parse::<IpAddr>().map_err(|_| {
            src.err(
                &ip.span(),
                format!("'{}' is not an IP address", ip.get_ref()),
            )
        })?);
    }
    let ttl = r
        .ttl
        .as_ref()
        .map(|v| src.duration(v))
        .transpose()?
        .unwrap_or(DEFAULT_TTL);
    let algorithm = match &r.algorithm {
        None => Algorithm::EcdsaP256Sha256,
        Some(a) => {
            let alg: Algorithm = a.get_ref().parse().map_err(|e| src.wrap(&a.span(), e))?;
            if matches!(alg, Algorithm::RsaPssSha256(_)) {
                return Err(src.err(
                    &a.span(),
                    format!("{alg} workload keys are not supported (use rsa-2048)"),
                ));
            }
            alg
        }
    };
    Ok(WorkloadEntry {
        spiffe_id: id.clone(),
        dns,
        ips,
        ttl,
        algorithm,
        hint: r.hint.clone().unwrap_or_default(),
        selectors: attestation::selectors(src, &r.selectors)?,
        keys: grants::grants(src, &r.keys)?,
    })
}

/// `[metrics] listen`: an `IP:port` on loopback.
fn metrics_listen(src: &Src, v: &Spanned<String>) -> Result<std::net::SocketAddr, Error> {
    check_metrics_listen(v.get_ref()).map_err(|why| src.err(&v.span(), why))
}

/// `[alerts]`: WARNING and ERROR thresholds, whole days (defaults 30d and 7d).
fn alerts(src: &Src, a: &RawAlerts) -> Result<keyward_core::check::AlertThresholds, Error> {
    let warning = a.warning.as_ref().map(|v| src.duration(v)).transpose()?;
    let error = a.error.as_ref().map(|v| src.duration(v)).transpose()?;
    let span = a
        .warning
        .as_ref()
        .or(a.error.as_ref())
        .map_or(0..0, |v| v.span());
    thresholds(warning, error).map_err(|e| src.wrap(&span, e))
}
