//! Topic names of the fleet-provisioning MQTT API.

use std::fmt;

use crate::error::Error;

/// Payload encoding; it is part of every topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadFormat {
    /// `json`.
    #[default]
    Json,
    /// `cbor`: maps with the JSON field names, as AWS's embedded C library sends.
    Cbor,
}

impl PayloadFormat {
    /// The topic suffix: `json` or `cbor`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Cbor => "cbor",
        }
    }
}

/// The three provisioning operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// CreateKeysAndCertificate.
    CreateKeys,
    /// CreateCertificateFromCsr.
    CreateFromCsr,
    /// RegisterThing.
    RegisterThing,
}

impl Operation {
    /// AWS's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateKeys => "CreateKeysAndCertificate",
            Operation::CreateFromCsr => "CreateCertificateFromCsr",
            Operation::RegisterThing => "RegisterThing",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Operation::CreateKeys => 0,
            Operation::CreateFromCsr => 1,
            Operation::RegisterThing => 2,
        }
    }
}

/// The request topic of an operation and its two reply topics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topics {
    /// Where the request is published.
    pub request: String,
    /// Where the service answers on success.
    pub accepted: String,
    /// Where the service answers with a rejection.
    pub rejected: String,
}

impl Topics {
    fn from_request(request: String) -> Topics {
        Topics {
            accepted: format!("{request}/accepted"),
            rejected: format!("{request}/rejected"),
            request,
        }
    }
}

/// Longest template name AWS accepts.
pub const MAX_TEMPLATE_NAME_LEN: usize = 36;

/// A provisioning template name, checked when made: 1 to 36 characters of `[A-Za-z0-9_-]`.
///
/// The name becomes a topic level, so this is what keeps `/`, `+` and `#` out of topics:
/// [`register_thing_topics`] cannot fail.
///
/// ```
/// use fleetprov::protocol::TemplateName;
/// let name = TemplateName::new("FleetTemplate")?;
/// assert_eq!(name.as_str(), "FleetTemplate");
/// assert!(TemplateName::new("Fleet/Template").is_err());
/// # Ok::<(), fleetprov::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateName(String);

impl TemplateName {
    /// Checks `name` by AWS's rule; [`crate::ErrorKind::InvalidArgument`] says what is wrong.
    pub fn new(name: &str) -> Result<TemplateName, Error> {
        if name.is_empty() {
            return Err(Error::invalid("template name is empty"));
        }
        if name.len() > MAX_TEMPLATE_NAME_LEN {
            return Err(Error::invalid(format!(
                "template name is {} characters long, the limit is {MAX_TEMPLATE_NAME_LEN}",
                name.len()
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(Error::invalid(format!(
                "template name contains {c:?}; only letters, digits, '_' and '-' are allowed"
            )));
        }
        Ok(TemplateName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TemplateName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TemplateName {
    type Err = Error;
    fn from_str(s: &str) -> Result<TemplateName, Error> {
        TemplateName::new(s)
    }
}

impl TryFrom<&str> for TemplateName {
    type Error = Error;
    fn try_from(s: &str) -> Result<TemplateName, Error> {
        TemplateName::new(s)
    }
}

impl TryFrom<&String> for TemplateName {
    type Error = Error;
    fn try_from(s: &String) -> Result<TemplateName, Error> {
        TemplateName::new(s)
    }
}

impl TryFrom<String> for TemplateName {
    type Error = Error;
    fn try_from(s: String) -> Result<TemplateName, Error> {
        TemplateName::new(&s)
    }
}

impl From<&TemplateName> for TemplateName {
    fn from(name: &TemplateName) -> TemplateName {
        name.clone()
    }
}

/// Topics of CreateKeysAndCertificate: `$aws/certificates/create/<fmt>`.
pub fn create_keys_topics(fmt: PayloadFormat) -> Topics {
    Topics::from_request(format!("$aws/certificates/create/{}", fmt.as_str()))
}

/// Topics of CreateCertificateFromCsr: `$aws/certificates/create-from-csr/<fmt>`.
pub fn create_from_csr_topics(fmt: PayloadFormat) -> Topics {
    Topics::from_request(format!(
        "$aws/certificates/create-from-csr/{}",
        fmt.as_str()
    ))
}

/// Topics of RegisterThing: `$aws/provisioning-templates/<template>/provision/<fmt>`.
pub fn register_thing_topics(template: &TemplateName, fmt: PayloadFormat) -> Topics {
    Topics::from_request(format!(
        "$aws/provisioning-templates/{template}/provision/{}",
        fmt.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::collections::HashSet;

    #[test]
    fn all_eighteen_topics() {
        let mut all = HashSet::new();
        for fmt in [PayloadFormat::Json, PayloadFormat::Cbor] {
            let f = fmt.as_str();
            let t = create_keys_topics(fmt);
            assert_eq!(t.request, format!("$aws/certificates/create/{f}"));
            assert_eq!(t.accepted, format!("$aws/certificates/create/{f}/accepted"));
            assert_eq!(t.rejected, format!("$aws/certificates/create/{f}/rejected"));
            let c = create_from_csr_topics(fmt);
            assert_eq!(c.request, format!("$aws/certificates/create-from-csr/{f}"));
            assert_eq!(
                c.accepted,
                format!("$aws/certificates/create-from-csr/{f}/accepted")
            );
            assert_eq!(
                c.rejected,
                format!("$aws/certificates/create-from-csr/{f}/rejected")
            );
            let r = register_thing_topics(&TemplateName::new("FleetTemplate").unwrap(), fmt);
            assert_eq!(
                r.request,
                format!("$aws/provisioning-templates/FleetTemplate/provision/{f}")
            );
            assert_eq!(
                r.accepted,
                format!("$aws/provisioning-templates/FleetTemplate/provision/{f}/accepted")
            );
            assert_eq!(
                r.rejected,
                format!("$aws/provisioning-templates/FleetTemplate/provision/{f}/rejected")
            );
            for t in [t, c, r] {
                all.extend([t.request, t.accepted, t.rejected]);
            }
        }
        assert_eq!(all.len(), 18);
    }

    #[test]
    fn template_names() {
        for good in ["a", "FleetTemplate", "my_template-2", &"x".repeat(36)] {
            assert_eq!(TemplateName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "a/b",
            "a+",
            "#",
            "a b",
            "é",
            "tmpl/../x",
            &"x".repeat(37),
        ] {
            let e = TemplateName::new(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad:?}");
            let e = bad.parse::<TemplateName>().unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert!(TemplateName::new(&"x".repeat(37))
            .unwrap_err()
            .message
            .contains("37"));
    }

    #[test]
    fn operation_names() {
        assert_eq!(Operation::CreateKeys.name(), "CreateKeysAndCertificate");
        assert_eq!(Operation::CreateFromCsr.name(), "CreateCertificateFromCsr");
        assert_eq!(Operation::RegisterThing.name(), "RegisterThing");
    }
}
