//! Topic names and topic filters; the fleet-provisioning topics are [`crate::request_topic`]'s.
//!
//! rumqttc's own matcher refuses every topic that starts with `$`, which would make the
//! `$aws/...` reply topics undeliverable, so matching is done here.

pub(crate) use crate::request_topic::{is_reply_topic, request_format};

/// AWS IoT's limit on a topic name or filter. It also bounds what a connection's subscriptions
/// hold: the subscription count alone would let each filter be as large as a packet.
pub(crate) const MAX_TOPIC_BYTES: usize = 256;

/// A topic name a client may publish to: 1-256 bytes, no wildcards, no NUL.
pub(crate) fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES && !topic.contains(['+', '#', '\0'])
}

/// A topic filter as MQTT defines it: `#` only as the whole last level, `+` only as a whole level;
/// at most 256 bytes.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_BYTES || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == last
        } else if level.contains('+') {
            *level == "+"
        } else {
            true
        }
    })
}

/// A shared subscription's filter, `$share/GROUP/FILTER`.
pub(crate) fn is_shared_filter(filter: &str) -> bool {
    filter.starts_with("$share/")
}

/// The group and the topic filter of a valid shared subscription filter: the group is one
/// non-empty level without wildcards, the filter a valid filter.
pub(crate) fn shared_parts(filter: &str) -> Option<(&str, &str)> {
    let (group, inner) = filter.strip_prefix("$share/")?.split_once('/')?;
    let ok = !group.is_empty() && !group.contains(['+', '#']) && valid_filter(inner);
    ok.then_some((group, inner))
}

/// Does `filter` match `topic`? A wildcard in the first level never matches a topic that starts
/// with `$` (MQTT 3.1.1 section 4.7.2, MQTT 5 section 4.7.2), but an explicit `$aws/...` level does.
pub(crate) fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `sport/#` also matches `sport` itself.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_validation() {
        for ok in [
            "a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "$aws/+/x", "a//b",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a/++", "a\0b"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_filter(&"a".repeat(MAX_TOPIC_BYTES)));
        assert!(!valid_filter(&"a".repeat(MAX_TOPIC_BYTES + 1)));
        // The longest reply topic a valid template name gives is well inside the limit.
        let longest = format!(
            "$aws/provisioning-templates/{}/provision/json/rejected",
            "t".repeat(36)
        );
        assert!(valid_filter(&longest) && is_reply_topic(&longest));
    }

    #[test]
    fn topic_name_validation() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("$aws/certificates/create/json"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(valid_topic_name(&"a".repeat(MAX_TOPIC_BYTES)));
        assert!(!valid_topic_name(&"a".repeat(MAX_TOPIC_BYTES + 1)));
    }

    #[test]
    fn shared_filters() {
        assert_eq!(shared_parts("$share/g/a/+"), Some(("g", "a/+")));
        assert_eq!(shared_parts("$share/g/#"), Some(("g", "#")));
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/a/#/b",
            "$share/g/",
            "a/b",
        ] {
            assert_eq!(shared_parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(filter_matches("a/b", "a/b"));
        assert!(!filter_matches("a/b", "a/c"));
        assert!(filter_matches("a/+", "a/b"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a/b"));
        assert!(filter_matches("+/+", "/x"));
        assert!(!filter_matches("a/b/c", "a/b"));
        assert!(filter_matches("a//b", "a//b"));
    }

    #[test]
    fn dollar_topics() {
        let reply = "$aws/certificates/create/json/accepted";
        assert!(!filter_matches("#", reply));
        assert!(!filter_matches(
            "+/certificates/create/json/accepted",
            reply
        ));
        assert!(filter_matches(reply, reply));
        assert!(filter_matches("$aws/certificates/create/json/+", reply));
        assert!(filter_matches("$aws/#", reply));
        assert!(!filter_matches(
            "$aws/certificates/create/json/rejected",
            reply
        ));
    }
}
