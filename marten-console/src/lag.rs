//! The sampled lag history, filled by a background task the console spawns ([`Sampler`])
//! and read by the projections page for each slot's rate and the lag chart over the last
//! hour. Bounded in samples and in slots, whatever the number of slots (with conjoined
//! events, one per projection and tenant: thousands): every slot of the last few samples
//! (for the rates: [`RATE_SAMPLES`] at most, over [`RATE_WINDOW`]), and for the chart,
//! over the whole history, the [`CHARTED`] slots that lag most at each sample. The task
//! holds only a weak reference to the history and stops when the console (the last
//! owner of the [`Sampler`]) is dropped: it is aborted then.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use marten_pg::DocumentStore;
use tracing::debug;

use crate::slots::{read_slots, SlotRow};
use crate::tables::Tables;

/// One slot's state at a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSample {
    /// The slot's name (`name`, `name#2/3`, `name@tenant`).
    pub name: String,
    /// Its position (global sequence).
    pub position: i64,
    /// Events behind the head.
    pub lag: i64,
}

/// Every slot at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// The slots.
    pub slots: Vec<SlotSample>,
}

/// A bounded history of samples, oldest first.
#[derive(Debug)]
pub struct LagHistory {
    inner: Mutex<Samples>,
    capacity: usize,
}

/// What a [`LagHistory`] keeps.
#[derive(Debug, Default)]
struct Samples {
    /// The last samples whole (every slot), for the rates: at most [`RATE_SAMPLES`], none
    /// older than [`RATE_WINDOW`] before the newest.
    recent: VecDeque<Sample>,
    /// Every sample, oldest first, at most the capacity, each with its [`CHARTED`]
    /// most lagging slots only.
    charted: VecDeque<Sample>,
    /// How many slots the newest sample had (charted or not).
    slots: usize,
}

/// The window over which a rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The most whole samples kept for the rates (sampled faster than one a second, the
/// rate is measured over fewer than [`RATE_WINDOW`]).
pub const RATE_SAMPLES: usize = 16;

/// The most slots of each sample kept for the chart (and drawn): those that lag most.
pub const CHARTED: usize = 10;

impl LagHistory {
    /// A history keeping at most `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        LagHistory {
            inner: Mutex::new(Samples {
                recent: VecDeque::with_capacity(RATE_SAMPLES + 1),
                charted: VecDeque::with_capacity(capacity.min(4096)),
                slots: 0,
            }),
            capacity: capacity.max(2),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        // A panic while holding the lock left whole samples behind: still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a sample: whole among the recent ones (the oldest dropped past
    /// [`RATE_SAMPLES`] or [`RATE_WINDOW`]), and its [`CHARTED`] most lagging slots (most
    /// lag first, then by name) in the history (the oldest dropped past the capacity).
    pub fn push(&self, sample: Sample) {
        let mut charted = sample.slots.clone();
        charted.sort_by(|a, b| b.lag.cmp(&a.lag).then_with(|| a.name.cmp(&b.name)));
        charted.truncate(CHARTED);
        let mut s = self.lock();
        s.slots = sample.slots.len();
        while s.charted.len() >= self.capacity {
            s.charted.pop_front();
        }
        s.charted.push_back(Sample {
            at: sample.at,
            slots: charted,
        });
        let at = sample.at;
        s.recent.push_back(sample);
        while s.recent.len() > RATE_SAMPLES
            || s.recent
                .front()
                .is_some_and(|f| at.saturating_duration_since(f.at) > RATE_WINDOW)
        {
            s.recent.pop_front();
        }
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.lock().charted.len()
    }

    /// How many slots the newest sample had, charted or not (0 before any).
    pub fn slot_count(&self) -> usize {
        self.lock().slots
    }

    /// Whether no sample was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events per second `slot` advanced over about the last ten seconds (the recent
    /// samples kept: see [`RATE_SAMPLES`]; `None`: fewer than two samples of it).
    pub fn rate(&self, slot: &str) -> Option<f64> {
        self.rates().remove(slot)
    }

    /// [`LagHistory::rate`] of every slot, in one pass over the window.
    pub fn rates(&self) -> HashMap<String, f64> {
        let guard = self.lock();
        let s = &guard.recent;
        let mut out = HashMap::new();
        let Some(last) = s.back() else {
            return out;
        };
        // The oldest sample of the window, and each slot's first position in it.
        let mut first: HashMap<&str, (Instant, i64)> = HashMap::new();
        for sample in s.iter().rev() {
            if last.at.duration_since(sample.at) > RATE_WINDOW {
                break;
            }
            for slot in &sample.slots {
                first.insert(slot.name.as_str(), (sample.at, slot.position));
            }
        }
        for slot in &last.slots {
            let Some((at, position)) = first.get(slot.name.as_str()) else {
                continue;
            };
            let dt = last.at.duration_since(*at).as_secs_f64();
            if dt > 0.0 {
                #[allow(clippy::cast_precision_loss)]
                let rate = (slot.position - position).max(0) as f64 / dt;
                out.insert(slot.name.clone(), rate);
            }
        }
        out
    }

