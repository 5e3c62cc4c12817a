//! The fleet-provisioning request topics: the one parser of them, used by the broker (which
//! topics are requests, which filters a claim may subscribe to), the service (which operation, in
//! which format) and the throttle (which API a request calls).

const CREATE_KEYS: &str = "$aws/certificates/create/";
const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/";
const TEMPLATES: &str = "$aws/provisioning-templates/";
const PROVISION: &str = "/provision/";

/// What a request topic asks for; `Register` carries the template name as the topic spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation<'a> {
    CreateKeys,
    CreateFromCsr,
    Register(&'a str),
}

/// Request and reply encoding, from the last level of the request topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json = 0,
    Cbor = 1,
}

/// The operation of a request topic and its payload format. The template name is not checked
/// here: the service answers a bad one with a rejection.
pub(crate) fn parse(topic: &str) -> Option<(Operation<'_>, Format)> {
    let format = |rest: &str| match rest {
        "json" => Some(Format::Json),
        "cbor" => Some(Format::Cbor),
        _ => None,
    };
    if let Some(rest) = topic.strip_prefix(CREATE_KEYS) {
        return Some((Operation::CreateKeys, format(rest)?));
    }
    if let Some(rest) = topic.strip_prefix(CREATE_FROM_CSR) {
        return Some((Operation::CreateFromCsr, format(rest)?));
    }
    let rest = topic.strip_prefix(TEMPLATES)?;
    let at = rest.rfind(PROVISION)?;
    let format = format(&rest[at + PROVISION.len()..])?;
    Some((Operation::Register(&rest[..at]), format))
}

/// Is `topic` one of the fleet-provisioning request topics the endpoint routes to the service
/// (any template name that is one non-empty level without wildcards, json or cbor)?
pub(crate) fn request_format(topic: &str) -> Option<Format> {
    let (operation, format) = parse(topic)?;
    let routed = match operation {
        Operation::Register(name) => !name.is_empty() && !name.contains(['/', '+', '#']),
        Operation::CreateKeys | Operation::CreateFromCsr => true,
    };
    routed.then_some(format)
}

/// Is `filter` exactly the accepted or rejected reply topic of a provisioning request?
/// This is all a claim certificate may subscribe to under the seed's claim policy.
pub(crate) fn is_reply_topic(filter: &str) -> bool {
    let request = filter
        .strip_suffix("/accepted")
        .or_else(|| filter.strip_suffix("/rejected"));
    request.is_some_and(|r| request_format(r).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_template_names() {
        assert_eq!(
            parse("$aws/certificates/create/cbor"),
            Some((Operation::CreateKeys, Format::Cbor))
        );
        assert_eq!(
            parse("$aws/certificates/create-from-csr/json"),
            Some((Operation::CreateFromCsr, Format::Json))
        );
        // Names the service rejects still parse, so the device gets an answer.
        for name in ["FleetTemplate", "", "a/b", "a.b"] {
            let topic = format!("{TEMPLATES}{name}{PROVISION}json");
            assert_eq!(
                parse(&topic),
                Some((Operation::Register(name), Format::Json)),
                "{topic}"
            );
        }
        assert_eq!(parse("$aws/provisioning-templates/provision/json"), None);
        assert_eq!(parse("$aws/provisioning-templates/T/provision"), None);
    }

    #[test]
    fn request_topics() {
        assert_eq!(
            request_format("$aws/certificates/create/json"),
            Some(Format::Json)
        );
        assert_eq!(
            request_format("$aws/certificates/create-from-csr/cbor"),
            Some(Format::Cbor)
        );
        assert_eq!(
            request_format("$aws/provisioning-templates/FleetTemplate/provision/json"),
            Some(Format::Json)
        );
        for no in [
            "$aws/certificates/create",
            "$aws/certificates/create/xml",
            "$aws/certificates/create/json/accepted",
            "$aws/provisioning-templates//provision/json",
            "$aws/provisioning-templates/a/b/provision/json",
            "aws/certificates/create/json",
        ] {
            assert_eq!(request_format(no), None, "{no}");
        }
    }

    #[test]
    fn reply_topics() {
        assert!(is_reply_topic("$aws/certificates/create/json/accepted"));
        assert!(is_reply_topic(
            "$aws/provisioning-templates/T/provision/json/rejected"
        ));
        assert!(!is_reply_topic("$aws/certificates/create/json"));
        assert!(!is_reply_topic("$aws/certificates/create/json/+"));
        assert!(!is_reply_topic("$aws/certificates/+/json/accepted"));
        assert!(!is_reply_topic("#"));
    }
}
