//! Memory bounds against a hostile broker: whatever it sends, the client's memory stays
//! within a stated bound over what it held once connected.
//!
//! A counting global allocator tracks the bytes this test process holds and their peak. The
//! broker runs in the same process, so its own buffers count too: the bound covers both sides.
//! The cases take a lock so only one runs at a time and each peak is its own. Error kinds are
//! matched by name as in `tests/hostile.rs` ("protocol error" is `ErrorKind::Protocol`).

use fleetprov_testkit::hostile as broker;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use broker::*;
use fleetprov::client::{Client, MqttVersion};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    CURRENT.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size > layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One case at a time, so a peak belongs to one case.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a new peak from what is held now; returns that baseline.
fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// How far the peak rose over `baseline`.
fn peak_over(baseline: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
}

/// The bound: a few 100 KB packets in flight on both sides, TLS buffers, and slack.
const BOUND: usize = 4 << 20;
const FLOOD: usize = 2_000;
const FLOOD_PAYLOAD: usize = 100 * 1024;

/// Writes `FLOOD` packets made by `make(i)`, or fewer if the client closes first. Returns how
/// many went out.
async fn flood(c: &mut Conn, make: impl Fn(usize) -> Vec<u8>) -> usize {
    for n in 0..FLOOD {
        if c.send(&make(n)).await.is_err() {
            return n;
        }
    }
    FLOOD
}

/// 2,000 PUBLISHes of 100 KB, each with a new Topic Alias (the client allows none) while a request is
/// pending: the first is a protocol error; nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_flood_is_refused_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let b = Broker::start(|mut c| async move {
        let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
        c.send(&puback(true, pkid, None)).await?;
        let payload = vec![b'x'; FLOOD_PAYLOAD];
        // A new alias each time: a client that records aliases keeps every packet's topic,
        // and with it whatever buffer that topic points into.
        Ok(flood(&mut c, |n| {
            let alias = props(&[prop::u16(prop::TOPIC_ALIAS, n as u16 + 1)]);
            publish(true, "flood/aliased", 0, 0, &alias, &payload)
        })
        .await)
    })
    .await;
    let client = Client::connect(b.opts(MqttVersion::V5)).await.unwrap();
    let baseline = reset_peak();
    let e = client.create_keys_and_certificate().await.unwrap_err();
    let rise = peak_over(baseline);
    client.disconnect().await;
    let sent = b.join().await;
    eprintln!("aliased flood: {sent} packets sent, peak rose {rise} bytes");
    assert!(
        rise <= BOUND,
        "peak rose {rise} bytes over {baseline} while the broker sent {sent} aliased packets \
         (bound {BOUND})"
    );
    assert_eq!(e.kind.as_str(), "protocol error", "{e:?}");
}

/// 2,000 PUBLISHes of 100 KB on a topic nobody subscribed to, then the reply: each is dropped
/// as it arrives, the reply is taken, and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_flood_is_dropped_and_memory_stays_bounded() {
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let _serial = SERIAL.lock().await;
        let b = Broker::start(move |mut c| async move {
            let v5 = version == MqttVersion::V5;
            let (topic, pkid) = c.up_to_request(&connack_ok(v5)).await?;
            c.send(&puback(v5, pkid, None)).await?;
            let noise = publish0(v5, "flood/unrequested", &vec![b'x'; FLOOD_PAYLOAD]);
            let sent = flood(&mut c, |_| noise.clone()).await;
            c.send(&publish0(
                v5,
                &format!("{topic}/accepted"),
                &create_keys_accepted(),
            ))
            .await?;
            c.hold_open().await?;
            Ok(sent)
        })
        .await;
        let mut opts = b.opts(version);
        // 200 MB through TLS on a busy machine: room to finish, not a measurement.
        opts.operation_timeout = std::time::Duration::from_secs(50);
        let client = Client::connect(opts).await.unwrap();
        let baseline = reset_peak();
        let r = client.create_keys_and_certificate().await;
        let rise = peak_over(baseline);
        client.disconnect().await;
        let sent = b.join().await;
        eprintln!("{version:?} unrequested flood: {sent} packets, peak rose {rise} bytes");
        assert_eq!(sent, FLOOD);
        assert_eq!(r.unwrap().certificate_ownership_token, "hostile-token");
        assert!(
            rise <= BOUND,
            "{version:?}: peak rose {rise} bytes over {baseline} (bound {BOUND})"
        );
    }
}

/// A PUBLISH header announcing 256 MiB: refused from its header, never allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_announced_packet_is_never_allocated() {
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let _serial = SERIAL.lock().await;
        let b = Broker::start(move |mut c| async move {
            let v5 = version == MqttVersion::V5;
            let (_, pkid) = c.up_to_request(&connack_ok(v5)).await?;
            c.send(&puback(v5, pkid, None)).await?;
            // 64 KiB of body after the header, so a client that reads on would have some.
            let mut out = vec![0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x05];
            out.extend(b"hugex");
            out.extend(vec![0u8; 64 * 1024]);
            let _ = c.send(&out).await;
            c.hold_open().await
        })
        .await;
        let client = Client::connect(b.opts(version)).await.unwrap();
        let baseline = reset_peak();
        let e = client.create_keys_and_certificate().await.unwrap_err();
        let rise = peak_over(baseline);
        client.disconnect().await;
        eprintln!("{version:?} 256 MiB header: peak rose {rise} bytes");
        assert!(
            matches!(e.kind.as_str(), "protocol error" | "bad reply"),
            "{version:?}: {e:?}"
        );
        assert!(
            rise <= BOUND,
            "{version:?}: peak rose {rise} bytes (bound {BOUND})"
        );
    }
}
