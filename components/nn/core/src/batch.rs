//! Batching across calls, for any engine: concurrent runs of one model whose
//! inputs differ only in their leading (batch) dimension are concatenated
//! along it, run once, and each caller gets its own rows back.
//!
//! One batch runs at a time per model. A run that arrives while the model is
//! busy queues; when the model comes free, one of the waiting callers takes
//! the queue's front run and every queued run of the same shape behind it,
//! up to `max` rows, and runs them together. While runs have been arriving
//! together (the last batch held more than one), the caller that takes a
//! batch first waits up to `wait` for more rows; a run that finds the model
//! idle and nobody else there runs at once, so a lone caller pays nothing.
//!
//! A batch whose run fails, or whose outputs cannot be split by rows, runs
//! again one call at a time, so an error lands on the call that caused it.
//! Inputs have passed every check before they get here ([`crate::Context`]),
//! so a malformed call fails before it joins a batch.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{Dim, ElementType, Engine, Model, NnError, RawTensor, Result, Signature, Tensor};

/// How a model's runs are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Rows in one batch at most.
    pub max: usize,
    /// How long the first run of a batch waits for more, when runs have been
    /// arriving together.
    pub wait: Duration,
}

/// An engine whose models batch their runs (see the module's docs).
pub struct Batching<'a> {
    pub engine: &'a dyn Engine,
    pub policy: BatchPolicy,
}

impl Engine for Batching<'_> {
    fn name(&self) -> &str {
        self.engine.name()
    }

    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>> {
        let model = self.engine.load(bytes)?;
        Ok(Box::new(Batched::new(model, self.policy)?))
    }
}

/// What a batch's run did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    /// Batches run, and the calls and rows they held.
    pub batches: u64,
    pub calls: u64,
    pub rows: u64,
    /// Batches that failed or could not be split, and ran again call by call.
    pub retried: u64,
    /// Time calls spent queued before their batch ran, in total.
    pub queued: Duration,
    /// Batches by the calls they held: `sizes[i]` counts those of at most
    /// [`SIZE_BOUNDS`]`[i]` calls (and more than the bound before).
    pub sizes: [u64; SIZE_BOUNDS.len() + 1],
}

/// The upper bounds of [`BatchStats::sizes`]' buckets; the last bucket is the rest.
pub const SIZE_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// A model whose runs are batched.
pub struct Batched {
    inner: Box<dyn Model>,
    policy: BatchPolicy,
    queue: Mutex<Queue>,
    turn: Condvar,
}

/// Each run's result, by its id.
type Answers = Vec<(u64, Result<Vec<RawTensor>>)>;

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    /// What must match for runs to share a batch (see [`shape`]).
    shape: Shape,
    arrived: Instant,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<(u64, Job)>,
    done: HashMap<u64, Result<Vec<RawTensor>>>,
    running: bool,
    next: u64,
    /// The last batch held more than one run: wait for company.
    crowded: bool,
    stats: BatchStats,
}

impl Batched {
    /// Wraps `inner`, or says why its runs cannot be batched: every input
    /// must declare a leading dimension that is set per call (one symbol, the
    /// same for every input), and every output that declares its rank too.
    pub fn new(inner: Box<dyn Model>, policy: BatchPolicy) -> Result<Batched> {
        if policy.max < 2 {
            return Err(NnError::invalid("batching needs a max of 2 rows or more"));
        }
        leading_symbol(inner.signature())?;
        Ok(Batched {
            inner,
            policy,
            queue: Mutex::new(Queue::default()),
            turn: Condvar::new(),
        })
    }

    /// What the batches did so far.
    pub fn stats(&self) -> BatchStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the front run and the queued runs of its shape, up to `max` rows.
    fn take(&self, q: &mut Queue) -> Vec<(u64, Job)> {
        let Some((_, front)) = q.waiting.front() else {
            return Vec::new();
        };
        let shape = front.shape.clone();
        let mut rows = 0;
        let mut batch = Vec::new();
        let mut rest = VecDeque::new();
        while let Some((id, job)) = q.waiting.pop_front() {
            if rows + job.rows <= self.policy.max && job.shape == shape {
                rows += job.rows;
                batch.push((id, job));
            } else {
                rest.push_back((id, job));
            }
        }
        q.waiting = rest;
        batch
    }

    /// Rows queued in runs of the front run's shape.
    fn rows_ready(q: &Queue) -> usize {
        let Some((_, front)) = q.waiting.front() else {
            return 0;
        };
        let s = &front.shape;
        q.waiting
            .iter()
            .filter(|(_, j)| j.shape == *s)
            .map(|(_, j)| j.rows)
            .sum()
    }

