//! A connection's QoS 1 deliveries as state without I/O: packet ids, the client's Receive
//! Maximum, and the deliveries held until an acknowledgement makes room. The connection writes
//! what this returns; the time is given, never read.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::codec::Delivery;

#[derive(Debug)]
pub(super) struct Outbound {
    next_pkid: u16,
    /// MQTT 5 Receive Maximum: QoS 1 deliveries the client takes unacknowledged at once;
    /// `usize::MAX` when the client announced none (and on MQTT 3.1.1).
    receive_max: usize,
    /// Packet ids of QoS 1 deliveries not yet acknowledged.
    in_flight: HashSet<u16>,
    /// QoS 1 deliveries waiting for room under the client's Receive Maximum, with the time
    /// they started waiting (it counts against their Message Expiry Interval).
    held: VecDeque<(Delivery, Instant)>,
}

impl Outbound {
    pub(super) fn new() -> Outbound {
        Outbound {
            next_pkid: 0,
            receive_max: usize::MAX,
            in_flight: HashSet::new(),
            held: VecDeque::new(),
        }
    }

    /// The client's Receive Maximum from its CONNECT.
    pub(super) fn set_receive_max(&mut self, max: u16) {
        // 0 is a protocol error; taken as 1 rather than holding every delivery forever.
        self.receive_max = usize::from(max.max(1));
    }

    /// How many deliveries wait for room.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// A delivery to send: `Some` with its packet id to write now, `None` when it waits for
    /// room under the Receive Maximum.
    pub(super) fn offer(&mut self, d: Delivery, now: Instant) -> Option<Delivery> {
        if d.qos > 0 && self.in_flight.len() >= self.receive_max {
            self.held.push_back((d, now));
            return None;
        }
        Some(self.number(d))
    }

    /// A PUBACK from the client: the held deliveries it makes room for, to write now, without
    /// those whose Message Expiry Interval passed while they waited. An id not in flight
    /// changes nothing (deliveries are not retransmitted: clean sessions only).
    pub(super) fn ack(&mut self, pkid: u16, now: Instant) -> Vec<Delivery> {
        let mut ready = Vec::new();
        if self.in_flight.remove(&pkid) {
            while self.in_flight.len() < self.receive_max {
                let Some((d, since)) = self.held.pop_front() else {
                    break;
                };
                if let Some(d) = expire(d, now.saturating_duration_since(since)) {
                    ready.push(self.number(d));
                }
            }
        }
        ready
    }

    /// Give a QoS 1 delivery a packet id no unacknowledged delivery holds.
    fn number(&mut self, mut d: Delivery) -> Delivery {
        if d.qos > 0 {
            loop {
                self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
                if !self.in_flight.contains(&self.next_pkid) {
                    break;
                }
            }
            d.pkid = self.next_pkid;
            // Only MQTT 5 clients announce a Receive Maximum; 3.1.1 acks need no bookkeeping.
            if self.receive_max != usize::MAX {
                self.in_flight.insert(d.pkid);
            }
        }
        d
    }
}

