//! The rule-based analysis: what kind of site, its name and tagline, the
//! sections, the facts the customer stated, the palette and the images.
//!
//! Invariants: it never fails on text (any input gives some analysis); the
//! customer's words are kept verbatim, in their language; contact details
//! are left out unless `generator.show_contact_details` is set.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::palette::{Palette, dominant_colors};
use crate::inbox::Job;
use crate::submission::{AttachmentKind, is_rtl, slugify};
use crate::templates::Strings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteKind {
    Restaurant,
    Shop,
    Portfolio,
    Services,
    Clinic,
    Saas,
    Nonprofit,
    Events,
    Generic,
}

impl SiteKind {
    /// Keywords in scripts that transliteration would mangle (Arabic,
    /// Hebrew, Chinese, Japanese), matched on the original text.
    fn native_keywords(self) -> &'static [(&'static str, u32)] {
        match self {
            SiteKind::Restaurant => &[
                ("مطعم", 5),
                ("مخبز", 5),
                ("مقهى", 5),
                ("מסעדה", 5),
                ("מאפייה", 5),
                ("餐厅", 5),
                ("咖啡", 4),
                ("面包", 4),
                ("レストラン", 5),
                ("カフェ", 5),
                ("パン", 3),
            ],
            SiteKind::Shop => &[
                ("متجر", 5),
                ("منتجات", 3),
                ("سلة", 3),
                ("تسوق", 3),
                ("חנות", 5),
                ("商店", 5),
                ("网店", 6),
                ("ショップ", 5),
                ("通販", 5),
            ],
            SiteKind::Portfolio => &[
                ("معرض", 3),
                ("تصوير", 4),
                ("תיק עבודות", 6),
                ("作品集", 6),
                ("摄影", 4),
                ("写真", 4),
                ("ポートフォリオ", 6),
            ],
            SiteKind::Services => &[("خدمات", 3), ("שירותים", 3), ("服务", 3), ("サービス", 3)],
            SiteKind::Clinic => &[
                ("عيادة", 6),
                ("طبيب", 5),
                ("מרפאה", 6),
                ("诊所", 6),
                ("牙科", 6),
                ("クリニック", 6),
                ("歯科", 6),
            ],
            SiteKind::Saas => &[("تطبيق", 4), ("אפליקציה", 4), ("应用", 3), ("アプリ", 4)],
            SiteKind::Nonprofit => {
                &[("تبرع", 5), ("جمعية", 4), ("עמותה", 6), ("תרומה", 5), ("慈善", 6), ("寄付", 5)]
            }
            SiteKind::Events => &[
                ("مهرجان", 6),
                ("حفل", 4),
                ("פסטיבל", 6),
                ("音乐节", 6),
                ("フェス", 5),
                ("イベント", 5),
            ],
            SiteKind::Generic => &[],
        }
    }

    pub const ALL: &'static [SiteKind] = &[
        SiteKind::Restaurant,
        SiteKind::Shop,
        SiteKind::Portfolio,
        SiteKind::Services,
        SiteKind::Clinic,
        SiteKind::Saas,
        SiteKind::Nonprofit,
        SiteKind::Events,
        SiteKind::Generic,
    ];

    /// The kind named `name` (as [`SiteKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<SiteKind> {
        SiteKind::ALL.iter().copied().find(|k| k.as_str() == name.trim())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::Restaurant => "restaurant",
            SiteKind::Shop => "shop",
            SiteKind::Portfolio => "portfolio",
            SiteKind::Services => "services",
            SiteKind::Clinic => "clinic",
            SiteKind::Saas => "saas",
            SiteKind::Nonprofit => "nonprofit",
            SiteKind::Events => "events",
            SiteKind::Generic => "generic",
        }
    }

    /// Words that point at this kind, in the languages we know, matched on
    /// transliterated lowercase text. Longer, surer words weigh more.
    fn keywords(self) -> &'static [(&'static str, u32)] {
        match self {
            SiteKind::Restaurant => &[
                ("bakery", 5),
                ("bakehouse", 5),
                ("sourdough", 4),
                ("bread", 3),
                ("loaf", 3),
                ("bake", 2),
                ("cafe", 4),
                ("coffee", 3),
                ("restaurant", 5),
                ("bistro", 5),
                ("brunch", 4),
                ("menu", 3),
                ("kitchen", 2),
                ("pizza", 4),
                ("patisserie", 5),
                ("pastry", 3),
                ("dishes", 2),
                ("food", 2),
                ("backerei", 5),
                ("baeckerei", 5),
                ("konditorei", 5),
                ("speisekarte", 5),
                ("gericht", 2),
                ("padaria", 5),
                ("pastelaria", 5),
                ("cardapio", 4),
                ("boulangerie", 5),
                ("panaderia", 5),
                ("trattoria", 5),
                ("osteria", 5),
                ("catering", 4),
                ("wine bar", 4),
                ("tapas", 4),
            ],
            SiteKind::Shop => &[
                ("online shop", 6),
                ("webshop", 6),
                ("e-commerce", 6),
                ("ecommerce", 6),
                ("shop", 3),
                ("store", 3),
                ("sell", 3),
                ("products", 3),
                ("cart", 4),
                ("checkout", 4),
                ("boutique", 4),
                ("handmade", 3),
                ("merch", 3),
                ("laden", 2),
                ("loja", 4),
                ("tienda", 4),
                ("boutique", 3),
                ("ceramics", 2),
                ("jewellery", 3),
                ("jewelry", 3),
            ],
            SiteKind::Portfolio => &[
                ("portfolio", 6),
                ("photography", 5),
                ("photographer", 5),
                ("gallery", 3),
                ("artist", 4),
                ("illustrat", 4),
                ("my work", 4),
                ("showcase", 3),
                ("fotograf", 5),
                ("designer", 3),
                ("architectural", 2),
                ("paintings", 4),
                ("exhibition", 2),
            ],
            SiteKind::Services => &[
                ("agency", 4),
                ("consult", 4),
                ("lawyer", 5),
                ("law firm", 5),
                ("accountant", 5),
                ("accounting", 4),
                ("plumb", 5),
                ("electrician", 5),
                ("cleaning", 4),
                ("dog walk", 6),
                ("walks", 2),
                ("tutor", 4),
                ("coach", 4),
                ("services", 2),
                ("repair", 4),
                ("salon", 4),
                ("barber", 5),
                ("hairdress", 5),
                ("fitness", 4),
                ("personal trainer", 5),
                ("yoga", 4),
                ("translation", 4),
                ("kanzlei", 5),
                ("steuerberat", 5),
                ("handwerk", 4),
                ("servicos", 2),
                ("passeio", 3),
                ("business", 1),
                ("freelance", 2),
                ("studio", 1),
            ],
            SiteKind::Clinic => &[
                ("clinic", 6),
                ("dentist", 6),
                ("dental", 5),
                ("doctor", 5),
                ("physio", 5),
                ("therap", 4),
                ("medical", 5),
                ("patient", 4),
                ("zahnarzt", 7),
                ("praxis", 4),
                ("arzt", 4),
                ("klinik", 6),
                ("prophylaxe", 5),
                ("implant", 4),
                ("clinica", 6),
                ("dentista", 6),
                ("veterinar", 5),
                ("optician", 5),
                ("pharmacy", 5),
                ("health", 2),
                ("sprechzeiten", 4),
            ],
            SiteKind::Saas => &[
                ("saas", 6),
                ("app", 3),
                ("software", 4),
                ("platform", 4),
                ("startup", 4),
                ("landing page", 4),
                ("signup", 4),
                ("sign up", 4),
                ("subscription", 4),
                ("dashboard", 4),
                ("api", 3),
                ("invoic", 3),
                ("free trial", 5),
                ("integrations", 3),
                ("pricing", 2),
                ("features", 2),
                ("users", 1),
                ("plugin", 3),
            ],
            SiteKind::Nonprofit => &[
                ("non-profit", 6),
                ("nonprofit", 6),
                ("charity", 6),
                ("donat", 5),
                ("volunteer", 5),
                ("foundation", 4),
                ("ngo", 5),
                ("verein", 5),
                ("spende", 5),
                ("ehrenamt", 5),
                ("mission", 2),
                ("community garden", 5),
                ("fundrais", 5),
                ("associacao", 4),
                ("association", 3),
            ],
            SiteKind::Events => &[
                ("festival", 6),
                ("conference", 6),
                ("concert", 5),
                ("wedding", 5),
                ("meetup", 5),
                ("tickets", 4),
                ("lineup", 5),
                ("line-up", 5),
                ("schedule", 2),
                ("event", 3),
                ("gig", 3),
                ("workshops", 3),
                ("veranstaltung", 5),
                ("konzert", 5),
                ("hochzeit", 5),
                ("evento", 4),
            ],
            SiteKind::Generic => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    About,
    Menu,
    Products,
    Gallery,
    Services,
    Pricing,
    Features,
    Hours,
    Location,
    Contact,
    Order,
    Booking,
    Team,
    Events,
    Donate,
    Text,
}

impl SectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SectionKind::About => "about",
            SectionKind::Menu => "menu",
            SectionKind::Products => "products",
            SectionKind::Gallery => "gallery",
            SectionKind::Services => "services",
            SectionKind::Pricing => "pricing",
            SectionKind::Features => "features",
            SectionKind::Hours => "hours",
            SectionKind::Location => "location",
            SectionKind::Contact => "contact",
            SectionKind::Order => "order",
            SectionKind::Booking => "booking",
            SectionKind::Team => "team",
            SectionKind::Events => "events",
            SectionKind::Donate => "donate",
            SectionKind::Text => "text",
        }
    }

    /// A page name from the customer (`menu`, `visit us`, `Leistungen`) as a
    /// section kind. `None` for `home`, which is the hero.
    fn from_page(page: &str) -> Option<SectionKind> {
        let p = deunicode::deunicode(page).to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| p.contains(w));
        if has(&["home", "start", "inicio", "accueil", "landing"]) {
            return None;
        }
        Some(
            if has(&[
                "pre-order",
                "preorder",
                "order",
                "bestell",
                "encomenda",
                "pedido",
                "commande",
            ]) {
                SectionKind::Order
            } else if has(&["menu", "speisekarte", "karte", "cardapio", "carta"]) {
                SectionKind::Menu
            } else if has(&["ticket", "billet", "entradas", "karten", "bilhete", "biglietti"]) {
                SectionKind::Pricing
            } else if has(&[
                "visit",
                "find us",
                "location",
                "where",
                "anfahrt",
                "directions",
                "map",
                "localiza",
                "practical",
                "pratique",
                "getting here",
                "how to get",
            ]) {
                SectionKind::Location
            } else if has(&["hours", "opening", "offnungszeiten", "sprechzeiten", "horario"]) {
                SectionKind::Hours
            } else if has(&[
                "gallery",
                "portfolio",
                "work",
                "projects",
                "photos",
                "galerie",
                "fotos",
                "projekte",
            ]) {
                SectionKind::Gallery
            } else if has(&["pricing", "prices", "price", "preise", "precos", "tarif", "plans"]) {
                SectionKind::Pricing
            } else if has(&["feature", "funktionen"]) {
                SectionKind::Features
            } else if has(&["shop", "store", "products", "produkte", "produtos", "buy"]) {
                SectionKind::Products
            } else if has(&[
                "service",
                "leistung",
                "servicos",
                "servicios",
                "what we do",
                "treatments",
                "behandlung",
            ]) {
                SectionKind::Services
            } else if has(&["team", "staff", "people", "equipe"]) {
                SectionKind::Team
            } else if has(&["book", "appointment", "termin", "reserv", "agendar", "marcar"]) {
                SectionKind::Booking
            } else if has(&[
                "event",
                "schedule",
                "programm",
                "agenda",
                "lineup",
                "volunteer",
                "get involved",
                "workshops",
                "mitmachen",
            ]) {
                SectionKind::Events
            } else if has(&["donat", "spende", "support us", "give"]) {
                SectionKind::Donate
            } else if has(&[
                "contact",
                "kontakt",
                "contato",
                "contacto",
                "get in touch",
                "sign up",
                "signup",
            ]) {
                SectionKind::Contact
            } else if has(&[
                "about",
                "uber uns",
                "ueber uns",
                "sobre",
                "a propos",
                "story",
                "who we are",
            ]) {
                SectionKind::About
            } else {
                SectionKind::Text
            },
        )
    }
}