    /// Runs a batch; each run's result, by id.
    fn run_batch(&self, batch: Vec<(u64, Job)>) -> (Answers, bool) {
        if batch.len() == 1 {
            let (id, job) = batch.into_iter().next().expect("one run");
            return (vec![(id, self.run_one(job.inputs))], false);
        }
        let total: usize = batch.iter().map(|(_, j)| j.rows).sum();
        let joined = (0..batch[0].1.inputs.len())
            .map(|i| {
                let first = &batch[0].1.inputs[i];
                let mut dims = first.dims.clone();
                dims[0] = total as u32;
                let mut data =
                    Vec::with_capacity(batch.iter().map(|(_, j)| j.inputs[i].data.len()).sum());
                for (_, j) in &batch {
                    data.extend_from_slice(&j.inputs[i].data);
                }
                Tensor::new(dims, first.ty, data)
            })
            .collect();
        if let Ok(outputs) = self.run_one(joined)
            && let Some(split) = split(outputs, &batch, total)
        {
            return (
                batch
                    .iter()
                    .map(|(id, _)| *id)
                    .zip(split.into_iter().map(Ok))
                    .collect(),
                false,
            );
        }
        // One at a time: the error, if any, lands on the call that causes it.
        let each = batch
            .into_iter()
            .map(|(id, job)| (id, self.run_one(job.inputs)))
            .collect();
        (each, true)
    }