/// A delivery that waited `waited` before it could be sent: `None` once its Message Expiry
/// Interval has passed, otherwise with the interval less the time waited (MQTT-3.3.2-5, -6).
fn expire(mut d: Delivery, waited: Duration) -> Option<Delivery> {
    if let Some(interval) = d
        .properties
        .as_mut()
        .and_then(|p| p.message_expiry_interval.as_mut())
    {
        let waited = u32::try_from(waited.as_secs()).unwrap_or(u32::MAX);
        if waited >= *interval {
            return None;
        }
        *interval -= waited;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::codec::PublishProperties;
    use bytes::Bytes;

    fn delivery(topic: &str, qos: u8, expiry: Option<u32>) -> Delivery {
        Delivery {
            topic: topic.into(),
            qos,
            pkid: 0,
            payload: Bytes::new(),
            properties: Some(PublishProperties {
                message_expiry_interval: expiry,
                ..Default::default()
            }),
        }
    }

    fn with_interval(interval: Option<u32>) -> Delivery {
        delivery("t", 1, interval)
    }

    /// Offer `topics` at `now`: the packet ids of those sent, `None` for those held.
    fn offer_all(out: &mut Outbound, topics: &[&str], now: Instant) -> Vec<Option<u16>> {
        topics
            .iter()
            .map(|t| out.offer(delivery(t, 1, None), now).map(|d| d.pkid))
            .collect()
    }

    fn topics(ds: &[Delivery]) -> Vec<&str> {
        ds.iter().map(|d| d.topic.as_str()).collect()
    }

    #[test]
    fn a_held_delivery_loses_the_time_it_waited_and_expires() {
        let left = |d: Option<Delivery>| d.map(|d| d.properties.unwrap().message_expiry_interval);
        assert_eq!(
            left(expire(
                with_interval(Some(60)),
                Duration::from_millis(2_200)
            )),
            Some(Some(58))
        );
        assert_eq!(
            left(expire(with_interval(Some(1)), Duration::from_millis(2_200))),
            None
        );
        assert_eq!(
            left(expire(with_interval(Some(2)), Duration::from_secs(2))),
            None
        );
        assert_eq!(
            left(expire(with_interval(None), Duration::from_secs(3_600))),
            Some(None)
        );
    }

    #[test]
    fn without_a_receive_maximum_nothing_is_held_or_tracked() {
        let now = Instant::now();
        let mut out = Outbound::new();
        let sent = offer_all(&mut out, &["a", "b", "c"], now);
        assert_eq!(sent, [Some(1), Some(2), Some(3)]);
        assert_eq!(out.held(), 0);
        // MQTT 3.1.1 acks need no bookkeeping: nothing was in flight, nothing is released.
        assert!(out.ack(1, now).is_empty());
        assert!(out.in_flight.is_empty());
    }

    #[test]
    fn the_receive_maximum_holds_deliveries_until_an_ack_makes_room() {
        let now = Instant::now();
        let mut out = Outbound::new();
        out.set_receive_max(2);
        let sent = offer_all(&mut out, &["a", "b", "c", "d"], now);
        assert_eq!(sent, [Some(1), Some(2), None, None]);
        assert_eq!(out.held(), 2);
        // An id not in flight releases nothing.
        assert!(out.ack(7, now).is_empty());
        let released = out.ack(1, now);
        assert_eq!(topics(&released), ["c"]);
        assert_eq!(released[0].pkid, 3);
        assert_eq!(out.held(), 1);
        // A second ack of the same id is not in flight any more.
        assert!(out.ack(1, now).is_empty());
        let released = out.ack(2, now);
        assert_eq!(topics(&released), ["d"]);
        assert_eq!(released[0].pkid, 4);
    }

    #[test]
    fn qos_0_is_never_held_and_takes_no_packet_id() {
        let now = Instant::now();
        let mut out = Outbound::new();
        out.set_receive_max(1);
        assert_eq!(offer_all(&mut out, &["a"], now), [Some(1)]);
        let d = out.offer(delivery("q0", 0, None), now).unwrap();
        assert_eq!((d.topic.as_str(), d.pkid), ("q0", 0));
        assert_eq!(out.held(), 0);
    }

    #[test]
    fn a_receive_maximum_of_0_is_taken_as_1() {
        let now = Instant::now();
        let mut out = Outbound::new();
        out.set_receive_max(0);
        assert_eq!(offer_all(&mut out, &["a", "b"], now), [Some(1), None]);
    }

    #[test]
    fn packet_ids_wrap_past_65535_and_skip_those_in_flight() {
        let now = Instant::now();
        let mut out = Outbound::new();
        out.set_receive_max(10);
        out.next_pkid = 65_533;
        out.in_flight.insert(1);
        assert_eq!(
            offer_all(&mut out, &["a", "b", "c"], now),
            [Some(65_534), Some(65_535), Some(2)]
        );
    }

    #[test]
    fn a_delivery_that_expired_while_held_is_dropped_and_the_next_takes_its_room() {
        let start = Instant::now();
        let mut out = Outbound::new();
        out.set_receive_max(1);
        assert_eq!(offer_all(&mut out, &["a"], start), [Some(1)]);
        assert!(out.offer(delivery("short", 1, Some(5)), start).is_none());
        assert!(out.offer(delivery("long", 1, Some(60)), start).is_none());
        let released = out.ack(1, start + Duration::from_secs(10));
        assert_eq!(topics(&released), ["long"]);
        let left = released[0].properties.as_ref().unwrap();
        assert_eq!(left.message_expiry_interval, Some(50));
        assert_eq!(out.held(), 0);
    }
}