    /// The lag over the last `span` of the slots that lag most now (those charted at the
    /// newest sample, at most [`CHARTED`], most lag first): `(slot, [(seconds before
    /// now, lag)])`, oldest point first (a slot's points are those of the samples it
    /// was charted in).
    pub fn series(&self, span: Duration) -> Vec<(String, Vec<(f64, i64)>)> {
        let now = Instant::now();
        let guard = self.lock();
        let Some(newest) = guard.charted.back() else {
            return Vec::new();
        };
        let mut out: Vec<(String, Vec<(f64, i64)>)> = newest
            .slots
            .iter()
            .map(|slot| (slot.name.clone(), Vec::new()))
            .collect();
        let index: HashMap<&str, usize> = newest
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| (slot.name.as_str(), i))
            .collect();
        for sample in &guard.charted {
            let ago = now.saturating_duration_since(sample.at);
            if ago > span {
                continue;
            }
            for slot in &sample.slots {
                if let Some(&i) = index.get(slot.name.as_str()) {
                    out[i].1.push((ago.as_secs_f64(), slot.lag));
                }
            }
        }
        out.retain(|(_, points)| !points.is_empty());
        out
    }
}

/// The background task sampling the slots into a [`LagHistory`]; aborted when dropped.
#[derive(Debug)]
pub struct Sampler {
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Spawns the task on the current runtime: every `every`, reads every slot of
    /// `store` and pushes a sample while `history` is alive. A failed read is logged and
    /// skipped. `None` outside a runtime.
    pub fn spawn(
        store: DocumentStore,
        tables: Arc<Tables>,
        history: Weak<LagHistory>,
        every: Duration,
    ) -> Option<Sampler> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let task = runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if history.strong_count() == 0 {
                    return;
                }
                match read_slots(&store, &tables).await {
                    Ok(rows) => {
                        let Some(h) = history.upgrade() else { return };
                        h.push(sample_of(&rows));
                    }
                    Err(e) => debug!(error = %e, "console lag sample failed"),
                }
            }
        });
        Some(Sampler { task })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sample_of(rows: &[SlotRow]) -> Sample {
    Sample {
        at: Instant::now(),
        slots: rows
            .iter()
            .map(|r| SlotSample {
                name: r.name.clone(),
                position: r.position,
                lag: r.lag_events(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, pos: i64) -> Sample {
        Sample {
            at,
            slots: vec![SlotSample {
                name: "p".into(),
                position: pos,
                lag: 100 - pos,
            }],
        }
    }

    /// Thousands of slots: the history keeps every slot of the last samples alone, and
    /// the chart's most lagging ones of every sample.
    #[test]
    fn slots_are_bounded_per_sample() {
        let h = LagHistory::new(100);
        let t0 = Instant::now();
        for i in 0..100u64 {
            let slots = (0..3000i64)
                .map(|s| SlotSample {
                    name: format!("P@t{s:04}"),
                    position: 0,
                    lag: s,
                })
                .collect();
            h.push(Sample {
                at: t0 + Duration::from_millis(i * 100),
                slots,
            });
        }
        let kept = h.lock();
        assert_eq!(kept.charted.len(), 100);
        assert!(kept.charted.iter().all(|s| s.slots.len() == CHARTED));
        assert_eq!(kept.recent.len(), RATE_SAMPLES);
        assert_eq!(kept.slots, 3000);
        assert_eq!(kept.charted[0].slots[0].name, "P@t2999", "most lag first");
        drop(kept);
        assert_eq!(h.rates().len(), 3000, "every slot has a rate");
        let series = h.series(Duration::from_secs(3600));
        assert_eq!(series.len(), CHARTED);
        assert_eq!(series[0].0, "P@t2999");
        assert_eq!(h.slot_count(), 3000);
    }

    #[test]
    fn the_ring_is_bounded_and_rates_are_per_second() {
        let h = LagHistory::new(3);
        let t0 = Instant::now();
        for i in 0..5u64 {
            h.push(sample(t0 + Duration::from_secs(i), (i * 10) as i64));
        }
        assert_eq!(h.len(), 3);
        let r = h.rate("p").expect("a rate");
        assert!((r - 10.0).abs() < 1e-9, "{r}");
        assert_eq!(h.rate("q"), None);
    }
}
