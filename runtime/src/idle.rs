//! What a shard does when a turn of its duty loop found no work.
//!
//! On this machine waking a parked thread costs tens of microseconds (15-25 us
//! measured, docs/DESIGN.md section 2.5), so parking too early puts that
//! cost on the next message; spinning too long starves the other threads sharing
//! the core (three spinners on two cores took p99 into milliseconds). The
//! strategies are Aeron's names for the points on that trade-off; [`IdleStrategy::Adaptive`]
//! moves along it with the traffic.
//!
//! The strategy is a pure state machine ([`Idler`]): it gets "work was done" or
//! "idle at time `now`" and answers [`Step`]. The shard carries the step out and
//! caps any park at its next timer deadline, so timers fire on time under every
//! strategy.

use std::time::{Duration, Instant};

/// How a shard waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Spin forever: lowest latency, burns the core. Only with one shard per
    /// otherwise-idle core.
    BusySpin,
    /// `sched_yield` every idle turn: lets other runnable threads on the core go
    /// first, never sleeps.
    Yield,
    /// Spin for `spin` after the last work, then park until woken, a timer, or
    /// `park_timeout`.
    SpinThenPark {
        /// How long to spin after the last work before parking.
        spin: Duration,
        /// Upper bound on one park (`None`: until woken or a timer).
        park_timeout: Option<Duration>,
    },
    /// Park as soon as a turn finds no work: least CPU, highest wake-up latency.
    Park,
    /// Spin while traffic is hot, back off to yielding, then park; learn the spin
    /// budget from the gaps between bursts. State machine:
    ///
    /// ```text
    ///            work                       work
    ///   +-------------------+   +-----------------------------+
    ///   v                   |   |                             |
    /// BUSY --idle--> SPIN --+-- budget --> YIELD -- yield_for --> PARK
    ///   ^             (spin_loop)          (sched_yield)        (reactor.park)
    ///   |                                                        |
    ///   +------------------------ work ---------------------------+
    /// ```
    ///
    /// The budget starts at `min_spin`. When a park is ended by work that came
    /// within `max_spin` of the idle period's start, spinning that long would have
    /// caught it without the wake-up cost, so the budget doubles (at least to that
    /// gap, at most `max_spin`). When a park ends with no work after more than
    /// `max_spin`, traffic has gone quiet, and the budget halves (down to `min_spin`).
    Adaptive {
        /// Smallest spin budget.
        min_spin: Duration,
        /// Largest spin budget.
        max_spin: Duration,
        /// How long to yield after the spin budget before parking.
        yield_for: Duration,
        /// Upper bound on one park (`None`: until woken or a timer).
        park_timeout: Option<Duration>,
    },
}

impl IdleStrategy {
    /// Adaptive with defaults sized for this machine: a wake-up costs ~50 us, so spin at
    /// least that long; never spin more than 2 ms without yielding the core.
    pub const fn adaptive() -> Self {
        Self::Adaptive {
            min_spin: Duration::from_micros(50),
            max_spin: Duration::from_millis(2),
            yield_for: Duration::from_micros(200),
            park_timeout: None,
        }
    }

    /// Spin-then-park with a spin budget of `spin` and no park timeout.
    pub const fn spin_then_park(spin: Duration) -> Self {
        Self::SpinThenPark {
            spin,
            park_timeout: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        match self {
            Self::Adaptive {
                min_spin, max_spin, ..
            } if min_spin > max_spin => Err(crate::Error::Config {
                field: "idle",
                reason: "Adaptive min_spin is larger than max_spin",
            }),
            Self::SpinThenPark {
                park_timeout: Some(t),
                ..
            }
            | Self::Adaptive {
                park_timeout: Some(t),
                ..
            } if t.is_zero() => Err(crate::Error::Config {
                field: "idle",
                reason: "park_timeout of zero would spin through the kernel; use Yield",
            }),
            _ => Ok(()),
        }
    }
}

impl Default for IdleStrategy {
    fn default() -> Self {
        Self::adaptive()
    }
}

/// What the shard does after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The turn did work: go straight to the next turn.
    Busy,
    /// Spin (`std::hint::spin_loop`) and take another turn.
    Spin,
    /// `sched_yield` and take another turn.
    Yield,
    /// Park the reactor for at most this long (`None`: until woken).
    Park(Option<Duration>),
}