/// Every section kind, in a sensible page order.
pub const ALL_SECTION_KINDS: &[SectionKind] = &[
    SectionKind::About,
    SectionKind::Menu,
    SectionKind::Products,
    SectionKind::Gallery,
    SectionKind::Services,
    SectionKind::Features,
    SectionKind::Pricing,
    SectionKind::Team,
    SectionKind::Events,
    SectionKind::Hours,
    SectionKind::Location,
    SectionKind::Donate,
    SectionKind::Text,
    SectionKind::Order,
    SectionKind::Booking,
    SectionKind::Contact,
];

/// What the layouts render.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub kind: SiteKind,
    pub name: String,
    pub tagline: String,
    pub lang: String,
    pub dir: &'static str,
    pub mood: Option<String>,
    /// The request in the customer's words, by paragraph.
    pub intro: Vec<String>,
    pub sections: Vec<Section>,
    pub facts: Facts,
    #[serde(skip)]
    pub palette: Palette,
    pub logo: Option<Image>,
    pub images: Vec<Image>,
    /// Files to publish beside the pages (`assets/images/…`).
    #[serde(skip)]
    pub assets: Vec<(String, Vec<u8>)>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub id: String,
    pub kind: SectionKind,
    pub title: String,
    pub lead: Option<String>,
    pub paragraphs: Vec<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub name: String,
    pub detail: Option<String>,
    pub price: Option<String>,
    pub category: Option<String>,
    pub image: Option<Image>,
}

