//! A strict parser of the Prometheus text exposition format 0.0.4: every line is a
//! `# HELP`, a `# TYPE` or a sample; names and label names follow the grammar, label
//! values are quoted with only the allowed escapes, each family is declared once
//! before its samples, no series repeats, and histograms are cumulative and end at
//! `+Inf` with `_count` equal to that bucket.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family.
#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// A parsed exposition, by family name.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The family `name`, which must exist.
    pub fn family(&self, name: &str) -> &Family {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no metric family {name}; have {:?}", self.families.keys()))
    }

    /// The value of the sample `name` whose labels include all of `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(first_ok)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value '{s}'")),
    }
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = &s[1..];
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !valid_name(name, false) {
            return Err(format!("bad label name '{name}'"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("raw newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label '{name}' repeated"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample name belongs to, given the declared families.
fn family_of<'a>(name: &'a str, declared: &BTreeMap<String, Family>) -> Option<&'a str> {
    if declared.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && declared.get(base).is_some_and(|f| f.kind == "histogram")
        {
            return Some(base);
        }
    }
    None
}

/// Parses and checks a whole exposition.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (kw, rest) = rest
                .split_once(' ')
                .ok_or_else(|| at("bad comment".into()))?;
            let (name, arg) = rest
                .split_once(' ')
                .ok_or_else(|| at("missing text".into()))?;
            if !valid_name(name, true) {
                return Err(at(format!("bad metric name '{name}'")));
            }
            let f = exp.families.entry(name.to_string()).or_default();
            match kw {
                "HELP" if f.help.is_empty() => f.help = arg.to_string(),
                "TYPE" if f.kind.is_empty() && f.samples.is_empty() => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(at(format!("unknown type '{arg}'")));
                    }
                    f.kind = arg.to_string();
                }
                _ => return Err(at("HELP/TYPE repeated or late".into())),
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(at(format!("bad metric name '{name}'")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut parts = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(parts.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp '{ts}'")))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let family = family_of(name, &exp.families)
            .ok_or_else(|| at(format!("sample of undeclared family '{name}'")))?
            .to_string();
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series repeated".into()));
        }
        let f = exp.families.get_mut(&family).expect("declared");
        if f.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative counter".into()));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, f) in &exp.families {
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    Ok(exp)
}

/// Buckets cumulative per label set, `+Inf` present and equal to `_count`.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let key = |s: &Sample| {
        let mut l = s.labels.clone();
        l.remove("le");
        format!("{l:?}")
    };
    for s in f.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let le = parse_value(
            s.labels
                .get("le")
                .ok_or(format!("{name}: bucket without le"))?,
        )?;
        groups.entry(key(s)).or_default().push((le, s.value));
    }
    for (labels, buckets) in &groups {
        if buckets
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
        {
            return Err(format!(
                "{name}{labels}: buckets not increasing and cumulative"
            ));
        }
        let last = buckets.last().expect("one bucket");
        if last.0 != f64::INFINITY {
            return Err(format!("{name}{labels}: no +Inf bucket"));
        }
        let count = f
            .samples
            .iter()
            .find(|s| s.name.ends_with("_count") && key(s) == *labels)
            .ok_or(format!("{name}{labels}: no _count"))?;
        if count.value != last.1 {
            return Err(format!(
                "{name}{labels}: _count differs from the +Inf bucket"
            ));
        }
        if !f
            .samples
            .iter()
            .any(|s| s.name.ends_with("_sum") && key(s) == *labels)
        {
            return Err(format!("{name}{labels}: no _sum"));
        }
    }
    Ok(())
}
