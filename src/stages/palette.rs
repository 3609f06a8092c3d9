//! Colours: a full, readable palette from one or two brand colours, the
//! dominant colours of a logo, or the kind of site.
//!
//! Invariants: every colour is a lowercase `#rrggbb` (so it is safe in CSS),
//! `text` on `background` reaches WCAG AA for body text (4.5:1) and so does
//! `on_primary` on `primary`.

use serde::Serialize;

use super::SiteKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Palette {
    pub primary: String,
    pub primary_dark: String,
    pub on_primary: String,
    pub accent: String,
    pub on_accent: String,
    pub background: String,
    pub surface: String,
    pub text: String,
    pub muted: String,
    pub border: String,
    /// Where the colours came from: `style`, `logo` or `kind`.
    pub source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rgb(f64, f64, f64);

impl Rgb {
    fn parse(hex: &str) -> Option<Rgb> {
        let hex = hex.strip_prefix('#')?;
        if hex.len() != 6 {
            return None;
        }
        let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok().map(f64::from);
        Some(Rgb(c(0)?, c(2)?, c(4)?))
    }

    fn hex(self) -> String {
        let c = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        format!("#{:02x}{:02x}{:02x}", c(self.0), c(self.1), c(self.2))
    }

    fn mix(self, other: Rgb, t: f64) -> Rgb {
        Rgb(
            self.0 + (other.0 - self.0) * t,
            self.1 + (other.1 - self.1) * t,
            self.2 + (other.2 - self.2) * t,
        )
    }

    /// WCAG relative luminance.
    fn luminance(self) -> f64 {
        let lin = |v: f64| {
            let v = v / 255.0;
            if v <= 0.03928 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    fn saturation(self) -> f64 {
        let max = self.0.max(self.1).max(self.2);
        let min = self.0.min(self.1).min(self.2);
        if max == 0.0 { 0.0 } else { (max - min) / max }
    }
}

const WHITE: Rgb = Rgb(255.0, 255.0, 255.0);
const BLACK: Rgb = Rgb(0.0, 0.0, 0.0);

/// WCAG contrast ratio of two colours.
pub fn contrast(a: &str, b: &str) -> f64 {
    match (Rgb::parse(a), Rgb::parse(b)) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => 1.0,
    }
}

fn ratio(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// Move `c` towards `towards` until it reaches `target` contrast with `bg`.
fn ensure_contrast(c: Rgb, bg: Rgb, target: f64, towards: Rgb) -> Rgb {
    let mut out = c;
    for step in 1..=20 {
        if ratio(out, bg) >= target {
            return out;
        }
        out = c.mix(towards, f64::from(step) / 20.0);
    }
    out
}

/// The readable one of white and near-black on `bg`.
fn on(bg: Rgb) -> Rgb {
    let dark = Rgb(26.0, 26.0, 26.0);
    if ratio(WHITE, bg) >= ratio(dark, bg) { WHITE } else { dark }
}

impl Palette {
    /// Build from brand colours (lowercase `#rrggbb`, at least one).
    pub fn from_colors(colors: &[String], source: &'static str) -> Option<Palette> {
        let rgbs: Vec<Rgb> = colors.iter().filter_map(|c| Rgb::parse(c)).collect();
        if rgbs.is_empty() {
            return None;
        }
        // The light colour, if any, is the page; the strongest dark one leads.
        let light = rgbs
            .iter()
            .copied()
            .filter(|c| c.luminance() > 0.7)
            .max_by(|a, b| a.luminance().total_cmp(&b.luminance()));
        let mut strong: Vec<Rgb> = rgbs.iter().copied().filter(|c| c.luminance() <= 0.7).collect();
        strong.sort_by(|a, b| {
            (b.saturation() + 0.3 * (1.0 - b.luminance()))
                .total_cmp(&(a.saturation() + 0.3 * (1.0 - a.luminance())))
        });
        let primary = strong.first().copied().unwrap_or_else(|| rgbs[0].mix(BLACK, 0.55));
        let background = light.unwrap_or_else(|| primary.mix(WHITE, 0.94));
        Some(Palette::derive(primary, strong.get(1).copied(), background, source))
    }

    fn derive(primary: Rgb, accent: Option<Rgb>, background: Rgb, source: &'static str) -> Palette {
        // Buttons and links use the primary colour on the page: keep 4.5:1.
        let primary = ensure_contrast(primary, background, 4.5, BLACK);
        let text = ensure_contrast(primary.mix(BLACK, 0.78), background, 7.0, BLACK);
        let muted = ensure_contrast(text.mix(background, 0.35), background, 4.5, text);
        let accent = accent.unwrap_or_else(|| rotate_hue(primary, 35.0).mix(WHITE, 0.15));
        // Badges and buttons put small text on the accent: 4.5:1 with white or near-black,
        // darkening the accent when neither reaches it.
        let accent = if ratio(on(accent), accent) >= 4.6 {
            accent
        } else {
            ensure_contrast(accent, WHITE, 4.6, BLACK)
        };
        let surface = background.mix(WHITE, 0.55);
        Palette {
            primary: primary.hex(),
            primary_dark: primary.mix(BLACK, 0.25).hex(),
            on_primary: on(primary).hex(),
            accent: accent.hex(),
            on_accent: on(accent).hex(),
            background: background.hex(),
            surface: surface.hex(),
            text: text.hex(),
            muted: muted.hex(),
            border: text.mix(background, 0.82).hex(),
            source,
        }
    }

    /// The default look of a kind of site.
    pub fn for_kind(kind: SiteKind) -> Palette {
        let (primary, background) = match kind {
            SiteKind::Restaurant => ("#8a4b24", "#fbf5ec"),
            SiteKind::Shop => ("#c2410c", "#fff8f3"),
            SiteKind::Portfolio => ("#1f2933", "#fafafa"),
            SiteKind::Services => ("#1e3a5f", "#f6f8fb"),
            SiteKind::Clinic => ("#0f766e", "#f3fbfa"),
            SiteKind::Saas => ("#4338ca", "#f8f8ff"),
            SiteKind::Nonprofit => ("#2f6f3e", "#f6faf4"),
            SiteKind::Events => ("#7e22ce", "#fcf8ff"),
            SiteKind::Generic => ("#334155", "#f8fafc"),
        };
        let p = Rgb::parse(primary).expect("built-in colours are valid");
        let b = Rgb::parse(background).expect("built-in colours are valid");
        Palette::derive(p, None, b, "kind")
    }
}

fn rotate_hue(c: Rgb, degrees: f64) -> Rgb {
    let (r, g, b) = (c.0 / 255.0, c.1 / 255.0, c.2 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let l = (max + min) / 2.0;
    if max == min {
        return c;
    }
    let d = max - min;
    let s = if l > 0.5 { d / (2.0 - max - min) } else { d / (max + min) };
    let h = if max == r {
        (g - b) / d + if g < b { 6.0 } else { 0.0 }
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    } * 60.0;
    let h = (h + degrees).rem_euclid(360.0);
    let q = if l < 0.5 { l * (1.0 + s) } else { l + s - l * s };
    let p = 2.0 * l - q;
    let channel = |t: f64| {
        let t = t.rem_euclid(1.0);
        let v = if t < 1.0 / 6.0 {
            p + (q - p) * 6.0 * t
        } else if t < 0.5 {
            q
        } else if t < 2.0 / 3.0 {
            p + (q - p) * (2.0 / 3.0 - t) * 6.0
        } else {
            p
        };
        v * 255.0
    };
    let h = h / 360.0;
    Rgb(channel(h + 1.0 / 3.0), channel(h), channel(h - 1.0 / 3.0))
}

/// The dominant colours of a PNG image, most prominent first, skipping
/// transparent, near-white and near-grey pixels. Empty if it can't be read.
pub fn dominant_colors(png_bytes: &[u8], max: usize) -> Vec<String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let Ok(mut reader) = decoder.read_info() else { return Vec::new() };
    // SECURITY: a hostile PNG can claim huge dimensions; refuse before
    // allocating the frame buffer.
    let info = reader.info();
    if u64::from(info.width) * u64::from(info.height) > 16_000_000 {
        return Vec::new();
    }
    let Some(size) = reader.output_buffer_size() else { return Vec::new() };
    let mut buf = vec![0; size];
    let Ok(frame) = reader.next_frame(&mut buf) else { return Vec::new() };
    let channels = frame.color_type.samples();
    let mut counts = std::collections::HashMap::<(u8, u8, u8), (u64, [u64; 3])>::new();
    for px in buf[..frame.buffer_size()].chunks_exact(channels) {
        let (r, g, b, a) = match channels {
            1 => (px[0], px[0], px[0], 255),
            2 => (px[0], px[0], px[0], px[1]),
            3 => (px[0], px[1], px[2], 255),
            _ => (px[0], px[1], px[2], px[3]),
        };
        if a < 128 {
            continue;
        }
        let c = Rgb(f64::from(r), f64::from(g), f64::from(b));
        if c.luminance() > 0.9 || (c.saturation() < 0.12 && c.luminance() > 0.02) {
            continue;
        }
        let slot = counts.entry((r >> 4, g >> 4, b >> 4)).or_default();
        slot.0 += 1;
        slot.1[0] += u64::from(r);
        slot.1[1] += u64::from(g);
        slot.1[2] += u64::from(b);
    }
    let mut buckets: Vec<_> = counts.into_values().collect();
    buckets.sort_by_key(|b| std::cmp::Reverse(b.0));
    let mut out: Vec<Rgb> = Vec::new();
    for (n, sum) in buckets {
        let c = Rgb(sum[0] as f64 / n as f64, sum[1] as f64 / n as f64, sum[2] as f64 / n as f64);
        // Skip shades of a colour we already have.
        if out.iter().all(|o| {
            ratio(*o, c) > 1.6 || (o.0 - c.0).abs() + (o.1 - c.1).abs() + (o.2 - c.2).abs() > 90.0
        }) {
            out.push(c);
        }
        if out.len() == max {
            break;
        }
    }
    out.into_iter().map(Rgb::hex).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &Palette) {
        for c in [
            &p.primary,
            &p.primary_dark,
            &p.on_primary,
            &p.accent,
            &p.background,
            &p.surface,
            &p.text,
            &p.muted,
            &p.border,
        ] {
            assert!(
                c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|c| c.is_ascii_hexdigit()),
                "{c}"
            );
        }
        assert!(contrast(&p.text, &p.background) >= 4.5, "{p:?}");
        assert!(contrast(&p.muted, &p.background) >= 4.5, "{p:?}");
        assert!(contrast(&p.on_primary, &p.primary) >= 4.5, "{p:?}");
        assert!(contrast(&p.on_accent, &p.accent) >= 4.5, "{p:?}");
        assert!(contrast(&p.primary, &p.background) >= 4.5, "{p:?}");
    }

    #[test]
    fn bakery_colours_become_a_warm_palette() {
        let p = Palette::from_colors(&["#7a4b2a".into(), "#f4e9d8".into()], "style").unwrap();
        assert_eq!(p.primary, "#7a4b2a");
        assert_eq!(p.background, "#f4e9d8");
        check(&p);
    }

    #[test]
    fn every_kind_is_readable() {
        for kind in SiteKind::ALL {
            check(&Palette::for_kind(*kind));
        }
    }

    #[test]
    fn pale_or_garish_colours_still_read() {
        for colors in [
            vec!["#ffff00"],
            vec!["#ffffff"],
            vec!["#000000"],
            vec!["#00ff00", "#ff00ff"],
            vec!["#777777"],
        ] {
            let colors: Vec<String> = colors.into_iter().map(String::from).collect();
            check(&Palette::from_colors(&colors, "style").unwrap());
        }
    }

    #[test]
    fn dominant_colours_of_a_png() {
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, 4, 4);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().unwrap();
            let mut data = Vec::new();
            for i in 0..16 {
                data.extend_from_slice(if i < 10 {
                    &[20, 60, 160]
                } else if i < 14 {
                    &[255, 255, 255]
                } else {
                    &[200, 80, 20]
                });
            }
            w.write_image_data(&data).unwrap();
        }
        assert_eq!(dominant_colors(&png_bytes, 3), ["#143ca0", "#c85014"]);
        assert!(dominant_colors(b"not a png", 3).is_empty());
    }
}