impl Item {
    fn named(name: impl Into<String>) -> Item {
        Item { name: name.into(), detail: None, price: None, category: None, image: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    pub src: String,
    pub alt: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    pub hours: Vec<Hours>,
    pub prices: Vec<Price>,
    pub places: Vec<String>,
    pub items: Vec<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hours {
    pub days: String,
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Price {
    pub label: String,
    pub amount: String,
}

/// Read a job into an analysis. `t` holds the UI strings of the site's
/// language; `show_contact` puts the contact's email and phone in the facts.
pub fn analyze(job: &Job, t: &Strings, default_lang: &str, show_contact: bool) -> Analysis {
    let s = job.submission();
    let lang = s.language_or(default_lang).to_string();
    let text = s.request_text();
    let mut warnings = Vec::new();

    let documents = read_documents(job, &mut warnings);
    let all_text =
        format!("{}\n{}\n{}", s.company.as_deref().unwrap_or(""), text, documents.join("\n"));
    let kind = detect_kind(&all_text);

    let mut facts = extract_facts(text);
    for doc in &documents {
        facts.items.extend(bullets(doc));
    }
    dedupe(&mut facts.items);
    facts.items.truncate(MAX_ITEMS);
    if show_contact {
        facts.email = s.contact.email.clone();
        facts.phone = s.contact.phone.clone();
    }

    let (logo, images, assets, logo_colors) = collect_images(job, &mut warnings);
    for a in &job.attachments {
        if a.attachment.kind == AttachmentKind::Audio && s.voice_transcript.is_none() {
            warnings.push(format!(
                "audio attachment {} was not transcribed: the template generator has no speech recognition",
                a.attachment.path
            ));
        }
    }

    let palette = Palette::from_colors(&s.style.colors, "style")
        .or_else(|| Palette::from_colors(&logo_colors, "logo"))
        .unwrap_or_else(|| Palette::for_kind(kind));

    let name = plain(&site_name(s.company.as_deref(), text));
    let tagline =
        tagline(text).unwrap_or_else(|| t.get(&format!("tagline_{}", kind.as_str())).to_string());
    let intro = paragraphs(text);
    let about = descriptive_sentences(text);
    let mut sections = build_sections(kind, &s.pages, text, &facts, &about, &images, t);
    for section in &mut sections {
        section.title = plain(&section.title);
        for item in &mut section.items {
            item.name = plain(&item.name);
        }
    }
    let tagline = plain(&tagline);

    Analysis {
        kind,
        name,
        tagline,
        dir: if is_rtl(&lang) { "rtl" } else { "ltr" },
        lang,
        mood: s.style.mood.clone(),
        intro,
        sections,
        facts,
        palette,
        logo,
        images,
        assets,
        warnings,
    }
}

/// The kind with the highest keyword score; generic when nothing matches.
pub fn detect_kind(text: &str) -> SiteKind {
    let raw = text.to_lowercase();
    let hay = format!(" {} ", deunicode::deunicode(text).to_lowercase());
    let mut best = (0, SiteKind::Generic);
    for kind in SiteKind::ALL {
        let score: u32 = kind
            .keywords()
            .iter()
            .map(|(word, weight)| {
                // Short words must stand alone ("app" is not in "happy").
                let hits = if word.len() <= 4 {
                    hay.match_indices(word)
                        .filter(|(i, _)| {
                            let before = hay[..*i].chars().next_back().unwrap_or(' ');
                            let after = hay[i + word.len()..].chars().next().unwrap_or(' ');
                            !before.is_alphanumeric() && !after.is_alphabetic() || after == 's'
                        })
                        .count()
                } else {
                    hay.matches(word).count()
                };
                weight * hits.min(3) as u32
            })
            .sum::<u32>()
            + kind
                .native_keywords()
                .iter()
                .map(|(w, weight)| weight * raw.matches(w).count().min(3) as u32)
                .sum::<u32>();
        if score > best.0 {
            best = (score, *kind);
        }
    }
    best.1
}

static CALLED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:it'?s called|it is called|we'?re called|we are called|named|called|heißt|heisst|chama-se|se llama|s'appelle)\s+([\p{Lu}0-9][\p{L}\p{N}'&.-]*(?:\s+[\p{Lu}0-9][\p{L}\p{N}'&.-]*){0,4})")
        .expect("static regex")
});

/// The business name a text gives ("it's called Patinhas").
pub fn name_in_text(text: &str) -> Option<String> {
    let m = CALLED.captures(text)?.get(1)?;
    Some(m.as_str().trim_end_matches(['.', ',']).to_string())
}

/// The text without a spoken opening ("hi um so …").
pub fn strip_filler(text: &str) -> std::borrow::Cow<'_, str> {
    FILLER.replace(text.trim_start(), "")
}

fn site_name(company: Option<&str>, text: &str) -> String {
    if let Some(c) = company.map(str::trim).filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    if let Some(name) = name_in_text(text) {
        return name;
    }
    let text = strip_filler(text);
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let guess = words.join(" ");
    if guess.is_empty() { "Prototype".into() } else { capitalize(&guess) }
}

static FILLER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?:hi|hello|hey|hallo|olá|ola|um+|uh+|so|well|ok|okay|yeah)\b[\s,.!]*)+")
        .expect("static regex")
});
static SELF_DESCRIPTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:we'?re|we are|i'?m|i am|i run|we run|i own|we own|wir sind|ich bin|wir betreiben|somos|sou|tenho|nous sommes|je suis|siamo|sono|we zijn)\s+(.*)$")
        .expect("static regex")
});

