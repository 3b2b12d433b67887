//! Heap allocations per publish, counted by a global allocator that counts
//! the allocations of the thread that makes them: a client's publish frame
//! parsed, published, fanned out to one subscriber's outbox and written
//! (taken from the outbox and dropped, as the subscriber's writer does),
//! and the publisher's ack encoded. Counts, not timings: deterministic.
//!
//! A test binary of its own, not a module of an area's binary like most
//! tests: a `#[global_allocator]` is the allocator of every test in its
//! binary, and a binary has only one (`tests/tools` already brings the fuzz
//! oracle's). Alone, the counter sees no test but these.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;

use ringcast::broker::Broker;
use ringcast::config::SlowConsumerPolicy;
use ringcast::metrics::Metrics;
use ringcast::send::{Outbox, Pending, QueueLimits};
use ringcast::wire::reply;
use ringcast::wire::request::{parse_client_frame, ClientFrame, Replay, Request};
use ringcast::wire::timestamp::Timestamp;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to `System` unchanged; counting touches
// only a thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

/// Allocations made by this thread while `work` runs.
fn allocations_in(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.get();
    work();
    ALLOCATIONS.get() - before
}

const TOPIC: &str = "orders";
const PUBLISHES: u64 = 1000;
/// More than the ring holds, so the ring is full and evicting while
/// counted, as on a busy topic.
const WARM_UP: u64 = 300;

/// A publish frame as a client sends it, with a payload of about `size`
/// bytes: nested JSON, escapes and a long string.
fn publish_frame(size: usize) -> Vec<u8> {
    let note = "x".repeat(size.saturating_sub(60));
    format!(
        r#"{{"type":"publish","topic":"{TOPIC}","request_id":"r-1","message":{{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{{"order":42,"items":[1,2.5,"\u00e9"],"note":"{note}"}}}}}}"#
    )
    .into_bytes()
}

/// A broker with `TOPIC` and one subscriber, and what `PUBLISHES`
/// publishes cost: (allocations of the publishes and fan-outs, allocations
/// of the acks).
fn allocations_per_publish(payload_size: usize) -> (u64, u64) {
    let broker = Broker::new(100, 1, Arc::new(Metrics::default()));
    broker
        .create_topic(TOPIC, broker.default_options())
        .expect("fresh broker");
    let outbox = Arc::new(Outbox::new(
        QueueLimits {
            events: 1024,
            bytes: usize::MAX,
        },
        SlowConsumerPolicy::Disconnect,
    ));
    let topic = broker.topic(TOPIC).expect("topic exists");
    assert!(topic.subscribe(1, &outbox, None, Replay::Last(0), |_| {}));
    let frame = publish_frame(payload_size);
    let mut input = frame.clone();
    let mut batch = VecDeque::new();
    let mut publish = |counted: &mut (u64, u64)| {
        input.copy_from_slice(&frame);
        let mut request = None;
        counted.0 += allocations_in(|| {
            let Ok(ClientFrame {
                request_id,
                request: Request::Publish { topic, message },
            }) = parse_client_frame(&mut input)
            else {
                panic!("not a publish")
            };
            let published = broker.publish(topic, &message).expect("published");
            request = Some((request_id, topic, published));
        });
        let (request_id, topic, published) = request.expect("parsed");
        counted.1 += allocations_in(|| {
            drop(reply::publish_ack(
                request_id,
                topic,
                published.seq,
                published.duplicate,
                Timestamp::at(published.at),
            ))
        });
        // The subscriber's writer takes the event and, once written, drops it.
        outbox.settle(&Pending::default(), &mut batch, usize::MAX);
        let mut written = Pending::default();
        batch.drain(..).for_each(|queued| written.add(&queued));
        outbox.settle(&written, &mut batch, 0);
    };
    let mut ignored = (0, 0);
    (0..WARM_UP).for_each(|_| publish(&mut ignored));
    let mut counted = (0, 0);
    (0..PUBLISHES).for_each(|_| publish(&mut counted));
    counted
}

/// Parsing allocates nothing, and neither does the fan-out: the event's
/// frame is one buffer, shared by the ring and the outbox through one
/// `Bytes` header (the second allocation, made when it is first shared).
/// The ack is one buffer, never shared. (Before issue 15: 6 and 2.)
#[test]
fn a_publish_allocates_only_its_event_frame() {
    for payload_size in [128, 4096] {
        let (publish, ack) = allocations_per_publish(payload_size);
        println!(
            "{payload_size} B payload: {publish} allocations in {PUBLISHES} publishes, {ack} in their acks"
        );
        assert_eq!(publish, 2 * PUBLISHES, "{payload_size} B payload");
        assert_eq!(ack, PUBLISHES, "{payload_size} B payload");
    }
}
