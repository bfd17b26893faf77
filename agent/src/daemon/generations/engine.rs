//! The engine that runs one kind of generation: loads it from the journal, settles it
//! on schedule (activate, remove, prepare), records every change (journal, audit log,
//! log line) and reports each outcome to the metrics.

use std::sync::Arc;

use keyward_core::Error;
use keyward_core::audit::Event;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{BACKOFF, Entry, IDLE_WAKE, Journal, Kind, Section, Slot, now, until};
use crate::daemon::audit::Audit;
use crate::daemon::metrics::Metrics;

/// A change made by [`Engine::settle`]: its audit event and its log line.
pub(super) struct Change {
    pub(super) event: Event,
    line: &'static str,
}

/// One kind's generations and schedule, run by one task ([`Engine::run`]).
pub(super) struct Engine<K: Kind> {
    pub(super) kind: K,
    pub(super) journal: Journal,
    pub(super) fingerprint: Option<String>,
    /// The highest generation number made so far.
    pub(super) last: u64,
    pub(super) slots: Vec<Slot<K>>,
    /// The number of the generation issuing now.
    pub(super) active: Option<u64>,
    pub(super) failures: u32,
    pub(super) refresh_at: Option<OffsetDateTime>,
    pub(super) audit: Audit,
    pub(super) metrics: Metrics,
}

impl<K: Kind> Engine<K> {
    /// The recorded generations of `kind` still published, opened (or what
    /// [`Kind::migrate`] finds when the journal has none); migrated records are written
    /// to the journal at once and their old file removed.
    pub(super) async fn load(
        kind: K,
        journal: Journal,
        audit: Audit,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        let fingerprint = kind.key_fingerprint();
        let mut section = match journal.section::<K::Detail>(K::NAME)? {
            Some(s) => Some(s),
            None => kind.migrate(journal.state())?,
        };
        if !kind.persistent() {
            section = None;
        }
        if section
            .as_ref()
            .is_some_and(|s| s.key_fingerprint != fingerprint)
        {
            tracing::warn!(
                kind = K::NAME,
                "the recorded generations were made from another configured key; starting from the configured one"
            );
            section = None;
        }
        let section = section.unwrap_or_else(|| Section::empty(fingerprint.clone()));
        let now = now();
        let mut slots = Vec::new();
        for entry in section.generations {
            if kind.leaves_at(&entry).is_some_and(|t| t <= now) {
                continue;
            }
            match kind.open(&entry).await {
                Ok(open) => slots.push(Slot { entry, open }),
                Err(e) => {
                    tracing::warn!(kind = K::NAME, generation = entry.n, error = %keyward_core::chain_line(&e), "a recorded {} cannot be used (its key does not open); it is no longer served", K::WHAT)
                }
            }
        }
        slots.sort_by_key(|s| s.entry.n);
        // The oldest generation not retired is the one that was issuing when the
        // journal was written; the first settle reports what changed since.
        let active = slots
            .iter()
            .find(|s| s.entry.retired.is_none())
            .filter(|s| s.entry.activates <= now)
            .map(|s| s.entry.n);
        // What the kind refreshes is read once right away.
        let refresh_at = kind.refresh_every().map(|_| now);
        let engine = Engine {
            kind,
            journal,
            fingerprint,
            last: section.last,
            slots,
            active,
            failures: 0,
            refresh_at,
            audit,
            metrics,
        };
        if engine.kind.persistent() {
            // Written now, so a migrated record lives on in the journal alone.
            engine.write()?;
            if let Some(legacy) = K::LEGACY {
                engine.journal.state().remove_agent_record(legacy)?;
            }
        }
        Ok(engine)
    }