/// "We're a small sourdough bakery in Hackney." → "A small sourdough
/// bakery in Hackney". `None` if the text doesn't open with a
/// self-description.
fn tagline(text: &str) -> Option<String> {
    let first = first_sentence(text)?;
    let first = FILLER.replace(first.trim(), "");
    let rest = SELF_DESCRIPTION.captures(&first)?.get(1)?.as_str();
    let rest = rest.split([',', ';', ':', '(']).next()?.trim().trim_end_matches('.');
    let words = rest.split_whitespace().count();
    if !(2..=16).contains(&words) {
        return None;
    }
    Some(capitalize(rest))
}

fn first_sentence(text: &str) -> Option<&str> {
    let text = text.trim();
    let end = text
        .char_indices()
        .find(|(i, c)| {
            matches!(c, '.' | '!' | '?' | '。' | '！' | '？')
                && text[i + c.len_utf8()..].starts_with([' ', '\n'])
                || *c == '\n' && text[i + 1..].starts_with('\n')
        })
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(text.len());
    let s = text[..end].trim();
    (!s.is_empty()).then_some(s)
}

/// A short display string without bidi embedding/override/isolate
/// controls: an unbalanced U+202E in a company name would flip everything
/// after it on the page.
fn plain(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')).collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Paragraphs of the customer's text, with single line breaks joined.
fn paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

static SENTENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^.!?。！？]+[.!?。！？]*").expect("static regex"));