/// The idle strategy's state for one shard.
#[derive(Debug, Clone)]
pub struct Idler {
    strategy: IdleStrategy,
    /// Start of the current run of idle turns.
    idle_since: Option<Instant>,
    /// The adaptive spin budget.
    spin_budget: Duration,
    /// Set when the last step was `Park`, cleared by the next work.
    parked: bool,
}

impl Idler {
    /// A fresh state machine for `strategy`.
    pub fn new(strategy: IdleStrategy) -> Self {
        let spin_budget = match strategy {
            IdleStrategy::Adaptive { min_spin, .. } => min_spin,
            IdleStrategy::SpinThenPark { spin, .. } => spin,
            _ => Duration::ZERO,
        };
        Self {
            strategy,
            idle_since: None,
            spin_budget,
            parked: false,
        }
    }

    /// The strategy this state machine runs.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// The current spin budget (adapts under [`IdleStrategy::Adaptive`]).
    pub fn spin_budget(&self) -> Duration {
        self.spin_budget
    }

    /// Whether the strategy needs the clock for an idle turn (BusySpin, Yield and
    /// Park do not, which keeps `Instant::now` off their loop).
    pub fn needs_clock(&self) -> bool {
        matches!(
            self.strategy,
            IdleStrategy::SpinThenPark { .. } | IdleStrategy::Adaptive { .. }
        )
    }

    /// Feed one turn: `work` items done, at time `now`. Returns what to do next.
    pub fn step(&mut self, work: usize, now: Instant) -> Step {
        if work > 0 {
            self.on_work(now);
            return Step::Busy;
        }
        let since = *self.idle_since.get_or_insert(now);
        let idle_for = now.saturating_duration_since(since);
        match self.strategy {
            IdleStrategy::BusySpin => Step::Spin,
            IdleStrategy::Yield => Step::Yield,
            IdleStrategy::Park => self.park(None),
            IdleStrategy::SpinThenPark { park_timeout, .. } => {
                if idle_for < self.spin_budget {
                    Step::Spin
                } else {
                    self.park(park_timeout)
                }
            }
            IdleStrategy::Adaptive {
                min_spin,
                max_spin,
                yield_for,
                park_timeout,
            } => {
                if idle_for < self.spin_budget {
                    Step::Spin
                } else if idle_for < self.spin_budget + yield_for {
                    Step::Yield
                } else {
                    if self.parked && idle_for > max_spin {
                        // Woke with nothing to do after a long quiet: spend less CPU next time.
                        self.spin_budget = (self.spin_budget / 2).max(min_spin);
                    }
                    self.park(park_timeout)
                }
            }
        }
    }

    fn park(&mut self, timeout: Option<Duration>) -> Step {
        self.parked = true;
        Step::Park(timeout)
    }

    fn on_work(&mut self, now: Instant) {
        if let (
            true,
            Some(since),
            IdleStrategy::Adaptive {
                min_spin, max_spin, ..
            },
        ) = (self.parked, self.idle_since, self.strategy)
        {
            let gap = now.saturating_duration_since(since);
            if gap <= max_spin {
                // Spinning through this gap would have saved the wake-up.
                self.spin_budget = (self.spin_budget * 2).max(gap).clamp(min_spin, max_spin);
            }
        }
        self.parked = false;
        self.idle_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn busy_spin_and_yield_never_park() {
        let t0 = Instant::now();
        let mut spin = Idler::new(IdleStrategy::BusySpin);
        let mut yld = Idler::new(IdleStrategy::Yield);
        for i in 0..1000 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(spin.step(0, now), Step::Spin);
            assert_eq!(yld.step(0, now), Step::Yield);
        }
        assert_eq!(spin.step(1, t0), Step::Busy);
    }

    #[test]
    fn park_parks_at_once() {
        let mut idler = Idler::new(IdleStrategy::Park);
        assert_eq!(idler.step(0, Instant::now()), Step::Park(None));
        assert_eq!(idler.step(3, Instant::now()), Step::Busy);
    }