    /// Runs the schedule until every receiver is gone.
    pub(super) async fn run(mut self, tx: watch::Sender<Arc<K::Published>>) {
        loop {
            let wait = until(self.next_wake(now()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
            let now = now();
            let mut changes = Vec::new();
            let settled = self.settle(now, &mut changes).await;
            let mut changed = !changes.is_empty();
            self.commit(changes);
            self.outcome(settled);
            if self.refresh_at.is_some_and(|t| t <= now) {
                self.refresh_at = self.kind.refresh_every().map(|d| now + d);
                match self.kind.refresh().await {
                    Ok(c) => changed |= c,
                    Err(e) => {
                        tracing::warn!(kind = K::NAME, error = %keyward_core::chain_line(&e), "cannot refresh what the {} publishes; keeping what was published", K::WHAT)
                    }
                }
            }
            if changed {
                tx.send_replace(Arc::new(self.published()));
            }
        }
    }

    /// The next moment something is due: an activation, a removal, the next
    /// preparation (or its retry), a refresh.
    pub(super) fn next_wake(&self, now: OffsetDateTime) -> OffsetDateTime {
        let mut marks = vec![now + IDLE_WAKE];
        marks.extend(self.refresh_at);
        for s in &self.slots {
            if s.entry.retired.is_none() && s.entry.activates > now {
                marks.push(s.entry.activates);
            }
            if Some(s.entry.n) != self.active {
                marks.extend(self.kind.leaves_at(&s.entry));
            }
        }
        if let Some(active) = self.active_slot()
            && !self.has_pending(now)
        {
            marks.push(if self.failures > 0 {
                now + BACKOFF.delay(self.failures)
            } else {
                self.kind.next(&active.entry).prepare_at
            });
        }
        marks.into_iter().min().unwrap_or(now).max(now)
    }

    pub(super) fn active_slot(&self) -> Option<&Slot<K>> {
        self.slots.iter().find(|s| Some(s.entry.n) == self.active)
    }

    pub(super) fn has_pending(&self, now: OffsetDateTime) -> bool {
        self.slots
            .iter()
            .any(|s| s.entry.retired.is_none() && s.entry.activates > now)
    }

    /// Brings the generations up to date at `now`: the newest generation whose time has
    /// come issues (earlier ones retire), generations past their publication leave,
    /// and the next one is prepared when due. Changes made before a failure stay in
    /// `changes`.
    pub(super) async fn settle(
        &mut self,
        now: OffsetDateTime,
        changes: &mut Vec<Change>,
    ) -> Result<(), Error> {
        self.activate(now, changes);
        let kind = &self.kind;
        let active = self.active;
        let (kept, gone): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.slots).into_iter().partition(|s| {
                Some(s.entry.n) == active || kind.leaves_at(&s.entry).is_none_or(|t| t > now)
            });
        self.slots = kept;
        for s in &gone {
            changes.push(self.change("generation_removed", s, "no longer published"));
        }
        let due = match self.active_slot() {
            None => Some(now),
            Some(_) if self.has_pending(now) => None,
            Some(a) => {
                let next = self.kind.next(&a.entry);
                (next.prepare_at <= now).then_some(next.activates.max(now))
            }
        };
        if let Some(activates) = due {
            let n = self.last + 1;
            let (detail, open) = self.kind.prepare(n, activates, &self.slots).await?;
            self.last = n;
            let entry = Entry {
                n,
                activates,
                retired: None,
                detail,
            };
            self.slots.push(Slot { entry, open });
            let slot = self.slots.last().expect("just pushed");
            changes.push(self.change("generation_prepared", slot, "prepared; published from now"));
            self.activate(now, changes);
        }
        Ok(())
    }

    /// Makes the newest generation whose time has come the active one and retires the
    /// earlier ones; with none due and none active (a restart after a long stop), the
    /// prepared one starts now.
    pub(super) fn activate(&mut self, now: OffsetDateTime, changes: &mut Vec<Change>) {
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i].entry.retired.is_none() && self.slots[i].entry.activates <= now
            })
            .collect();
        let newest = match due.split_last() {
            Some((&newest, older)) => {
                for &i in older {
                    self.slots[i].entry.retired = Some(now);
                    changes.push(self.change(
                        "generation_retired",
                        &self.slots[i],
                        "retired; the next one took over",
                    ));
                }
                newest
            }
            None => match (0..self.slots.len()).find(|&i| self.slots[i].entry.retired.is_none()) {
                Some(i) => {
                    self.slots[i].entry.activates = now;
                    i
                }
                None => return,
            },
        };
        if self.active != Some(self.slots[newest].entry.n) {
            self.active = Some(self.slots[newest].entry.n);
            changes.push(self.change(
                "generation_activated",
                &self.slots[newest],
                "active: issuing from now",
            ));
        }
    }

    pub(super) fn change(&self, name: &str, slot: &Slot<K>, line: &'static str) -> Change {
        Change {
            event: self
                .kind
                .event(name, slot)
                .with("kind", K::NAME)
                .with("generation", slot.entry.n),
            line,
        }
    }

    /// Records `changes`: the journal first, then the audit log and the log.
    pub(super) fn commit(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.write() {
            tracing::error!(kind = K::NAME, error = %keyward_core::chain_line(&e), "cannot record the generations; a restart may not find the current one");
        }
        for c in changes {
            let n = c.event.fields.get("generation").cloned();
            tracing::info!(kind = K::NAME, generation = %n.unwrap_or_default(), "{} {}", K::WHAT, c.line);
            self.audit.record(c.event);
        }
    }

    /// Counts a settle's outcome in the metrics and readiness, then logs it: whoever
    /// reads the log line finds `/readyz` already saying the same.
    pub(super) fn outcome(&mut self, settled: Result<(), Error>) {
        let active = self.active.unwrap_or(0);
        match settled {
            Ok(()) => {
                self.metrics
                    .generation_status(K::NAME, K::GATES_READINESS, active, 0, Ok(()));
                if self.failures > 0 {
                    tracing::info!(
                        kind = K::NAME,
                        "the next {} was prepared after {} failed attempts",
                        K::WHAT,
                        self.failures
                    );
                }
                self.failures = 0;
            }
            Err(e) => {
                self.failures += 1;
                let why = keyward_core::chain_line(&e);
                let reason = format!("cannot prepare the next {}: {why}", K::WHAT);
                self.metrics.generation_status(
                    K::NAME,
                    K::GATES_READINESS,
                    active,
                    self.failures,
                    Err(reason),
                );
                tracing::error!(kind = K::NAME, attempt = self.failures, retry_in = ?BACKOFF.delay(self.failures), error = %why, "cannot prepare the next {}; the current one keeps serving", K::WHAT);
            }
        }
    }

    pub(super) fn write(&self) -> Result<(), Error> {
        if !self.kind.persistent() {
            return Ok(());
        }
        let section = Section {
            last: self.last,
            key_fingerprint: self.fingerprint.clone(),
            generations: self.slots.iter().map(|s| s.entry.clone()).collect(),
        };
        self.journal.store(K::NAME, &section)
    }

    pub(super) fn published(&self) -> K::Published {
        let active = self
            .slots
            .iter()
            .position(|s| Some(s.entry.n) == self.active)
            .expect("a generation is active once started");
        self.kind.publish(active, &self.slots)
    }
}