/// Sentences that describe the business rather than ask for the website.
fn descriptive_sentences(text: &str) -> Vec<String> {
    const REQUEST: &[&str] = &[
        "site",
        "page",
        "website",
        "i'd like",
        "i would like",
        "we'd like",
        "i want",
        "we want",
        "need",
        "please",
        "ideally",
        "could you",
        "brauchen",
        "bitte",
        "hätten gern",
        "möchten",
        "quero",
        "queria",
        "gostaria",
        "precisamos",
        "necesitamos",
        "quiero",
        "nous voulons",
        "je voudrais",
        "think ",
        "feel",
        "thanks",
        "thank you",
        "danke",
        "obrigad",
    ];
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    SENTENCE
        .find_iter(&flat)
        .map(|m| FILLER.replace(m.as_str().trim(), "").trim().to_string())
        .filter(|s| s.split_whitespace().count() >= 3)
        .filter(|s| {
            let lower = s.to_lowercase();
            !REQUEST.iter().any(|w| lower.contains(w))
        })
        .take(4)
        .map(|s| capitalize(&s))
        .collect()
}

static DAY: &str = r"(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun|monday|tuesday|wednesday|thursday|friday|saturday|sunday|mo|di|mi|do|fr|sa|so|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag|seg|ter|qua|qui|sex|sab|dom|lun|mar|mer|jeu|ven|sam|weekdays|weekends)\.?";
static HOURS: LazyLock<Regex> = LazyLock::new(|| {
    let range = r"\s*(?:-|–|—|to|bis|a|à|até)\s*";
    let time = r"\d{1,2}(?:[:.]\d{2})?\s*(?:am|pm|uhr|h)?";
    Regex::new(&format!(
        r"(?i)\b({DAY}(?:{range}{DAY}|(?:\s*,\s*{DAY})+)?)\s*:?\s*({time}{range}{time})"
    ))
    .expect("static regex")
});
static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:[$€£]\s?\d+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?\s?(?:€|eur|euro|euros|usd|gbp|£|\$|r\$))")
        .expect("static regex")
});
static FREE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:free|gratis|kostenlos|gratuit|grátis|gratuito)$").expect("static regex")
});
static PLACE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:in|im|em|en|à|near|bei|nahe|around)\s+(\p{Lu}[\p{L}'’-]+(?:(?:\s+(?:de|da|do|del|la|le|von|am|upon|on)\s+|\s+)\p{Lu}[\p{L}'’-]+)*(?:\s+(?:and|und|e|y|et)\s+\p{Lu}[\p{L}'’-]+(?:(?:\s+(?:de|da|do|del|la|le)\s+|\s+)\p{Lu}[\p{L}'’-]+)*)*)")
        .expect("static regex")
});
/// "group walks and solo walks": two kinds of one thing.
static SHARED_HEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(\p{L}+ (\p{L}{3,}))\s+(?:and|or|und|oder|e|ou|et|y|o)\s+(\p{L}+ (\p{L}{3,}))\b",
    )
    .expect("static regex")
});
static PAREN_LIST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\(([^()]{3,400})\)").expect("static regex"));

/// Hours, prices, places and listed items, as the customer wrote them.
pub fn extract_facts(text: &str) -> Facts {
    let mut facts = Facts::default();
    for c in HOURS.captures_iter(text) {
        facts.hours.push(Hours { days: c[1].trim().to_string(), time: c[2].trim().to_string() });
    }
    for c in PAREN_LIST.captures_iter(text) {
        let inner = &c[1];
        let parts: Vec<&str> = inner
            .split([',', '/', ';', '،', '、', '，', '；'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() < 2 {
            continue;
        }
        let priced = parts.iter().filter(|p| MONEY.is_match(p) || FREE.is_match(p)).count();
        if priced * 2 >= parts.len() {
            for p in parts {
                if let Some(m) = MONEY.find(p) {
                    let label = format!("{}{}", &p[..m.start()], &p[m.end()..]);
                    let label =
                        label.trim_matches(|c: char| c.is_whitespace() || c == ':' || c == '-');
                    facts.prices.push(Price {
                        label: capitalize(label),
                        amount: m.as_str().trim().to_string(),
                    });
                } else if FREE.is_match(p) {
                    facts.prices.push(Price { label: capitalize(p), amount: "0".into() });
                }
            }
        } else if !parts.iter().any(|p| HOURS.is_match(p)) {
            facts.items.extend(
                parts.iter().filter(|p| p.split_whitespace().count() <= 6).map(|p| p.to_string()),
            );
        }
    }
    for c in SHARED_HEAD.captures_iter(text) {
        let (a, b) = (c[1].to_string(), c[3].to_string());
        // The regex crate has no back-references: compare the heads here.
        if c[2].to_lowercase() == c[4].to_lowercase() && a.to_lowercase() != b.to_lowercase() {
            facts.items.extend([a, b]);
        }
    }
    // A "0" amount takes the currency of its siblings.
    if let Some(symbol) =
        facts.prices.iter().find_map(|p| p.amount.chars().find(|c| "$€£".contains(*c)))
    {
        for p in facts.prices.iter_mut().filter(|p| p.amount == "0") {
            p.amount = format!("{symbol}0");
        }
    }
    for c in PLACE.captures_iter(text) {
        for place in c[1].split(" and ").flat_map(|p| p.split(" und ")).flat_map(|p| p.split(" e "))
        {
            let place = place.trim();
            if !place.is_empty() && !facts.places.iter().any(|p| p == place) {
                facts.places.push(place.to_string());
            }
        }
    }
    dedupe(&mut facts.items);
    facts
}

/// Lines that start with a bullet, in a document.
fn bullets(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix(['-', '*', '•']))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && l.len() <= 200)
        .collect()
}

