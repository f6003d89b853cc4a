//! Property tests of the ordering and no-loss laws of timers and channels.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use concord_runtime::{IdleStrategy, Offer, Runtime, ShardContext, TryRecv, channel};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Send(u16),
    Recv,
    CloneSender,
    DropSender,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u16>().prop_map(Op::Send),
        4 => Just(Op::Recv),
        1 => Just(Op::CloneSender),
        1 => Just(Op::DropSender),
    ]
}

proptest! {
    /// A channel behaves like a bounded FIFO: every offer is either queued or
    /// handed back (BackPressured exactly when full, Closed never while the
    /// receiver lives), and messages come out in order, none lost or duplicated.
    #[test]
    fn channel_is_a_lossless_bounded_fifo(cap in 1usize..8, ops in proptest::collection::vec(op(), 0..200)) {
        let (tx, mut rx) = channel::<u16>(cap);
        let mut senders = vec![tx];
        let mut model: VecDeque<u16> = VecDeque::new();
        for op in ops {
            match op {
                Op::Send(v) => {
                    let Some(tx) = senders.first() else { continue };
                    match tx.try_send(v) {
                        Offer::Sent => {
                            prop_assert!(model.len() < cap);
                            model.push_back(v);
                        }
                        Offer::BackPressured(back) => {
                            prop_assert_eq!(back, v);
                            prop_assert_eq!(model.len(), cap);
                        }
                        Offer::Closed(_) => prop_assert!(false, "closed while receiver alive"),
                    }
                }
                Op::Recv => match rx.try_recv() {
                    Ok(v) => prop_assert_eq!(Some(v), model.pop_front()),
                    Err(TryRecv::Empty) => {
                        prop_assert!(model.is_empty());
                        prop_assert!(!senders.is_empty());
                    }
                    Err(TryRecv::Closed) => {
                        prop_assert!(model.is_empty());
                        prop_assert!(senders.is_empty());
                    }
                },
                Op::CloneSender => {
                    if let Some(tx) = senders.first() {
                        senders.push(tx.clone());
                    }
                }
                Op::DropSender => {
                    senders.pop();
                }
            }
        }
        // Drain: what is left comes out in order, then Closed once senders are gone.
        drop(senders);
        while let Some(v) = model.pop_front() {
            prop_assert_eq!(rx.try_recv(), Ok(v));
        }
        prop_assert_eq!(rx.try_recv(), Err(TryRecv::Closed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Callback timers on a live shard fire in (deadline, creation) order, and
    /// cancelled ones never fire.
    #[test]
    fn timers_fire_in_order_and_cancelled_never_fire(
        timers in proptest::collection::vec((0u64..5, any::<bool>()), 1..40)
    ) {
        let rt = Runtime::builder().shards(1).pin(false).idle(IdleStrategy::Park).build().unwrap();
        let plan = timers.clone();
        let fired = rt.spawn_on(0, move || async move {
            let ctx = ShardContext::current().unwrap();
            let log = Rc::new(RefCell::new(Vec::new()));
            let t0 = std::time::Instant::now();
            let mut handles = Vec::new();
            for (i, (ms, _)) in plan.iter().enumerate() {
                let log = Rc::clone(&log);
                handles.push(ctx.call_at(t0 + Duration::from_millis(*ms), move || log.borrow_mut().push(i)));
            }
            for (h, (_, cancel)) in handles.iter().zip(&plan) {
                if *cancel {
                    assert!(h.cancel());
                }
            }
            ctx.sleep_until(t0 + Duration::from_millis(6)).await;
            log.borrow().clone()
        }).unwrap().join().unwrap();
        rt.shutdown().unwrap();

        let mut expected: Vec<(u64, usize)> = timers
            .iter()
            .enumerate()
            .filter(|(_, (_, cancel))| !cancel)
            .map(|(i, (ms, _))| (*ms, i))
            .collect();
        expected.sort();
        let expected: Vec<usize> = expected.into_iter().map(|(_, i)| i).collect();
        prop_assert_eq!(fired, expected);
    }
}
