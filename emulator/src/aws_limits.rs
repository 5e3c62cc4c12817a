//! AWS IoT's limits on names and attributes, as its API reference gives them: what a template
//! may produce and what the registry may hold. Each check returns the message a rejection
//! carries.

/// Longest thing, thing type, group and policy name AWS accepts.
pub const MAX_NAME_CHARS: usize = 128;

/// Longest attribute value AWS accepts (AttributePayload in the API reference).
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 800;

/// Attributes a thing may have without a thing type, and with one (AWS IoT's registry limits).
pub const MAX_ATTRIBUTES_WITHOUT_TYPE: usize = 3;
pub const MAX_ATTRIBUTES_WITH_TYPE: usize = 50;

/// AWS's pattern for attribute names: 1-128 of `[a-zA-Z0-9_.,@/:#-]`.
pub fn check_attribute_name(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c);
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(format!(
            "attribute name '{name}' must be 1-{MAX_NAME_CHARS} characters of \
             [a-zA-Z0-9_.,@/:#-]"
        ));
    }
    Ok(())
}

/// AWS's pattern for attribute values: up to 800 of `[a-zA-Z0-9_.,@/:#=\[\]-]`, so no spaces.
pub fn check_attribute_value(name: &str, value: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c);
    if value.chars().count() > MAX_ATTRIBUTE_VALUE_CHARS || !value.chars().all(valid_char) {
        return Err(format!(
            "{name}: attribute values are up to {MAX_ATTRIBUTE_VALUE_CHARS} characters of \
             [a-zA-Z0-9_.,@/:#=[]-] (no spaces)"
        ));
    }
    Ok(())
}

/// Thing, thing type, thing group and billing group names share AWS's pattern.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(format!(
            "{what} '{name}' must be 1-{MAX_NAME_CHARS} characters of [a-zA-Z0-9:_-]"
        ));
    }
    Ok(())
}

/// AWS's pattern for policy names: 1-128 of `[\w+=,.@-]`.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_alphanumeric() || "_+=,.@-".contains(c);
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(format!(
            "policy name '{name}' must be 1-{MAX_NAME_CHARS} characters of [\\w+=,.@-]"
        ));
    }
    Ok(())
}

/// A thing may have [`MAX_ATTRIBUTES_WITHOUT_TYPE`] attributes without a thing type and
/// [`MAX_ATTRIBUTES_WITH_TYPE`] with one.
pub fn check_attribute_count(count: usize, has_thing_type: bool) -> Result<(), String> {
    let limit = if has_thing_type {
        MAX_ATTRIBUTES_WITH_TYPE
    } else {
        MAX_ATTRIBUTES_WITHOUT_TYPE
    };
    if count > limit {
        return Err(format!(
            "{count} attributes; a thing {} a thing type may have at most {limit}",
            if has_thing_type { "with" } else { "without" }
        ));
    }
    Ok(())
}

/// AWS's rule for template names: 1-36 characters of `[0-9A-Za-z_-]`.
pub fn valid_template_name(name: &str) -> bool {
    (1..=36).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
