//! The plan the analysis stage returns: a JSON spec of the site, its schema, and its
//! validation in Rust (a provider's `response_format` is a hint, never trusted).
//!
//! Invariants:
//! - a [`Spec`] that passed [`Spec::check`] has a known kind, a name, 1 to 12 sections with
//!   unique slug ids, and every "fact" is a quote found in the submission (a model may not
//!   invent hours or prices; what it supposes goes under `assumptions`);
//! - validation reports every problem at once, each naming its JSON path, so a re-ask can
//!   quote them exactly;
//! - the rule-based analysis always yields a valid spec ([`Spec::from_analysis`]).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::analyze::{Analysis, SiteKind};

/// What the model plans, and what the later stages build from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    pub kind: String,
    pub name: String,
    pub tagline: String,
    pub audience: String,
    pub tone: String,
    pub language: String,
    pub dir: String,
    pub palette: SpecPalette,
    pub sections: Vec<SpecSection>,
    pub features: Vec<String>,
    pub facts: Vec<Fact>,
    pub assumptions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecPalette {
    pub primary: String,
    pub accent: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecSection {
    pub id: String,
    pub title: String,
    pub purpose: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fact {
    /// What it is: "opening hours", "price of a loaf".
    pub label: String,
    /// The customer's words, verbatim.
    pub quote: String,
}

/// Interactive features the JS stage knows how to build.
pub const FEATURES: &[&str] = &[
    "nav-toggle",
    "form-validation",
    "gallery-lightbox",
    "menu-filter",
    "faq-accordion",
    "smooth-scroll",
    "back-to-top",
    "pricing-toggle",
];

const MAX_SECTIONS: usize = 12;

/// The JSON schema sent as `response_format` and shown in the prompt.
pub fn schema() -> Value {
    let text = |max: u32| json!({"type": "string", "maxLength": max});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["kind", "name", "tagline", "audience", "tone", "language", "dir", "palette",
                     "sections", "features", "facts", "assumptions"],
        "properties": {
            "kind": {"type": "string", "enum": SiteKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()},
            "name": text(80),
            "tagline": text(160),
            "audience": text(200),
            "tone": text(80),
            "language": text(35),
            "dir": {"type": "string", "enum": ["ltr", "rtl"]},
            "palette": {
                "type": "object",
                "additionalProperties": false,
                "required": ["primary", "accent"],
                "properties": {
                    "primary": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                    "accent": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}
                }
            },
            "sections": {
                "type": "array", "minItems": 1, "maxItems": MAX_SECTIONS,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["id", "title", "purpose"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,39}$"},
                        "title": text(80),
                        "purpose": text(200)
                    }
                }
            },
            "features": {"type": "array", "maxItems": FEATURES.len(), "items": {"type": "string", "enum": FEATURES}},
            "facts": {
                "type": "array", "maxItems": 30,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["label", "quote"],
                    "properties": {"label": text(80), "quote": text(300)}
                }
            },
            "assumptions": {"type": "array", "maxItems": 20, "items": text(200)}
        }
    })
}

impl Spec {
    /// Parse a reply's JSON; a syntax error becomes one problem naming line and column.
    pub fn parse(json: &str) -> Result<Spec, Vec<String>> {
        // Small models write raw line breaks inside strings and trailing commas; mending
        // those is certain, so it costs no re-ask.
        let value: Value = serde_json::from_str(json)
            .or_else(|e| serde_json::from_str(&relax_json(json)).map_err(|_| e))
            .map_err(|e| {
            vec![format!(
                "the JSON does not parse at line {}, column {}: {e}; answer with one JSON object \
                 and nothing else",
                e.line(),
                e.column()
            )]
        })?;
        if !value.is_object() {
            return Err(vec!["the answer must be one JSON object, not a list or a value".into()]);
        }
        serde_json::from_value(value).map_err(|e| {
            vec![format!("a field has the wrong type: {e}; follow the schema's types exactly")]
        })
    }

