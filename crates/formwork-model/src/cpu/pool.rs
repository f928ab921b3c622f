//! A thread pool for the forward pass: the calling thread and `threads - 1` workers share
//! the tasks of one parallel region, then the call returns.
//!
//! A decode step has about five parallel regions per layer, each only tens of microseconds
//! long, with a few microseconds of serial work between them. Waking a sleeping thread costs
//! about as much as a region, so workers spin on the region counter for a while after each
//! region (as llama.cpp's OpenMP threads do) and only then sleep on a condition variable. With
//! one thread there are no workers and no synchronization at all.

// Workers call the region's closure through a pointer whose lifetime is erased; `run` does
// not return before every worker has finished with it (see `run`).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

type Task = dyn Fn(usize) + Sync;

struct Shared {
    /// Held for the whole of a region: regions from different callers run one at a time.
    exclusive: Mutex<()>,
    /// Bumped once per region; workers wait for it to move.
    region: AtomicUsize,
    /// The region's closure (valid while the region runs).
    job: Mutex<Option<(usize, usize)>>,
    /// Tasks in the current region.
    tasks: AtomicUsize,
    /// The next task index to take.
    next: AtomicUsize,
    /// A worker's task panicked in the current region.
    panicked: AtomicBool,
    /// Workers done with the current region.
    done: AtomicUsize,
    /// Workers asleep on `wake`.
    sleeping: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
    workers: usize,
}

/// A fixed set of worker threads.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

/// A `&Task` as two words, so it can sit in a `Mutex` shared with the workers.
fn erase<'a>(f: &'a (dyn Fn(usize) + Sync + 'a)) -> (usize, usize) {
    let ptr: *const (dyn Fn(usize) + Sync + 'a) = f;
    // SAFETY: a fat pointer is two words; it is turned back into a reference only while the
    // region that owns `f` is running (see `Pool::run`).
    unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'a), (usize, usize)>(ptr) }
}

impl Pool {
    /// A pool that runs regions on `threads` threads (the caller included).
    pub(crate) fn new(threads: usize) -> std::io::Result<Pool> {
        let workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            exclusive: Mutex::new(()),
            region: AtomicUsize::new(0),
            job: Mutex::new(None),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            done: AtomicUsize::new(0),
            sleeping: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            workers,
        });
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let shared = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("formwork-cpu-{}", i + 1))
                    .spawn(move || worker(&shared))?,
            );
        }
        Ok(Pool { shared, handles })
    }

    /// Threads a region runs on.
    pub(crate) fn threads(&self) -> usize {
        self.shared.workers + 1
    }

    /// Runs `f(0)`, ..., `f(tasks - 1)` across the pool, each exactly once, and returns when
    /// all have finished. A panic in a task is re-raised here after the region ends. Callers
    /// on several threads take turns; a task must not call `run` on the same pool.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        let s = &*self.shared;
        if s.workers == 0 || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let _exclusive = s.exclusive.lock().unwrap_or_else(|e| e.into_inner());
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(erase(f));
        s.tasks.store(tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.region.fetch_add(1, Ordering::Release);
        {
            let sleeping = s.sleeping.lock().unwrap_or_else(|e| e.into_inner());
            if *sleeping > 0 {
                s.wake.notify_all();
            }
        }
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_tasks(s, f)));
        // Every worker must be done with `f` before it goes out of scope.
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < s.workers {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = caught {
            std::panic::resume_unwind(p);
        }
        if s.panicked.load(Ordering::Acquire) {
            panic!("a task of a parallel region panicked on a worker thread");
        }
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync + '_)) {
    let n = s.tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    // Regions are counted from 0 when the pool is made; one may already have started by the
    // time this thread runs, and it must not be skipped.
    let mut seen = 0;
    loop {
        // Wait for the next region: spin first, then sleep.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let now = s.region.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                break;
            }
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a spin: look at it every 256th time.
            if !spins.is_multiple_of(256) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut sleeping = s.sleeping.lock().unwrap_or_else(|e| e.into_inner());
            *sleeping += 1;
            while s.region.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                sleeping = s.wake.wait(sleeping).unwrap_or_else(|e| e.into_inner());
            }
            *sleeping -= 1;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ptr) = job {
            // SAFETY: `run` published this pointer for the current region and does not
            // return (so the closure stays alive) until this worker bumps `done` below.
            let f: &Task = unsafe { &*std::mem::transmute::<(usize, usize), *const Task>(ptr) };
            // A panicking task must not leave `run` waiting: count the worker done anyway
            // and let `run` raise it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_tasks(s, f))).is_err()
            {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _sleeping = self
                .shared
                .sleeping
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
