//! The values of the policy variables (and condition keys) for one connection: its client id,
//! the thing its certificate is attached to, and the certificate's subject and issuer fields.

use std::collections::BTreeMap;

use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::registry::ThingRecord;

/// Policy variable names (as AWS spells them, without `${}`) and their values. A name that is
/// absent has no value: a resource using it matches nothing, and conditions on it follow IAM's
/// rules for missing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    values: BTreeMap<String, String>,
}

/// X.509 name attributes AWS exposes as `iot:Certificate.Subject.*` and `iot:Certificate.Issuer.*`,
/// by OID (2.5.4.x).
const NAME_ATTRIBUTES: &[(u64, &str)] = &[
    (3, "CommonName"),
    (4, "Surname"),
    (5, "SerialNumber"),
    (6, "Country"),
    (8, "State"),
    (10, "Organization"),
    (11, "OrganizationalUnit"),
    (12, "Title"),
    (42, "GivenName"),
    (43, "Initials"),
    (44, "GenerationQualifier"),
    (46, "DistinguishedNameQualifier"),
    (65, "Pseudonym"),
];

/// What the policy variables need from a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertFields {
    pub certificate_id: String,
    /// Subject attributes by AWS's name (`CommonName`, ...): the first value of each.
    pub subject: BTreeMap<String, String>,
    pub issuer: BTreeMap<String, String>,
    /// The certificate's serial number, hex as AWS shows it.
    pub serial_number: Option<String>,
}

fn name_fields(name: &X509Name<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for attr in name.iter_attributes() {
        let Some(arcs) = attr.attr_type().iter() else {
            continue;
        };
        let arcs: Vec<u64> = arcs.collect();
        let [2, 5, 4, n] = arcs.as_slice() else {
            continue;
        };
        let Some((_, field)) = NAME_ATTRIBUTES.iter().find(|(oid, _)| oid == n) else {
            continue;
        };
        if let Ok(value) = attr.as_str() {
            out.entry((*field).to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    out
}

impl CertFields {
    /// Read the fields of a DER certificate; one that cannot be parsed gives its id only.
    pub fn from_der(der: &[u8]) -> CertFields {
        let mut fields = CertFields {
            certificate_id: crate::cert::certificate_id(der),
            ..CertFields::default()
        };
        if let Ok((_, cert)) = X509Certificate::from_der(der) {
            fields.subject = name_fields(cert.subject());
            fields.issuer = name_fields(cert.issuer());
            fields.serial_number = Some(cert.raw_serial_as_string().replace(':', ""));
        }
        fields
    }
}

impl Context {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_owned(), value.to_owned());
    }

    /// The variables of a connection with `client_id`, certificate `cert`, and `thing`: the thing
    /// the certificate is attached to whose name is the client id (AWS's rule for the thing
    /// variables), if there is one.
    pub fn for_connection(
        client_id: &str,
        cert: &CertFields,
        thing: Option<&ThingRecord>,
    ) -> Context {
        let mut ctx = Context::default();
        ctx.set("iot:ClientId", client_id);
        ctx.set("iot:CertificateId", &cert.certificate_id);
        for (prefix, fields) in [
            ("iot:Certificate.Subject.", &cert.subject),
            ("iot:Certificate.Issuer.", &cert.issuer),
        ] {
            for (field, value) in fields {
                ctx.set(&format!("{prefix}{field}"), value);
            }
        }
        if let Some(serial) = &cert.serial_number {
            ctx.set("iot:Certificate.SerialNumber", serial);
        }
        ctx.set(
            "iot:Connection.Thing.IsAttached",
            if thing.is_some() { "true" } else { "false" },
        );
        if let Some(thing) = thing {
            ctx.set("iot:Connection.Thing.ThingName", &thing.name);
            if let Some(t) = &thing.thing_type {
                ctx.set("iot:Connection.Thing.ThingTypeName", t);
            }
            for (k, v) in &thing.attributes {
                ctx.set(&format!("iot:Connection.Thing.Attributes[{k}]"), v);
            }
        }
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_variables() {
        let cert = CertFields {
            certificate_id: "abc".into(),
            subject: [("CommonName".to_owned(), "dev-1".to_owned())].into(),
            issuer: [("Organization".to_owned(), "Acme".to_owned())].into(),
            serial_number: Some("0a1b".into()),
        };
        let ctx = Context::for_connection("dev-1", &cert, None);
        assert_eq!(ctx.get("iot:ClientId"), Some("dev-1"));
        assert_eq!(ctx.get("iot:CertificateId"), Some("abc"));
        assert_eq!(ctx.get("iot:Certificate.Subject.CommonName"), Some("dev-1"));
        assert_eq!(ctx.get("iot:Certificate.Issuer.Organization"), Some("Acme"));
        assert_eq!(ctx.get("iot:Certificate.Subject.Organization"), None);
        assert_eq!(ctx.get("iot:Certificate.SerialNumber"), Some("0a1b"));
        assert_eq!(ctx.get("iot:Connection.Thing.IsAttached"), Some("false"));
        assert_eq!(ctx.get("iot:Connection.Thing.ThingName"), None);

        let thing = ThingRecord {
            name: "dev-1".into(),
            attributes: [("fleet".to_owned(), "blue".to_owned())].into(),
            thing_type: Some("meter".into()),
            ..ThingRecord::default()
        };
        let ctx = Context::for_connection("dev-1", &cert, Some(&thing));
        assert_eq!(ctx.get("iot:Connection.Thing.IsAttached"), Some("true"));
        assert_eq!(ctx.get("iot:Connection.Thing.ThingName"), Some("dev-1"));
        assert_eq!(ctx.get("iot:Connection.Thing.ThingTypeName"), Some("meter"));
        assert_eq!(
            ctx.get("iot:Connection.Thing.Attributes[fleet]"),
            Some("blue")
        );
        assert_eq!(ctx.get("iot:Connection.Thing.Attributes[other]"), None);
    }

    #[test]
    fn certificate_fields_from_der() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dev-9");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "NZ");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = CertFields::from_der(cert.der());
        assert_eq!(
            f.subject.get("CommonName").map(String::as_str),
            Some("dev-9")
        );
        assert_eq!(
            f.subject.get("Organization").map(String::as_str),
            Some("Acme")
        );
        assert_eq!(f.subject.get("Country").map(String::as_str), Some("NZ"));
        // Self-signed: the issuer is the subject.
        assert_eq!(f.issuer, f.subject);
        assert_eq!(f.serial_number.as_deref(), Some("0abc"));
        assert_eq!(f.certificate_id, crate::cert::certificate_id(cert.der()));
        let junk = CertFields::from_der(b"junk");
        assert!(junk.subject.is_empty() && junk.serial_number.is_none());
    }
}