    /// Every problem with the plan, by JSON path; `submission` is the customer's text, which
    /// every fact must quote. Fixes what needs no model: language and direction are ours.
    pub fn check(&mut self, submission: &str, lang: &str, dir: &str) -> Vec<String> {
        let mut problems = Vec::new();
        self.language = lang.to_owned();
        self.dir = dir.to_owned();
        if SiteKind::parse(&self.kind).is_none() {
            problems.push(format!(
                "`kind`: `{}` is not one of {}",
                self.kind,
                SiteKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        for (key, value, max) in [("name", &self.name, 80), ("tagline", &self.tagline, 160)] {
            if value.trim().is_empty() {
                problems.push(format!("`{key}` is empty; write it in the customer's language"));
            } else if value.chars().count() > max {
                problems.push(format!("`{key}` is longer than {max} characters; shorten it"));
            }
        }
        for (key, color) in [("primary", &self.palette.primary), ("accent", &self.palette.accent)] {
            if !color.is_empty() && !is_hex_color(color) {
                problems.push(format!(
                    "`palette.{key}`: `{color}` is not a colour like #1f6feb (# and 6 hex digits)"
                ));
            }
        }
        if self.sections.is_empty() || self.sections.len() > MAX_SECTIONS {
            problems.push(format!(
                "`sections` has {} entries; plan 1 to {MAX_SECTIONS}",
                self.sections.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.sections.iter().enumerate() {
            if !is_slug(&s.id) {
                problems.push(format!(
                    "`sections[{i}].id`: `{}` is not a slug (lowercase letters, digits and -, \
                     starting with a letter)",
                    s.id
                ));
            } else if !seen.insert(s.id.as_str()) {
                problems.push(format!("`sections[{i}].id`: `{}` is used twice", s.id));
            }
            if s.title.trim().is_empty() {
                problems.push(format!("`sections[{i}].title` is empty"));
            }
        }
        for (i, f) in self.features.iter().enumerate() {
            if !FEATURES.contains(&f.as_str()) {
                problems
                    .push(format!("`features[{i}]`: `{f}` is not one of {}", FEATURES.join(", ")));
            }
        }
        let haystack = normalize(submission);
        for (i, f) in self.facts.iter().enumerate() {
            let quote = normalize(&f.quote);
            if quote.is_empty() || !haystack.contains(&quote) {
                problems.push(format!(
                    "`facts[{i}].quote`: \"{}\" is not in the submission; quote the customer's \
                     words exactly, or move it to `assumptions`",
                    f.quote.chars().take(80).collect::<String>()
                ));
            }
        }
        problems
    }

    /// The plan the rule-based analysis implies: the fallback when the model's fails.
    pub fn from_analysis(a: &Analysis) -> Spec {
        let mut facts = Vec::new();
        for h in &a.facts.hours {
            facts.push(Fact { label: format!("opening hours, {}", h.days), quote: h.time.clone() });
        }
        for p in &a.facts.prices {
            facts.push(Fact { label: p.label.clone(), quote: p.amount.clone() });
        }
        Spec {
            kind: a.kind.as_str().into(),
            name: a.name.clone(),
            tagline: a.tagline.clone(),
            audience: String::new(),
            tone: a.mood.clone().unwrap_or_default(),
            language: a.lang.clone(),
            dir: a.dir.into(),
            palette: SpecPalette {
                primary: a.palette.primary.clone(),
                accent: a.palette.accent.clone(),
            },
            sections: a
                .sections
                .iter()
                .map(|s| SpecSection {
                    id: s.id.clone(),
                    title: s.title.clone(),
                    purpose: s.kind.as_str().into(),
                })
                .collect(),
            features: vec!["nav-toggle".into(), "form-validation".into()],
            facts,
            assumptions: Vec::new(),
        }
    }

    /// Carry the plan's identity into the rule-based analysis, so a template fallback of a
    /// later stage shows the same site.
    pub fn apply(&self, a: &mut Analysis) {
        if let Some(kind) = SiteKind::parse(&self.kind) {
            a.kind = kind;
        }
        a.name.clone_from(&self.name);
        a.tagline.clone_from(&self.tagline);
    }
}

/// `json` with control characters inside strings escaped and commas before `}`/`]`
/// dropped; everything else untouched.
fn relax_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                _ if escaped => {
                    escaped = false;
                    out.push(c);
                }
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                // JSON forbids only U+0000..U+001F raw; DEL and C1 controls are valid as they are.
                c if c < '\u{20}' => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            ',' => {
                let mut ahead = chars.clone();
                while ahead.peek().is_some_and(|c| c.is_whitespace()) {
                    ahead.next();
                }
                if !matches!(ahead.peek(), Some('}' | ']')) {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn is_hex_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

fn is_slug(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Lowercase, with runs of whitespace and quotes made uniform, for quote matching.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            out.extend(match c {
                '’' | '‘' | '`' => '\''.to_lowercase(),
                '“' | '”' => '"'.to_lowercase(),
                '–' | '—' => '-'.to_lowercase(),
                c => c.to_lowercase(),
            });
        }
    }
    out.trim_matches(|c: char| c == '.' || c == ',' || c == ';').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Spec {
        Spec {
            kind: "restaurant".into(),
            name: "Rosie's Bakery".into(),
            tagline: "Bread since dawn".into(),
            sections: vec![
                SpecSection { id: "menu".into(), title: "Menu".into(), purpose: "".into() },
                SpecSection { id: "visit".into(), title: "Visit".into(), purpose: "".into() },
            ],
            features: vec!["nav-toggle".into()],
            facts: vec![Fact { label: "hours".into(), quote: "open Tue–Sun,  7am".into() }],
            ..Spec::default()
        }
    }

    const SUBMISSION: &str = "We are Rosie's Bakery. We're open Tue-Sun, 7am to 2pm.";

    #[test]
    fn a_good_plan_passes_and_takes_our_language() {
        let mut s = good();
        s.language = "fr".into();
        assert_eq!(s.check(SUBMISSION, "en", "ltr"), Vec::<String>::new());
        assert_eq!((s.language.as_str(), s.dir.as_str()), ("en", "ltr"));
    }

    #[test]
    fn every_problem_names_its_path() {
        let mut s = good();
        s.kind = "bakery".into();
        s.name = " ".into();
        s.palette.primary = "red".into();
        s.sections.push(SpecSection { id: "Menu Card".into(), ..Default::default() });
        s.sections.push(SpecSection {
            id: "menu".into(),
            title: "Again".into(),
            ..Default::default()
        });
        s.features.push("carousel".into());
        s.facts.push(Fact { label: "price".into(), quote: "€4 a loaf".into() });
        let problems = s.check(SUBMISSION, "en", "ltr");
        for path in [
            "`kind`",
            "`name`",
            "`palette.primary`",
            "`sections[2].id`",
            "`sections[2].title`",
            "`sections[3].id`: `menu` is used twice",
            "`features[1]`",
            "`facts[1].quote`",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(path)), "{path} not in {problems:#?}");
        }
        assert_eq!(problems.len(), 8, "{problems:#?}");
    }

    #[test]
    fn broken_json_says_where() {
        let err = Spec::parse("{\"kind\": \"shop\",\n \"name\": }").unwrap_err();
        assert!(err[0].contains("line 2"), "{err:?}");
        assert!(Spec::parse("[1]").unwrap_err()[0].contains("one JSON object"));
        assert!(Spec::parse("{\"sections\": 3}").unwrap_err()[0].contains("wrong type"));
        // Extra keys are tolerated; small models add them.
        assert_eq!(Spec::parse("{\"kind\": \"shop\", \"extra\": 1}").unwrap().kind, "shop");
    }

    #[test]
    fn raw_line_breaks_and_trailing_commas_are_mended() {
        let s = Spec::parse("{\"name\": \"Rosie's\nLoaves\", \"features\": [\"nav-toggle\",],\n}")
            .unwrap();
        assert_eq!(s.name, "Rosie's\nLoaves");
        assert_eq!(s.features, ["nav-toggle"]);
        // A comma inside a string stays.
        assert_eq!(relax_json(r#"{"a": "x,}", }"#), r#"{"a": "x,}" }"#);
        // DEL and C1 controls are valid raw in a JSON string (once a proptest's find).
        for valid in ["\"\u{7f}\"", "\"\u{85}\u{9f}\""] {
            assert!(serde_json::from_str::<Value>(valid).is_ok());
            assert_eq!(relax_json(valid), valid);
        }
        assert_eq!(relax_json("\"a\u{1}b\""), r#""a\u0001b""#);
    }

    proptest::proptest! {
        #[test]
        fn relaxing_never_panics_and_leaves_valid_json_alone(s in "(?s).{0,200}|\\{\"[a-z,}]{0,8}\": \\[[0-9, ]{0,12}\\]\\}") {
            let relaxed = relax_json(&s);
            if serde_json::from_str::<Value>(&s).is_ok() {
                // Valid JSON has neither: it comes back byte for byte.
                proptest::prop_assert_eq!(relaxed, s);
            }
        }
    }

    #[test]
    fn the_schema_lists_every_kind_and_feature() {
        let s = schema();
        assert_eq!(s["properties"]["kind"]["enum"].as_array().unwrap().len(), SiteKind::ALL.len());
        assert_eq!(
            s["properties"]["features"]["items"]["enum"].as_array().unwrap().len(),
            FEATURES.len()
        );
    }
}
