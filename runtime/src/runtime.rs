//! [`Runtime`], its [`Builder`], and the cloneable [`Handle`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use crate::env::{self, DEFAULT_MEMLOCK_PER_SHARD, Requirements};
use crate::error::{Error, panic_message};
use crate::idle::IdleStrategy;
use crate::reactor::{Reactor, ThreadReactor};
use crate::shard::{ShardShared, ShardStart, ShardStats, shard_main, spawn_job};
use crate::task::{JoinHandle, join_pair};

/// Creates a shard's reactor, on the shard's own thread, given the shard index.
pub(crate) type ReactorFactory = dyn Fn(usize) -> Result<Box<dyn Reactor>, Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Sync;

/// Configures and starts a [`Runtime`].
pub struct Builder {
    shards: Option<usize>,
    pin: bool,
    idle: IdleStrategy,
    reactor: Arc<ReactorFactory>,
    check_environment: bool,
    memlock_per_shard: u64,
    raise_memlock: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("shards", &self.shards)
            .field("pin", &self.pin)
            .field("idle", &self.idle)
            .field("check_environment", &self.check_environment)
            .field("memlock_per_shard", &self.memlock_per_shard)
            .field("raise_memlock", &self.raise_memlock)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            shards: None,
            pin: true,
            idle: IdleStrategy::default(),
            reactor: Arc::new(|_| Ok(Box::new(ThreadReactor::new()) as Box<dyn Reactor>)),
            check_environment: true,
            memlock_per_shard: DEFAULT_MEMLOCK_PER_SHARD,
            raise_memlock: true,
        }
    }
}

impl Builder {
    /// Number of shards (default: one per CPU this process may run on).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Pin shard `i` to the `i`-th allowed CPU (default on).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// What a shard does when it has no work (default [`IdleStrategy::adaptive`]).
    pub fn idle(mut self, idle: IdleStrategy) -> Self {
        self.idle = idle;
        self
    }

    /// How each shard creates its reactor (default [`ThreadReactor`]). Called on
    /// the shard's thread, after pinning, so per-core memory lands on its node.
    pub fn reactor<R, E, F>(mut self, factory: F) -> Self
    where
        R: Reactor,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Fn(usize) -> Result<R, E> + Send + Sync + 'static,
    {
        self.reactor = Arc::new(move |shard| match factory(shard) {
            Ok(r) => Ok(Box::new(r) as Box<dyn Reactor>),
            Err(e) => Err(e.into()),
        });
        self
    }

    /// Run the io_uring and memlock checks before starting (default on).
    pub fn check_environment(mut self, check: bool) -> Self {
        self.check_environment = check;
        self
    }

    /// Bytes each shard's transport pins (default [`DEFAULT_MEMLOCK_PER_SHARD`]).
    pub fn memlock_per_shard(mut self, bytes: u64) -> Self {
        self.memlock_per_shard = bytes;
        self
    }

    /// Raise the soft memlock limit toward the need when the hard limit allows
    /// (default on), before checking.
    pub fn raise_memlock(mut self, raise: bool) -> Self {
        self.raise_memlock = raise;
        self
    }

    /// Check the environment, start every shard, and wait until all run.
    pub fn build(self) -> Result<Runtime, Error> {
        self.idle.validate()?;
        let allowed = crate::affinity::current_cpus().map_err(|source| Error::Pin {
            shard: 0,
            cpu: 0,
            source,
        })?;
        let shards = self.shards.unwrap_or(allowed.len().max(1));
        if shards == 0 {
            return Err(Error::Config {
                field: "shards",
                reason: "at least one shard is needed",
            });
        }
        if self.pin && shards > allowed.len() {
            return Err(Error::TooManyShards {
                shards,
                cores: allowed.len(),
            });
        }
        if self.check_environment {
            let req = Requirements {
                shards,
                memlock_per_shard: self.memlock_per_shard,
            };
            if self.raise_memlock {
                // Best effort; the check below reports what is still missing.
                let _ = env::raise_memlock_soft_limit(req.memlock_need());
            }
            env::check_environment(&req)?;
        }

        let shared: Arc<[Arc<ShardShared>]> =
            (0..shards).map(|i| Arc::new(ShardShared::new(i))).collect();
        let handle = Handle {
            shards: Arc::clone(&shared),
        };
        let cpus: Vec<Option<usize>> = (0..shards).map(|i| self.pin.then(|| allowed[i])).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut rt = Runtime {
            handle,
            threads: Vec::with_capacity(shards),
            cpus: cpus.clone(),
        };
        for (i, cpu) in cpus.iter().enumerate() {
            let start = ShardStart {
                shared: Arc::clone(&shared[i]),
                handle: rt.handle.clone(),
                cpu: *cpu,
                idle: self.idle,
                reactor: Arc::clone(&self.reactor),
                ready: ready_tx.clone(),
            };
            let spawned = thread::Builder::new()
                .name(format!("concord-shard-{i}"))
                .spawn(move || shard_main(start));
            match spawned {
                Ok(t) => rt.threads.push(t),
                Err(source) => {
                    let _ = rt.stop();
                    return Err(Error::Spawn { shard: i, source });
                }
            }
        }
        drop(ready_tx);

        let mut failure = None;
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => {
                    failure.get_or_insert(e);
                }
                Err(mpsc::RecvError) => {
                    // A shard thread ended without reporting; joining it says why.
                    let mut failures = rt.stop();
                    return Err(if failures.is_empty() {
                        Error::ShuttingDown
                    } else {
                        failures.remove(0)
                    });
                }
            }
        }
        if let Some(e) = failure {
            let _ = rt.stop();
            return Err(e);
        }
        Ok(rt)
    }
}

