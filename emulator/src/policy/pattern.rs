//! Strings of a policy with AWS's `*` and `?` wildcards and `${...}` policy variables.
//!
//! A variable's value is inserted literally: a `*` in a client id is a star, not a wildcard.
//! `${*}`, `${?}` and `${$}` stand for the literal characters. MQTT's `+` and `#` are ordinary
//! characters here.

use super::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters, `/` included, possibly empty.
    Any,
    /// `?`: exactly one character.
    One,
}

/// `pattern` with its variables replaced from `ctx` (when `variables` is set; documents of
/// another version than 2012-10-17 take `${...}` literally). `None` when a variable has no value.
fn expand(pattern: &str, ctx: &Context, variables: bool) -> Option<Vec<Tok>> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if variables && rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                let name = &rest[2..end];
                match name {
                    "*" => out.push(Tok::Lit('*')),
                    "?" => out.push(Tok::Lit('?')),
                    "$" => out.push(Tok::Lit('$')),
                    _ => out.extend(ctx.get(name)?.chars().map(Tok::Lit)),
                }
                rest = &rest[end + 1..];
                continue;
            }
        }
        out.push(match c {
            '*' => Tok::Any,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

/// Does the wildcard pattern match all of `text`? Iterative, with one backtracking point per `*`
/// (the last one seen), so long patterns cannot blow up.
fn matches_tokens(pat: &[Tok], text: &[char], fold_case: bool) -> bool {
    let eq = |a: char, b: char| {
        if fold_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                p += 1;
                t += 1;
            }
            Some(Tok::Lit(c)) if eq(*c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|tok| *tok == Tok::Any)
}

/// Match `text` against a policy string: `Some(matched)`, or `None` when the pattern uses a
/// variable without a value (such a pattern matches nothing, and cannot be negated either).
pub(crate) fn wildcard_match(
    pattern: &str,
    text: &str,
    ctx: &Context,
    variables: bool,
    fold_case: bool,
) -> Option<bool> {
    let toks = expand(pattern, ctx, variables)?;
    let text: Vec<char> = text.chars().collect();
    Some(matches_tokens(&toks, &text, fold_case))
}

/// `pattern` with variables replaced and no wildcard meaning: for the `...Equals` operators.
pub(crate) fn substitute(pattern: &str, ctx: &Context, variables: bool) -> Option<String> {
    let toks = expand(pattern, ctx, variables)?;
    Some(
        toks.into_iter()
            .map(|t| match t {
                Tok::Lit(c) => c,
                Tok::Any => '*',
                Tok::One => '?',
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        wildcard_match(pattern, text, &Context::default(), true, false).unwrap()
    }

    #[test]
    fn star_matches_any_run_including_slashes_and_nothing() {
        assert!(m("*", ""));
        assert!(m("*", "a/b/c"));
        assert!(m("a/*", "a/"));
        assert!(m("a/*", "a/b/c"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*c", "ac"));
        assert!(!m("a*c", "acb"));
        assert!(m("*b*", "abc"));
        assert!(!m("a/*", "b/a"));
        assert!(m("a**", "a"));
    }

    #[test]
    fn question_mark_is_exactly_one_character() {
        assert!(m("a?c", "abc"));
        assert!(m("a?c", "a/c"));
        assert!(!m("a?c", "ac"));
        assert!(!m("a?c", "abbc"));
        assert!(m("??", "é!"));
    }

    #[test]
    fn mqtt_wildcards_are_literal() {
        assert!(m("a/+/c", "a/+/c"));
        assert!(!m("a/+/c", "a/b/c"));
        assert!(!m("a/#", "a/b"));
        assert!(m("a/#", "a/#"));
    }

    #[test]
    fn matching_is_case_sensitive_unless_folded() {
        assert!(!m("Topic", "topic"));
        let ctx = Context::default();
        assert_eq!(
            wildcard_match("IOT:pub*", "iot:Publish", &ctx, false, true),
            Some(true)
        );
    }

    #[test]
    fn variables_are_replaced_literally() {
        let mut ctx = Context::default();
        ctx.set("iot:ClientId", "dev*1");
        assert_eq!(
            wildcard_match("a/${iot:ClientId}", "a/dev*1", &ctx, true, false),
            Some(true)
        );
        // The star inside the value is not a wildcard.
        assert_eq!(
            wildcard_match("a/${iot:ClientId}", "a/dev-x-1", &ctx, true, false),
            Some(false)
        );
        assert_eq!(
            wildcard_match("a/${iot:Nope}", "a/x", &ctx, true, false),
            None
        );
        // Without variables (an old policy version) the text is literal.
        assert_eq!(
            wildcard_match("a/${iot:Nope}", "a/${iot:Nope}", &ctx, false, false),
            Some(true)
        );
    }

    #[test]
    fn special_character_variables() {
        let ctx = Context::default();
        assert_eq!(
            substitute("a${*}b${?}c${$}", &ctx, true).as_deref(),
            Some("a*b?c$")
        );
        assert_eq!(wildcard_match("x${*}", "x*", &ctx, true, false), Some(true));
        assert_eq!(
            wildcard_match("x${*}", "xy", &ctx, true, false),
            Some(false)
        );
        // An unterminated `${` is text.
        assert!(m("a${b", "a${b"));
    }

    #[test]
    fn long_patterns_do_not_backtrack_exponentially() {
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!m(&pattern, &text));
    }
}