fn dedupe(items: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    items.retain(|i| seen.insert(i.to_lowercase()));
}

/// How much of a document attachment is read.
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;
/// Most listed items kept from the text and documents.
const MAX_ITEMS: usize = 60;

/// Text of document attachments we can read (UTF-8 text files).
fn read_documents(job: &Job, warnings: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for a in job.attachments.iter().filter(|a| a.attachment.kind == AttachmentKind::Document) {
        let ext = extension(&a.attachment.path);
        if !matches!(ext.as_str(), "txt" | "md" | "markdown" | "text") {
            warnings.push(format!(
                "document {} was not read: only text files are read in template mode",
                a.attachment.path
            ));
            continue;
        }
        // Only the start of a long document: it feeds a few list items, and
        // a 10 MB brief must not become a 30 MB page.
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&a.file).and_then(|f| {
            use std::io::Read;
            f.take(MAX_DOCUMENT_BYTES).read_to_end(&mut bytes)
        });
        if a.size > MAX_DOCUMENT_BYTES {
            warnings.push(format!(
                "document {} is {} bytes; only its first {MAX_DOCUMENT_BYTES} were read",
                a.attachment.path, a.size
            ));
        }
        match read.map(|_| String::from_utf8_lossy(&bytes).into_owned()) {
            Ok(text) if !text.contains('\u{FFFD}') || a.size > MAX_DOCUMENT_BYTES => out.push(text),
            _ => warnings
                .push(format!("document {} is not UTF-8 text and was not read", a.attachment.path)),
        }
    }
    out
}