    #[test]
    fn spin_then_park_spins_for_its_budget() {
        let t0 = Instant::now();
        let mut idler = Idler::new(IdleStrategy::SpinThenPark {
            spin: us(100),
            park_timeout: Some(us(500)),
        });
        assert_eq!(idler.step(0, t0), Step::Spin);
        assert_eq!(idler.step(0, t0 + us(99)), Step::Spin);
        assert_eq!(idler.step(0, t0 + us(100)), Step::Park(Some(us(500))));
        // Work resets the idle period.
        assert_eq!(idler.step(1, t0 + us(700)), Step::Busy);
        assert_eq!(idler.step(0, t0 + us(710)), Step::Spin);
        assert_eq!(idler.spin_budget(), us(100), "SpinThenPark does not adapt");
    }

    fn adaptive() -> Idler {
        Idler::new(IdleStrategy::Adaptive {
            min_spin: us(50),
            max_spin: us(1000),
            yield_for: us(100),
            park_timeout: None,
        })
    }

    #[test]
    fn adaptive_spins_then_yields_then_parks() {
        let t0 = Instant::now();
        let mut idler = adaptive();
        assert_eq!(idler.step(0, t0), Step::Spin);
        assert_eq!(idler.step(0, t0 + us(49)), Step::Spin);
        assert_eq!(idler.step(0, t0 + us(50)), Step::Yield);
        assert_eq!(idler.step(0, t0 + us(149)), Step::Yield);
        assert_eq!(idler.step(0, t0 + us(150)), Step::Park(None));
    }

    #[test]
    fn adaptive_grows_budget_when_a_park_was_ended_by_nearby_work() {
        let t0 = Instant::now();
        let mut idler = adaptive();
        idler.step(0, t0);
        assert_eq!(idler.step(0, t0 + us(200)), Step::Park(None));
        // Work arrived 300 us after the idle period began: spinning would have caught it.
        assert_eq!(idler.step(1, t0 + us(300)), Step::Busy);
        assert_eq!(idler.spin_budget(), us(300));
        // Repeated short gaps grow it up to max_spin, never past.
        let mut t = t0 + us(300);
        for _ in 0..10 {
            idler.step(0, t);
            let budget = idler.spin_budget();
            let park_at = t + budget + us(100);
            assert_eq!(idler.step(0, park_at), Step::Park(None));
            t = park_at + us(1);
            idler.step(1, t);
        }
        assert_eq!(idler.spin_budget(), us(1000));
    }

    #[test]
    fn adaptive_shrinks_budget_when_traffic_goes_quiet() {
        let t0 = Instant::now();
        let mut idler = adaptive();
        // Grow the budget first.
        idler.step(0, t0);
        idler.step(0, t0 + us(200));
        idler.step(1, t0 + us(800));
        assert_eq!(idler.spin_budget(), us(800));
        // Now a long quiet: each empty wake after max_spin halves the budget.
        let t1 = t0 + us(1000);
        idler.step(0, t1);
        assert_eq!(idler.step(0, t1 + us(900)), Step::Park(None));
        assert_eq!(idler.step(0, t1 + us(5000)), Step::Park(None));
        assert_eq!(idler.spin_budget(), us(400));
        assert_eq!(idler.step(0, t1 + us(9000)), Step::Park(None));
        assert_eq!(idler.spin_budget(), us(200));
        for i in 0..10 {
            idler.step(0, t1 + us(10_000 + i * 1000));
        }
        assert_eq!(idler.spin_budget(), us(50), "never below min_spin");
        // Work after a long park does not grow it.
        idler.step(1, t1 + us(50_000));
        assert_eq!(idler.spin_budget(), us(50));
    }

    #[test]
    fn invalid_strategies_are_rejected() {
        assert!(
            IdleStrategy::Adaptive {
                min_spin: us(10),
                max_spin: us(5),
                yield_for: us(1),
                park_timeout: None,
            }
            .validate()
            .is_err()
        );
        assert!(
            IdleStrategy::SpinThenPark {
                spin: us(1),
                park_timeout: Some(Duration::ZERO),
            }
            .validate()
            .is_err()
        );
        assert!(IdleStrategy::default().validate().is_ok());
    }
}