    fn run_one(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>> {
        catch_unwind(AssertUnwindSafe(|| self.inner.run(inputs))).unwrap_or_else(|p| {
            Err(NnError::runtime(format!(
                "the engine panicked: {}",
                crate::panic_text(p.as_ref())
            )))
        })
    }
}

impl Model for Batched {
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn batch_stats(&self) -> Option<BatchStats> {
        Some(self.stats())
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>> {
        let Some(rows) = rows(&inputs).filter(|&r| r >= 1 && r <= self.policy.max) else {
            // Not joinable (no rows, or more than a batch holds): alone.
            return self.run_one(inputs);
        };
        // Worked out before the lock: every batch compares it.
        let job = Job {
            shape: shape(&inputs),
            inputs,
            rows,
            arrived: Instant::now(),
        };
        let mut q = self.lock();
        let id = q.next;
        q.next += 1;
        q.waiting.push_back((id, job));
        self.turn.notify_all();
        loop {
            if let Some(result) = q.done.remove(&id) {
                return result;
            }
            if q.running {
                q = self.turn.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // The model is free: this caller runs the next batch.
            q.running = true;
            if q.crowded && !self.policy.wait.is_zero() {
                let until = Instant::now() + self.policy.wait;
                while Self::rows_ready(&q) < self.policy.max {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = self
                        .turn
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let batch = self.take(&mut q);
            let now = Instant::now();
            let calls = batch.len() as u64;
            q.stats.batches += 1;
            let bucket = SIZE_BOUNDS
                .iter()
                .position(|&b| calls <= b)
                .unwrap_or(SIZE_BOUNDS.len());
            q.stats.sizes[bucket] += 1;
            q.stats.calls += calls;
            q.stats.rows += batch.iter().map(|(_, j)| j.rows as u64).sum::<u64>();
            q.stats.queued += batch.iter().map(|(_, j)| now - j.arrived).sum::<Duration>();
            drop(q);
            let (results, retried) = self.run_batch(batch);
            q = self.lock();
            q.stats.retried += retried as u64;
            q.crowded = calls > 1;
            q.done.extend(results);
            q.running = false;
            self.turn.notify_all();
        }
    }
}

/// The rows of a call: every input's leading dimension, when they agree.
fn rows(inputs: &[Tensor]) -> Option<usize> {
    let first = *inputs.first()?.dims.first()?;
    inputs
        .iter()
        .all(|t| t.dims.first() == Some(&first))
        .then_some(first as usize)
}

/// What must match for runs to share a batch: each input's type and its
/// dimensions after the leading one.
type Shape = Vec<(ElementType, Vec<u32>)>;

fn shape(inputs: &[Tensor]) -> Shape {
    inputs
        .iter()
        .map(|t| (t.ty, t.dims[1.min(t.dims.len())..].to_vec()))
        .collect()
}

/// The batch's outputs cut back into each run's rows; `None` when an output
/// does not lead with the batch's rows.
fn split(
    outputs: Vec<RawTensor>,
    batch: &[(u64, Job)],
    total: usize,
) -> Option<Vec<Vec<RawTensor>>> {
    let mut each: Vec<Vec<RawTensor>> = batch
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for out in outputs {
        if out.dims.first().map(|&d| d as usize) != Some(total) || out.data.len() % total != 0 {
            return None;
        }
        let row = out.data.len() / total;
        let mut at = 0;
        for (k, (_, job)) in batch.iter().enumerate() {
            let mut dims = out.dims.clone();
            dims[0] = job.rows as u32;
            let bytes = out.data[at * row..(at + job.rows) * row].to_vec();
            each[k].push(RawTensor::new(dims, out.datum, bytes));
            at += job.rows;
        }
    }
    Some(each)
}

/// Checks that a model's runs can be batched along their leading dimension.
fn leading_symbol(sig: &Signature) -> Result<()> {
    let refuse = |why: String| {
        Err(NnError::unsupported(format!(
            "its runs cannot be batched: {why}"
        )))
    };
    let mut symbol: Option<&str> = None;
    for port in &sig.inputs {
        match port.dims.as_deref().and_then(<[Dim]>::first) {
            None => return refuse(format!("input {port} declares no leading dimension")),
            Some(Dim::Fixed(n)) => {
                return refuse(format!(
                    "input {port} has a fixed leading dimension ({n}); batching needs one set per call"
                ));
            }
            Some(Dim::Symbol(s)) => match symbol {
                Some(other) if other != s => {
                    return refuse(format!(
                        "inputs lead with different dimensions ({other} and {s})"
                    ));
                }
                _ => symbol = Some(s),
            },
            Some(Dim::Any) => {}
        }
    }
    for port in &sig.outputs {
        if let Some(Dim::Fixed(n)) = port.dims.as_deref().and_then(<[Dim]>::first) {
            return refuse(format!("output {port} has a fixed leading dimension ({n})"));
        }
    }
    if sig.inputs.is_empty() {
        return refuse("the model has no inputs".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Datum, Port};
    use std::sync::Arc;

    /// y = 2x, row by row; a NaN anywhere fails the whole run; records the
    /// rows of every run and takes 20 ms, so concurrent calls meet.
    struct Double {
        sig: Signature,
        runs: Mutex<Vec<usize>>,
    }

    impl Model for Double {
        fn signature(&self) -> &Signature {
            &self.sig
        }
        fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>> {
            let x = &inputs[0];
            self.runs.lock().unwrap().push(x.dims[0] as usize);
            std::thread::sleep(Duration::from_millis(20));
            let mut out = Vec::with_capacity(x.data.len());
            for c in x.data.chunks(4) {
                let v = f32::from_le_bytes(c.try_into().unwrap());
                if v.is_nan() {
                    return Err(NnError::runtime("a NaN"));
                }
                out.extend_from_slice(&(2.0 * v).to_le_bytes());
            }
            Ok(vec![RawTensor::new(x.dims.clone(), Datum::F32, out)])
        }
    }

    fn model(lead: Dim) -> Box<Double> {
        let port = |n: &str| Port::new(n, Datum::F32, Some(vec![lead.clone(), Dim::Fixed(2)]));
        Box::new(Double {
            sig: Signature {
                inputs: vec![port("x")],
                outputs: vec![port("y")],
            },
            runs: Mutex::new(Vec::new()),
        })
    }

    fn row(a: f32, b: f32) -> Tensor {
        let data = [a, b].iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(vec![1, 2], ElementType::F32, data)
    }

    fn values(t: &RawTensor) -> Vec<f32> {
        t.data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn policy(wait_ms: u64) -> BatchPolicy {
        BatchPolicy {
            max: 8,
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[test]
    fn concurrent_calls_share_runs_and_each_gets_its_own_rows() {
        let m = Arc::new(Batched::new(model(Dim::Symbol("n".into())), policy(5)).unwrap());
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let m = m.clone();
                std::thread::spawn(move || m.run(vec![row(i as f32, -(i as f32))]))
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            let out = c.join().unwrap().unwrap();
            assert_eq!(out[0].dims, [1, 2]);
            assert_eq!(
                values(&out[0]),
                [2.0 * i as f32, -2.0 * i as f32],
                "call {i}"
            );
        }
        let stats = m.stats();
        assert_eq!(stats.calls, 16);
        assert!(stats.batches < 16, "some calls shared a run: {stats:?}");
        assert_eq!(stats.retried, 0);
    }

    #[test]
    fn a_failing_batch_runs_again_call_by_call_so_only_the_bad_call_fails() {
        let m = Arc::new(Batched::new(model(Dim::Any), policy(5)).unwrap());
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let m = m.clone();
                let x = if i == 3 { f32::NAN } else { i as f32 };
                std::thread::spawn(move || m.run(vec![row(x, 1.0)]))
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            let out = c.join().unwrap();
            if i == 3 {
                assert_eq!(out.unwrap_err().message, "a NaN");
            } else {
                assert_eq!(values(&out.unwrap()[0]), [2.0 * i as f32, 2.0]);
            }
        }
    }

    #[test]
    fn a_lone_call_does_not_wait_for_company() {
        let m = Batched::new(model(Dim::Symbol("n".into())), policy(2000)).unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            m.run(vec![row(1.0, 2.0)]).unwrap();
            assert!(
                t.elapsed() < Duration::from_millis(1000),
                "{:?}",
                t.elapsed()
            );
        }
        // More rows than a batch holds run alone, unbatched.
        let big = Tensor::new(vec![9, 2], ElementType::F32, vec![0; 72]);
        assert_eq!(m.run(vec![big]).unwrap()[0].dims, [9, 2]);
    }

    #[test]
    fn a_fixed_leading_dimension_is_refused_with_the_reason() {
        let e = Batched::new(model(Dim::Fixed(1)), policy(0)).err().unwrap();
        assert!(
            e.message.contains("fixed leading dimension (1)"),
            "{}",
            e.message
        );
        let e = Batched::new(
            model(Dim::Any),
            BatchPolicy {
                max: 1,
                wait: Duration::ZERO,
            },
        )
        .err()
        .unwrap();
        assert!(e.message.contains("max of 2"), "{}", e.message);
    }
}