fn extension(path: &str) -> String {
    path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// The image type from the first bytes, so a renamed file can't pass as an
/// image.
fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

type Images = (Option<Image>, Vec<Image>, Vec<(String, Vec<u8>)>, Vec<String>);

/// Copy image attachments into `assets/images/` and pick the logo.
fn collect_images(job: &Job, warnings: &mut Vec<String>) -> Images {
    let mut logo = None;
    let mut images = Vec::new();
    let mut assets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut logo_colors = Vec::new();
    for a in job.attachments.iter().filter(|a| a.attachment.kind == AttachmentKind::Image) {
        let bytes = match std::fs::read(&a.file) {
            Ok(b) => b,
            Err(e) => {
                warnings.push(format!("image {} could not be read: {e}", a.attachment.path));
                continue;
            }
        };
        // SECURITY: only raster images whose bytes match a known format are
        // published; an SVG or HTML file named .png could carry script.
        let Some(ext) = sniff_image(&bytes) else {
            warnings.push(format!(
                "{} is not a PNG, JPEG, GIF or WebP image and was left out",
                a.attachment.path
            ));
            continue;
        };
        let stem = a.attachment.path.rsplit('/').next().unwrap_or("image");
        let stem = stem.rsplit_once('.').map(|(s, _)| s).unwrap_or(stem);
        let mut slug = slugify(stem, 40);
        if slug.is_empty() {
            slug = "image".into();
        }
        let mut path = format!("assets/images/{slug}.{ext}");
        let mut n = 1;
        while assets.iter().any(|(p, _)| *p == path) {
            n += 1;
            path = format!("assets/images/{slug}-{n}.{ext}");
        }
        let description = a.attachment.description.clone().unwrap_or_default();
        let is_logo = logo.is_none()
            && (description.to_lowercase().contains("logo")
                || a.attachment.path.to_lowercase().contains("logo"));
        let image = Image { src: path.clone(), alt: description };
        if is_logo {
            if ext == "png" {
                logo_colors = dominant_colors(&bytes, 3);
            }
            logo = Some(image);
        } else {
            images.push(image);
        }
        assets.push((path, bytes));
    }
    (logo, images, assets, logo_colors)
}

fn section(id: &str, kind: SectionKind, title: String) -> Section {
    Section { id: id.into(), kind, title, lead: None, paragraphs: Vec::new(), items: Vec::new() }
}

/// The sections: the customer's pages when given, else the kind's usual
/// ones plus what the text asks for; filled with the facts.
fn build_sections(
    kind: SiteKind,
    pages: &[String],
    text: &str,
    facts: &Facts,
    about: &[String],
    images: &[Image],
    t: &Strings,
) -> Vec<Section> {
    let title = |k: SectionKind| t.get(&format!("section_{}", k.as_str())).to_string();
    let mut out: Vec<Section> = Vec::new();
    let push = |s: Section, out: &mut Vec<Section>| {
        if !out.iter().any(|o| o.kind == s.kind && s.kind != SectionKind::Text) {
            out.push(s);
        }
    };
    if !about.is_empty() {
        let mut s = section("about", SectionKind::About, title(SectionKind::About));
        s.paragraphs = about.to_vec();
        push(s, &mut out);
    }
    if pages.is_empty() {
        let lower = deunicode::deunicode(text).to_lowercase();
        let wanted: &[SectionKind] = match kind {
            SiteKind::Restaurant => &[SectionKind::Menu, SectionKind::Location],
            SiteKind::Shop => &[SectionKind::Products],
            SiteKind::Portfolio => &[SectionKind::Gallery],
            SiteKind::Services => &[SectionKind::Services, SectionKind::Pricing],
            SiteKind::Clinic => &[
                SectionKind::Services,
                SectionKind::Hours,
                SectionKind::Team,
                SectionKind::Booking,
            ],
            SiteKind::Saas => &[SectionKind::Features, SectionKind::Pricing],
            SiteKind::Nonprofit => &[SectionKind::Donate],
            SiteKind::Events => &[SectionKind::Events],
            SiteKind::Generic => &[SectionKind::Services],
        };
        for k in wanted {
            push(section(k.as_str(), *k, title(*k)), &mut out);
        }
        let asked: &[(&[&str], SectionKind)] = &[
            (&["pricing", "prices", "preise", "precos"], SectionKind::Pricing),
            (&["features"], SectionKind::Features),
            (&["gallery", "photos", "fotos", "images"], SectionKind::Gallery),
            (&["opening hours", "sprechzeiten", "offnungszeiten", "horario"], SectionKind::Hours),
            (
                &["appointment", "termin", "book a", "booking", "marcar", "agendar"],
                SectionKind::Booking,
            ),
            (&["pre-order", "preorder", "order online"], SectionKind::Order),
            (&["where to find", "find us", "address", "map"], SectionKind::Location),
        ];
        for (words, k) in asked {
            if words.iter().any(|w| lower.contains(w)) {
                push(section(k.as_str(), *k, title(*k)), &mut out);
            }
        }
    } else {
        let mut used = BTreeSet::new();
        for page in pages {
            let Some(k) = SectionKind::from_page(page) else { continue };
            let mut id = slugify(page, 40);
            if id.is_empty() || !used.insert(id.clone()) {
                id = format!("{}-{}", k.as_str(), used.len() + 1);
                used.insert(id.clone());
            }
            let mut s = section(&id, k, capitalize(page));
            if k == SectionKind::Text {
                s.paragraphs = Vec::new();
            }
            push(s, &mut out);
        }
    }
    if !facts.hours.is_empty()
        && !out.iter().any(|s| matches!(s.kind, SectionKind::Hours | SectionKind::Location))
    {
        push(section("hours", SectionKind::Hours, title(SectionKind::Hours)), &mut out);
    }
    if !out
        .iter()
        .any(|s| matches!(s.kind, SectionKind::Contact | SectionKind::Booking | SectionKind::Order))
    {
        push(section("contact", SectionKind::Contact, title(SectionKind::Contact)), &mut out);
    }
    for s in &mut out {
        s.items = items_for(s.kind, kind, facts, images);
    }
    out
}

fn items_for(section: SectionKind, kind: SiteKind, facts: &Facts, images: &[Image]) -> Vec<Item> {
    let listed = || facts.items.iter().map(|i| Item::named(capitalize(i)));
    match section {
        SectionKind::Menu => listed()
            .map(|mut i| {
                i.category = menu_category(&i.name).map(String::from);
                i
            })
            .collect(),
        SectionKind::Order
        | SectionKind::Services
        | SectionKind::Features
        | SectionKind::Events => listed().collect(),
        SectionKind::Donate => facts
            .prices
            .iter()
            .map(|p| Item {
                price: Some(p.amount.clone()),
                ..Item::named(if p.label.is_empty() { p.amount.clone() } else { p.label.clone() })
            })
            .collect(),
        SectionKind::Products => listed()
            .enumerate()
            .map(|(n, mut i)| {
                // A sample price so the cart can be tried; the page says so.
                i.price = Some(format!("{}.00", 12 + 7 * (n % 5)));
                i
            })
            .collect(),
        SectionKind::Pricing => facts
            .prices
            .iter()
            .map(|p| Item { price: Some(p.amount.clone()), ..Item::named(p.label.clone()) })
            .collect(),
        SectionKind::Gallery => {
            let mut items: Vec<Item> = images
                .iter()
                .map(|img| Item { image: Some(img.clone()), ..Item::named(img.alt.clone()) })
                .collect();
            if kind == SiteKind::Portfolio || items.is_empty() {
                items.extend(listed().map(|mut i| {
                    // "Kanazawa library (2024)" → name + year as the filter.
                    if let Some((name, rest)) = i.name.rsplit_once('(')
                        && let Some(year) = rest
                            .strip_suffix(')')
                            .filter(|y| y.len() == 4 && y.chars().all(|c| c.is_ascii_digit()))
                    {
                        i.category = Some(year.to_string());
                        i.detail = Some(year.to_string());
                        i.name = name.trim().to_string();
                    }
                    i
                }));
            }
            items
        }
        _ => Vec::new(),
    }
}

fn menu_category(name: &str) -> Option<&'static str> {
    let n = name.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if has(&[
        "bread",
        "loaf",
        "sourdough",
        "rye",
        "baguette",
        "brot",
        "pão",
        "pain",
        "focaccia",
        "ciabatta",
    ]) {
        Some("Bread")
    } else if has(&[
        "bun",
        "cake",
        "pastry",
        "pastries",
        "cookie",
        "croissant",
        "tart",
        "brownie",
        "kuchen",
        "bolo",
        "muffin",
        "cinnamon",
    ]) {
        Some("Sweet")
    } else if has(&["coffee", "tea", "latte", "espresso", "juice", "kaffee", "café", "drink"]) {
        Some("Drinks")
    } else if has(&["seasonal", "special", "saisonal"]) {
        Some("Seasonal")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_the_corpus() {
        assert_eq!(
            detect_kind("We're a small sourdough bakery in Hackney. pre-order a loaf"),
            SiteKind::Restaurant
        );
        assert_eq!(
            detect_kind(
                "landing page for our invoicing app for freelancers. need pricing, features, signup CTA."
            ),
            SiteKind::Saas
        );
        assert_eq!(
            detect_kind("Wir sind eine Zahnarztpraxis in Berlin-Charlottenburg."),
            SiteKind::Clinic
        );
        assert_eq!(
            detect_kind("Portfolio for my architectural photography. a gallery"),
            SiteKind::Portfolio
        );
        assert_eq!(
            detect_kind("I run a dog walking business in Lisbon, group walks and solo walks"),
            SiteKind::Services
        );
        assert_eq!(
            detect_kind("A charity that needs volunteers and donations"),
            SiteKind::Nonprofit
        );
        assert_eq!(detect_kind("Our summer music festival: lineup and tickets"), SiteKind::Events);
        assert_eq!(detect_kind("We sell handmade ceramics in our online shop"), SiteKind::Shop);
        assert_eq!(detect_kind("hello"), SiteKind::Generic);
        assert_eq!(detect_kind("a happy apple"), SiteKind::Generic);
    }

    #[test]
    fn facts_from_the_bakery() {
        let f = extract_facts(
            "We're a small sourdough bakery in Hackney. I'd like people to see what we bake each day (sourdough, rye, cinnamon buns, seasonal stuff), our opening hours (Tue-Sun 7am-3pm) and where to find us.",
        );
        assert_eq!(f.hours, [Hours { days: "Tue-Sun".into(), time: "7am-3pm".into() }]);
        assert_eq!(f.items, ["sourdough", "rye", "cinnamon buns", "seasonal stuff"]);
        assert_eq!(f.places, ["Hackney"]);
    }

    #[test]
    fn prices_from_a_tier_list() {
        let f = extract_facts("need pricing (free / pro $12 / team $29), features");
        let got: Vec<(&str, &str)> =
            f.prices.iter().map(|p| (p.label.as_str(), p.amount.as_str())).collect();
        assert_eq!(got, [("Free", "$0"), ("Pro", "$12"), ("Team", "$29")]);
        assert!(f.items.is_empty());
    }

    #[test]
    fn places_and_german_items() {
        let f = extract_facts(
            "Wir sind eine Zahnarztpraxis in Berlin-Charlottenburg. Leistungen (Prophylaxe, Implantate, Kinderzahnheilkunde), Sprechzeiten Mo-Fr 8-18 Uhr",
        );
        assert_eq!(f.places, ["Berlin-Charlottenburg"]);
        assert_eq!(f.items, ["Prophylaxe", "Implantate", "Kinderzahnheilkunde"]);
        assert_eq!(f.hours[0].days, "Mo-Fr");
        let f = extract_facts(
            "I walk dogs in Estrela and Campo de Ourique, group walks and solo walks",
        );
        assert_eq!(f.places, ["Estrela", "Campo de Ourique"]);
        assert_eq!(f.items, ["group walks", "solo walks"]);
    }

    #[test]
    fn taglines_and_names() {
        assert_eq!(
            tagline("We're a small sourdough bakery in Hackney. I'd like").as_deref(),
            Some("A small sourdough bakery in Hackney")
        );
        assert_eq!(
            tagline("hi um so I run a dog walking business in Lisbon, it's called Patinhas")
                .as_deref(),
            Some("A dog walking business in Lisbon")
        );
        assert_eq!(
            tagline("Wir sind eine Zahnarztpraxis in Berlin-Charlottenburg. Wir").as_deref(),
            Some("Eine Zahnarztpraxis in Berlin-Charlottenburg")
        );
        assert_eq!(tagline("landing page for our app"), None);
        assert_eq!(
            site_name(None, "I run a dog walking business in Lisbon, it's called Patinhas, I walk"),
            "Patinhas"
        );
        assert_eq!(site_name(Some("  Rosie's Loaves "), "x"), "Rosie's Loaves");
    }

    #[test]
    fn descriptive_sentences_skip_the_request() {
        let about = descriptive_sentences(
            "We're a small sourdough bakery in Hackney. I'd like a simple site where people can see things. Ideally customers can pre-order.",
        );
        assert_eq!(about, ["We're a small sourdough bakery in Hackney."]);
    }

    #[test]
    fn sections_follow_the_pages() {
        let t = Strings::builtin_for_tests();
        let facts =
            extract_facts("what we bake (sourdough, rye, cinnamon buns), hours (Tue-Sun 7am-3pm)");
        let pages: Vec<String> =
            ["home", "menu", "pre-order", "visit us"].map(String::from).to_vec();
        let s = build_sections(SiteKind::Restaurant, &pages, "", &facts, &[], &[], &t);
        let got: Vec<(&str, SectionKind)> = s.iter().map(|s| (s.id.as_str(), s.kind)).collect();
        assert_eq!(
            got,
            [
                ("menu", SectionKind::Menu),
                ("pre-order", SectionKind::Order),
                ("visit-us", SectionKind::Location)
            ]
        );
        assert_eq!(s[0].items.len(), 3);
        assert_eq!(s[0].items[0].category.as_deref(), Some("Bread"));
        assert_eq!(s[1].title, "Pre-order");
    }
}
