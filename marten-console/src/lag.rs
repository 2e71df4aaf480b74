//! The sampled lag history: a bounded ring buffer of every projection slot's position and
//! lag, filled by a background task the console spawns ([`Sampler`]) and read by the
//! projections page for each slot's rate and the lag chart over the last hour. The task
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
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

/// The window over which a rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl LagHistory {
    /// A history keeping at most `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        LagHistory {
            samples: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(2),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        // A panic while holding the lock left whole samples behind: still usable.
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a sample, dropping the oldest past the capacity.
    pub fn push(&self, sample: Sample) {
        let mut s = self.lock();
        while s.len() >= self.capacity {
            s.pop_front();
        }
        s.push_back(sample);
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no sample was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events per second `slot` advanced over about the last ten seconds (`None`: fewer
    /// than two samples of it).
    pub fn rate(&self, slot: &str) -> Option<f64> {
        self.rates().remove(slot)
    }

    /// [`LagHistory::rate`] of every slot, in one pass over the window.
    pub fn rates(&self) -> HashMap<String, f64> {
        let s = self.lock();
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

    /// Each slot's lag over the last `span`: `(slot, [(seconds before now, lag)])`,
    /// oldest point first.
    pub fn series(&self, span: Duration) -> Vec<(String, Vec<(f64, i64)>)> {
        let now = Instant::now();
        let s = self.lock();
        let mut out: Vec<(String, Vec<(f64, i64)>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for sample in s.iter() {
            let ago = now.duration_since(sample.at);
            if ago > span {
                continue;
            }
            for slot in &sample.slots {
                let point = (ago.as_secs_f64(), slot.lag);
                match index.get(slot.name.as_str()) {
                    Some(&i) => out[i].1.push(point),
                    None => {
                        index.insert(slot.name.as_str(), out.len());
                        out.push((slot.name.clone(), vec![point]));
                    }
                }
            }
        }
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
