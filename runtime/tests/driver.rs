//! Two shards, each owning a transport Driver, exchange frames over loopback
//! through the runtime: the server shard echoes, the client shard checks.

use std::net::SocketAddr;
use std::time::Duration;

use concord_runtime::transport::{Driver, DriverConfig, Event, SendOutcome};
use concord_runtime::{DriverReactor, Error, IdleStrategy, Runtime, ShardContext, channel};

const FRAMES: usize = 200;
const HANG: Duration = Duration::from_secs(60);

fn runtime(idle: IdleStrategy) -> Runtime {
    Runtime::builder()
        .shards(2)
        .pin(false)
        .idle(idle)
        .reactor(|shard| {
            Driver::new(DriverConfig {
                node_id: shard as u64 + 1,
                ..DriverConfig::default()
            })
            .map(DriverReactor::new)
        })
        .build()
        .expect("runtime with drivers starts")
}

fn exchange(idle: IdleStrategy) {
    let rt = runtime(idle);
    let (addr_tx, mut addr_rx) = channel::<SocketAddr>(1);

    let server = rt
        .spawn_on(0, move || async move {
            let ctx = ShardContext::current()?;
            let addr = ctx
                .driver()?
                .listen("127.0.0.1:0".parse().unwrap())
                .map_err(|e| Error::Reactor {
                    shard: 0,
                    source: std::io::Error::other(e),
                })?;
            assert!(addr_tx.try_send(addr).is_sent());
            let mut echoed = 0;
            while echoed < FRAMES {
                match ctx.driver_event().await? {
                    Event::Frame { conn, frame } => {
                        let mut reply = b"ack:".to_vec();
                        reply.extend_from_slice(&frame);
                        drop(frame);
                        let sent = ctx.driver()?.send(conn, &reply);
                        assert!(matches!(sent, Ok(SendOutcome::Queued)), "{sent:?}");
                        echoed += 1;
                    }
                    Event::Connected { peer, .. } => assert_eq!(peer.node_id, 2),
                    other => panic!("server got {other:?}"),
                }
            }
            Ok::<_, Error>(echoed)
        })
        .unwrap();

    let client = rt
        .spawn_on(1, move || async move {
            let ctx = ShardContext::current()?;
            let addr = addr_rx.recv().await.expect("server sends its address");
            let conn = ctx.driver()?.connect(addr).map_err(|e| Error::Reactor {
                shard: 1,
                source: std::io::Error::other(e),
            })?;
            match ctx.driver_event().await? {
                Event::Connected { conn: c, peer } if c == conn => assert_eq!(peer.node_id, 1),
                other => panic!("client got {other:?} before connecting"),
            }
            for i in 0..FRAMES {
                let sent = ctx.driver()?.send(conn, format!("msg-{i}").as_bytes());
                assert!(matches!(sent, Ok(SendOutcome::Queued)), "{sent:?}");
            }
            let mut acks = Vec::with_capacity(FRAMES);
            while acks.len() < FRAMES {
                match ctx.driver_event().await? {
                    Event::Frame { frame, .. } => {
                        acks.push(String::from_utf8(frame.to_vec()).unwrap())
                    }
                    other => panic!("client got {other:?}"),
                }
            }
            Ok::<_, Error>(acks)
        })
        .unwrap();

    let acks = client
        .join_timeout(HANG)
        .unwrap_or_else(|_| panic!("client hung"))
        .unwrap()
        .unwrap();
    let expected: Vec<String> = (0..FRAMES).map(|i| format!("ack:msg-{i}")).collect();
    assert_eq!(acks, expected);
    let echoed = server
        .join_timeout(HANG)
        .unwrap_or_else(|_| panic!("server hung"))
        .unwrap()
        .unwrap();
    assert_eq!(echoed, FRAMES);
    rt.shutdown().unwrap();
}

#[test]
fn shards_exchange_frames_through_drivers_spinning() {
    exchange(IdleStrategy::adaptive());
}

#[test]
fn shards_exchange_frames_through_drivers_parking() {
    // Every idle turn parks in io_uring_enter: completions and the cross-shard
    // channel (via the driver's eventfd unparker) must wake it.
    exchange(IdleStrategy::Park);
}

#[test]
fn driver_access_on_a_thread_reactor_shard_is_a_typed_error() {
    let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    let h = rt
        .spawn_on(0, || async {
            let ctx = ShardContext::current().unwrap();
            let direct = ctx.driver().err();
            let event = ctx.driver_event().await.err();
            (direct, event)
        })
        .unwrap();
    let (direct, event) = h.join().unwrap();
    assert!(matches!(direct, Some(Error::ReactorType { shard: 0, .. })));
    assert!(matches!(event, Some(Error::ReactorType { shard: 0, .. })));
    rt.shutdown().unwrap();
}