/// A cloneable, `Send + Sync` handle for spawning onto shards from anywhere.
#[derive(Clone)]
pub struct Handle {
    shards: Arc<[Arc<ShardShared>]>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Handle {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Whether shard `shard` is parked in its reactor right now (false if there is
    /// no such shard). For observability and tests; the answer may be stale at once.
    pub fn is_parked(&self, shard: usize) -> bool {
        self.shards.get(shard).is_some_and(|s| s.is_parked())
    }

    /// Counters of shard `shard` (`None` if there is no such shard).
    pub fn stats(&self, shard: usize) -> Option<ShardStats> {
        self.shards.get(shard).map(|s| s.stats())
    }

    /// Run `f` on shard `shard` and spawn the future it returns there. `f` must be
    /// `Send`; the future need not be (it is created on the shard).
    pub fn spawn_on<F, Fut>(&self, shard: usize, f: F) -> Result<JoinHandle<Fut::Output>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let target = self.shards.get(shard).ok_or(Error::NoSuchShard {
            shard,
            shards: self.shards.len(),
        })?;
        if target.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let (completer, handle) = join_pair(shard);
        target
            .push_remote(spawn_job(f, completer))
            .map_err(|_| Error::ShuttingDown)?;
        Ok(handle)
    }
}

/// A set of running shards. Dropping it shuts down (and logs failures);
/// [`shutdown`](Self::shutdown) returns them.
pub struct Runtime {
    handle: Handle,
    threads: Vec<thread::JoinHandle<Vec<Error>>>,
    cpus: Vec<Option<usize>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.handle.shards())
            .field("cpus", &self.cpus)
            .finish()
    }
}

impl Runtime {
    /// Start configuring a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle for spawning from other threads.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.handle.shards()
    }

    /// The CPU shard `shard` is pinned to (`None` if pinning is off or no such shard).
    pub fn cpu_of(&self, shard: usize) -> Option<usize> {
        self.cpus.get(shard).copied().flatten()
    }

    /// See [`Handle::spawn_on`].
    pub fn spawn_on<F, Fut>(&self, shard: usize, f: F) -> Result<JoinHandle<Fut::Output>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.handle.spawn_on(shard, f)
    }

    /// Stop every shard (parked ones are woken), cancel their tasks, join their
    /// threads. Returns every failure seen: a shard that stopped with an error or
    /// a panic, and panics of detached tasks and timer callbacks.
    pub fn shutdown(mut self) -> Result<(), Error> {
        let mut failures = self.stop();
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            _ => Err(Error::Shutdown { failures }),
        }
    }

    fn stop(&mut self) -> Vec<Error> {
        for s in self.handle.shards.iter() {
            s.request_shutdown();
        }
        let mut failures = Vec::new();
        for (shard, t) in self.threads.drain(..).enumerate() {
            match t.join() {
                Ok(mut errs) => failures.append(&mut errs),
                Err(p) => failures.push(Error::ShardPanicked {
                    shard,
                    message: panic_message(&*p),
                }),
            }
        }
        failures
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for e in self.stop() {
            tracing::error!(error = %e, "shard failure at runtime drop");
        }
    }
}
