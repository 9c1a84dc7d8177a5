//! A fixed pool of threads for blocking calls (component calls, with their
//! inference), so the async runtime never stalls and at most `n` calls run
//! at once; more wait in order. A fixed set of threads, rather than tokio's
//! growing blocking pool, also bounds the allocator's per-thread arenas,
//! which is most of the daemon's memory under load.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the worker pool is stopped")]
    Stopped,
    #[error("the call panicked")]
    Panicked,
    /// Still waiting for a worker when its deadline came; it never ran.
    #[error("no worker was free before the deadline")]
    Late,
}

/// Where a job with a deadline is: it runs only if it starts in time.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const GAVE_UP: u8 = 2;

pub struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Pool {
    pub fn new(n: usize, name: &str) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool was dropped
                        }
                    }
                })?;
        }
        Ok(Pool {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on a pool thread and waits for its result without blocking.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic ends this call, not the worker.
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.send(job)?;
        outcome(rx.await)
    }

    /// [`Pool::run`], unless no worker takes `f` before `until`: then
    /// `Err(Late)` at `until`, and `f` never runs. Once `f` has started it
    /// is waited for (it keeps its own deadline).
    pub async fn run_by<T: Send + 'static>(
        &self,
        until: Instant,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, mut rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job_state = state.clone();
        let job: Job = Box::new(move || {
            let start =
                job_state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire);
            if start.is_ok() {
                let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
            }
        });
        self.send(job)?;
        tokio::select! {
            r = &mut rx => outcome(r),
            _ = tokio::time::sleep_until(until.into()) => {
                let gave_up = state.compare_exchange(QUEUED, GAVE_UP, Ordering::AcqRel, Ordering::Acquire);
                match gave_up {
                    Ok(_) => Err(PoolError::Late),
                    Err(_) => outcome(rx.await),
                }
            }
        }
    }

    fn send(&self, job: Job) -> Result<(), PoolError> {
        self.jobs
            .lock()
            .map_err(|_| PoolError::Stopped)?
            .send(job)
            .map_err(|_| PoolError::Stopped)
    }
}

type Finished<T> = Result<std::thread::Result<T>, oneshot::error::RecvError>;

fn outcome<T>(r: Finished<T>) -> Result<T, PoolError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(PoolError::Panicked),
        Err(_) => Err(PoolError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panic() {
        let pool = Pool::new(2, "test").unwrap();
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4);
        assert!(matches!(
            pool.run(|| panic!("boom")).await,
            Err(PoolError::Panicked)
        ));
        // More jobs than threads at once: they wait their turn and all complete.
        let pool = Arc::new(pool);
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move || i * 10).await.unwrap() })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), i as i32 * 10);
        }
    }

    #[tokio::test]
    async fn a_job_still_waiting_at_its_deadline_gives_up_and_never_runs() {
        use std::sync::atomic::AtomicBool;
        use std::time::Duration;
        let pool = Arc::new(Pool::new(1, "test").unwrap());
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(|| std::thread::sleep(Duration::from_millis(1000)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let t = Instant::now();
        let late = pool
            .run_by(t + Duration::from_millis(100), move || {
                r.store(true, Ordering::SeqCst)
            })
            .await;
        assert!(matches!(late, Err(PoolError::Late)), "{late:?}");
        let waited = t.elapsed();
        assert!(waited < Duration::from_millis(800), "{waited:?}");
        // In time, it runs (after the busy job).
        let t = Instant::now();
        let ok = pool.run_by(t + Duration::from_secs(5), || 7).await;
        assert_eq!(ok.unwrap(), 7);
        busy.await.unwrap().unwrap();
        assert!(!ran.load(Ordering::SeqCst), "the late job ran");
    }
}
