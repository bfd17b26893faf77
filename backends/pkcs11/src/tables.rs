//! Human-readable tables of slots and key objects (`keyward hsm slots`, `hsm keys`).

use std::fmt;

use crate::inspect::{KeyObjectInfo, SlotInfo};

/// A list of slots shown as a table, one row per slot, mechanisms below their slot.
pub struct SlotTable<'a>(pub &'a [SlotInfo]);

/// A list of key objects shown as a table, one row per object.
pub struct KeyTable<'a>(pub &'a [KeyObjectInfo]);

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// Writes rows as left-aligned columns separated by two spaces.
fn write_table(f: &mut fmt::Formatter<'_>, rows: &[Vec<String>]) -> fmt::Result {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

impl fmt::Display for SlotTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = ["SLOT", "TOKEN", "SERIAL", "MODEL", "MANUFACTURER", "FLAGS"];
        let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        rows.extend(self.0.iter().map(SlotInfo::row));
        write_table(f, &rows)?;
        for s in self.0 {
            if let Some(m) = &s.mechanisms {
                writeln!(f, "\nslot {} mechanisms ({}):", s.slot_id, m.len())?;
                for chunk in m.chunks(4) {
                    writeln!(f, "  {}", chunk.join(", "))?;
                }
            }
        }
        Ok(())
    }
}

impl SlotInfo {
    fn row(&self) -> Vec<String> {
        let label = match (&self.label, self.token_present) {
            (Some(l), _) => l.clone(),
            (None, true) => "(uninitialized)".into(),
            (None, false) => "(no token)".into(),
        };
        vec![
            self.slot_id.to_string(),
            label,
            opt(&self.serial).into(),
            opt(&self.model).into(),
            opt(&self.manufacturer).into(),
            self.flags.join(","),
        ]
    }
}

impl fmt::Display for SlotInfo {
    /// One line: slot, token label, serial, model, manufacturer, flags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.row();
        write!(
            f,
            "slot {}: token {} serial {} model {} manufacturer {} flags {}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        )
    }
}

impl KeyObjectInfo {
    fn row(&self) -> Vec<String> {
        vec![
            self.label.clone(),
            self.id.clone(),
            self.class.clone(),
            self.key_type.clone(),
            opt(&self.size).into(),
            yes_no(self.sensitive).into(),
            yes_no(self.extractable).into(),
        ]
    }
}

impl fmt::Display for KeyObjectInfo {
    /// One line: label, id, class, type, size, sensitive and extractable flags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.row();
        write!(
            f,
            "{} (id {}): {} {} {}, sensitive {}, extractable {}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6]
        )
    }
}

impl fmt::Display for KeyTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "LABEL",
            "ID",
            "CLASS",
            "TYPE",
            "SIZE",
            "SENSITIVE",
            "EXTRACTABLE",
        ];
        let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        rows.extend(self.0.iter().map(KeyObjectInfo::row));
        write_table(f, &rows)
    }
}
