//! A registered thing as a template creates it, or changes it by its `OverrideSettings`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ThingRecord;
use crate::aws_limits::check_attribute_count;
use crate::template::{OverrideSetting, ThingSpec};

pub(super) fn new_thing(spec: &ThingSpec) -> ThingRecord {
    let mut groups = Vec::new();
    for g in &spec.thing_groups {
        push_unique(&mut groups, g);
    }
    ThingRecord {
        name: spec.thing_name.clone(),
        attributes: spec.attributes.clone(),
        thing_type: spec.thing_type_name.clone(),
        groups,
        billing_group: spec.billing_group.clone(),
        certificate_ids: Vec::new(),
        policies: Vec::new(),
    }
}

/// The existing thing updated by the template according to its `OverrideSettings`.
pub(super) fn override_thing(
    existing: &ThingRecord,
    spec: &ThingSpec,
) -> Result<ThingRecord, String> {
    let setting = |property: &str| {
        spec.overrides
            .get(property)
            .copied()
            .unwrap_or(OverrideSetting::DoNothing)
    };
    let conflict = |property: &str| {
        format!(
            "thing {} already exists with a different {property} and its OverrideSettings is FAIL",
            existing.name
        )
    };
    let mut thing = existing.clone();

    if !spec.attributes.is_empty() {
        match setting("AttributePayload") {
            OverrideSetting::DoNothing => {}
            OverrideSetting::Replace => thing.attributes = spec.attributes.clone(),
            OverrideSetting::Merge => thing
                .attributes
                .extend(spec.attributes.iter().map(|(k, v)| (k.clone(), v.clone()))),
            OverrideSetting::Fail => {
                if thing.attributes != spec.attributes {
                    return Err(conflict("AttributePayload"));
                }
            }
        }
    }
    if !spec.thing_groups.is_empty() {
        match setting("ThingGroups") {
            OverrideSetting::DoNothing => {}
            OverrideSetting::Replace => {
                thing.groups.clear();
                for g in &spec.thing_groups {
                    push_unique(&mut thing.groups, g);
                }
            }
            OverrideSetting::Merge => {
                for g in &spec.thing_groups {
                    push_unique(&mut thing.groups, g);
                }
            }
            OverrideSetting::Fail => {
                let mut wanted = spec.thing_groups.clone();
                let mut have = thing.groups.clone();
                wanted.sort();
                wanted.dedup();
                have.sort();
                if wanted != have {
                    return Err(conflict("ThingGroups"));
                }
            }
        }
    }
    // MERGE has no meaning for a single value; the template parser refuses it there.
    for (property, new, slot) in [
        (
            "ThingTypeName",
            &spec.thing_type_name,
            &mut thing.thing_type,
        ),
        (
            "BillingGroup",
            &spec.billing_group,
            &mut thing.billing_group,
        ),
    ] {
        let Some(new) = new else { continue };
        match setting(property) {
            OverrideSetting::DoNothing => {}
            OverrideSetting::Replace | OverrideSetting::Merge => *slot = Some(new.clone()),
            OverrideSetting::Fail => {
                if slot.as_ref() != Some(new) {
                    return Err(conflict(property));
                }
            }
        }
    }
    // A MERGE can take the thing past AWS's attribute limit, which the template alone cannot.
    check_attribute_count(thing.attributes.len(), thing.thing_type.is_some())
        .map_err(|e| format!("thing {}: {e}", existing.name))?;
    Ok(thing)
}

/// Name of a policy given inline: AWS names these itself; ours is stable for a document.
pub(super) fn inline_policy_name(logical_id: &str, document: &Value) -> String {
    let digest = Sha256::digest(document.to_string().as_bytes());
    format!("{logical_id}-{}", crate::cert::hex(&digest[..8]))
}

pub(super) fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_owned());
    }
}
