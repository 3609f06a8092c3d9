//! Images of a site: decoded, checked, scaled down and re-encoded before they are published.
//!
//! A decode is the real type check: bytes that do not decode as the format their name claims
//! are refused, whatever their first bytes say. Re-encoding is what strips the metadata
//! (EXIF, GPS, XMP, comments): the encoders write pixels only. The EXIF orientation is applied
//! to the pixels first, so a phone photo stays upright without its tag.
//!
//! Formats out: JPEG stays JPEG (quality 85); a lossless source (PNG, a still GIF) becomes
//! PNG or lossless WebP, whichever is smaller; an animated GIF is re-encoded frame by frame
//! at its size. The image crate's WebP encoder is lossless only, and a lossless WebP of a
//! photo is larger than its JPEG, so photos are not tried as WebP.
//!
//! Invariant: no decoder allocates more than [`MAX_DECODE_BYTES`] or accepts a side longer
//! than [`MAX_SIDE`], so a decompression bomb fails instead of taking the builder down.

use std::io::Cursor;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Largest side accepted before scaling (pixels).
pub const MAX_SIDE: u32 = 16_384;
/// Most memory one decode may take.
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
const JPEG_QUALITY: u8 = 85;

/// The formats a site may publish, by file extension.
pub fn format_of(path: &str) -> Option<ImageFormat> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "png" => Some(ImageFormat::Png),
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "gif" => Some(ImageFormat::Gif),
        "webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// An image ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub bytes: Vec<u8>,
    /// The extension of the format it is now in.
    pub ext: &'static str,
    pub width: u32,
    pub height: u32,
    /// It was larger than the maximum and was scaled down from this size.
    pub scaled_from: Option<(u32, u32)>,
}

/// Why an image cannot be published.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("its bytes are {found}, not the {claimed} its name says")]
    Mismatch { claimed: &'static str, found: String },
    #[error("it does not decode as {claimed}: {reason}")]
    Corrupt { claimed: &'static str, reason: String },
}

fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        _ => "an image",
    }
}

/// Pixels all frames of an animated GIF may hold together (400 MB as RGBA).
pub const MAX_ANIMATION_PIXELS: u64 = 100_000_000;

/// Decode `bytes` as `claimed`, scale to fit `max_px`, strip metadata, re-encode; with
/// `keep_format`, in the format it came in (something refers to it by its name).
pub fn process(
    bytes: &[u8],
    claimed: ImageFormat,
    max_px: u32,
    keep_format: bool,
) -> Result<Processed, ImageError> {
    let claimed_name = name(claimed);
    // SECURITY: the name decides how a browser is told to read the file; bytes of another
    // type (an HTML or SVG page named .png) must not be published under it.
    match image::guess_format(bytes) {
        Ok(found) if found == claimed => {}
        Ok(found) => {
            return Err(ImageError::Mismatch { claimed: claimed_name, found: name(found).into() });
        }
        Err(_) => {
            let found = "not an image format".to_owned();
            return Err(ImageError::Mismatch { claimed: claimed_name, found });
        }
    }
    let corrupt =
        |e: image::ImageError| ImageError::Corrupt { claimed: claimed_name, reason: e.to_string() };
    if claimed == ImageFormat::Gif
        && let Some(frames) = animation(bytes, max_px).map_err(corrupt)?
    {
        return Ok(frames);
    }
    let original = bytes;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), claimed);
    // SECURITY: a few KB can declare a 100,000 × 100,000 image (a decompression bomb).
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    let (w, h) = (img.width(), img.height());
    let mut scaled_from = None;
    if w.max(h) > max_px {
        // Triangle over the full footprint: smooth for downscaling, 2x faster than CatmullRom.
        img = img.resize(max_px, max_px, FilterType::Triangle);
        scaled_from = Some((w, h));
    }
    let lossy = claimed == ImageFormat::Jpeg
        || (claimed == ImageFormat::WebP && !img.color().has_alpha() && is_lossy_webp(bytes));
    let mut candidates = match (keep_format, claimed) {
        (true, ImageFormat::Png) => vec![(encode_png(&img).map_err(corrupt)?, "png")],
        (true, ImageFormat::WebP) => vec![(encode_webp(&img).map_err(corrupt)?, "webp")],
        (true, ImageFormat::Gif) => vec![(encode_gif(&img).map_err(corrupt)?, "gif")],
        _ if lossy => vec![(encode_jpeg(&img).map_err(corrupt)?, "jpg")],
        _ => vec![
            (encode_png(&img).map_err(corrupt)?, "png"),
            (encode_webp(&img).map_err(corrupt)?, "webp"),
        ],
    };
    let smallest = candidates
        .iter()
        .enumerate()
        .min_by_key(|(_, (b, _))| b.len())
        .map(|(i, _)| i)
        .expect("there is at least one candidate");
    let (mut bytes, mut ext) = candidates.swap_remove(smallest);
    // The original, when it is already what we would publish and about as small: no
    // generation loss, and finalizing a finalized site changes nothing.
    let untouched =
        scaled_from.is_none() && orientation == image::metadata::Orientation::NoTransforms;
    if untouched
        && metadata_free(original, claimed)
        && original.len() as u64 * 100 <= bytes.len() as u64 * 105
    {
        bytes = original.to_vec();
        ext = if claimed == ImageFormat::Jpeg { "jpg" } else { "png" };
    }
    Ok(Processed { bytes, ext, width: img.width(), height: img.height(), scaled_from })
}

/// The PNG or JPEG holds pixels and colour information only: no EXIF, XMP, IPTC, text or
/// comments. Anything not understood counts as metadata.
fn metadata_free(bytes: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Png => {
            let mut at = 8;
            while let Some(head) = bytes.get(at..at + 8) {
                let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let kind = &head[4..8];
                const PIXELS: &[&[u8]] = &[
                    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB",
                    b"iCCP", b"sBIT", b"bKGD", b"pHYs",
                ];
                if !PIXELS.contains(&kind) {
                    return false;
                }
                if kind == b"IEND" {
                    // Nothing may follow: trailing bytes are a payload, not an image.
                    return at + 12 == bytes.len() && len == 0;
                }
                at = at.saturating_add(12).saturating_add(len);
            }
            false
        }
        ImageFormat::Jpeg => {
            // Entropy-coded data stuffs every 0xFF with 0x00, so a metadata marker (APP1,
            // APP3–APP15, COM) shows as 0xFF 0xEx / 0xFE anywhere in the file, between
            // progressive scans too. The file must end at its EOI: no trailing payload.
            bytes.starts_with(&[0xff, 0xd8])
                && bytes.ends_with(&[0xff, 0xd9])
                && !bytes.windows(2).any(|w| {
                    w[0] == 0xff && (w[1] == 0xe1 || (0xe3..=0xef).contains(&w[1]) || w[1] == 0xfe)
                })
        }
        _ => false,
    }
}

/// A lossy WebP (`VP8 ` chunk) rather than a lossless one (`VP8L`).
fn is_lossy_webp(bytes: &[u8]) -> bool {
    bytes.windows(4).take(64).any(|w| w == b"VP8 ")
}

fn encode_jpeg(img: &DynamicImage) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    // JPEG has no alpha: flatten what there is.
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))?;
    Ok(out)
}

fn encode_png(img: &DynamicImage) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, PngFilter::Adaptive);
    normalized(img).write_with_encoder(encoder)?;
    Ok(out)
}

fn encode_gif(img: &DynamicImage) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        encoder.encode_frame(image::Frame::new(img.to_rgba8()))?;
    }
    Ok(out)
}

fn encode_webp(img: &DynamicImage) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    let img = match img {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) | DynamicImage::ImageLuma8(_) => {
            img.clone()
        }
        _ => DynamicImage::ImageRgba8(img.to_rgba8()),
    };
    img.write_with_encoder(WebPEncoder::new_lossless(&mut out))?;
    Ok(out)
}

/// 16-bit and float images as 8 bits a channel: the web shows no more.
fn normalized(img: &DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_) => img.clone(),
        _ if img.color().has_alpha() => DynamicImage::ImageRgba8(img.to_rgba8()),
        _ => DynamicImage::ImageRgb8(img.to_rgb8()),
    }
}

/// An animated GIF that fits `max_px`, re-encoded frame by frame; `None` for a still one or
/// one too large (published as its first frame, scaled).
fn animation(bytes: &[u8], max_px: u32) -> image::ImageResult<Option<Processed>> {
    let mut decoder = GifDecoder::new(Cursor::new(bytes))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.set_limits(limits)?;
    let (width, height) = decoder.dimensions();
    if width.max(height) > max_px {
        return Ok(None);
    }
    // SECURITY: the limits above hold per frame; a few KB of GIF can declare thousands of
    // full-canvas frames, so the frames together get a budget too.
    let per_frame = u64::from(width) * u64::from(height);
    let mut frames = Vec::new();
    for frame in decoder.into_frames() {
        frames.push(frame?);
        if per_frame.saturating_mul(frames.len() as u64) > MAX_ANIMATION_PIXELS {
            return Err(image::ImageError::Limits(image::error::LimitError::from_kind(
                image::error::LimitErrorKind::InsufficientMemory,
            )));
        }
    }
    if frames.len() < 2 {
        return Ok(None);
    }
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        encoder.set_repeat(Repeat::Infinite)?;
        encoder.encode_frames(frames)?;
    }
    Ok(Some(Processed { bytes: out, ext: "gif", width, height, scaled_from: None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> DynamicImage {
        let mut seed = 0x2545_f491_u32;
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let v = (seed & 0x3f) as u8;
            image::Rgb([(x % 256) as u8 / 2 + v, (y % 256) as u8 / 2 + v, 128 + v])
        }))
    }

    fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A JPEG with an APP1 Exif segment holding orientation 6 (rotate 90° clockwise) and a
    /// GPS tag pointer, inserted after SOI as a camera writes it.
    fn with_exif(jpeg: &[u8]) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&[0, 2]); // two entries
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation = 6
        tiff.extend_from_slice(&[0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0]); // GPS IFD pointer
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn a_large_photo_is_scaled_rotated_and_stripped() {
        let jpeg = with_exif(&encoded(&noise(2400, 1200), ImageFormat::Jpeg));
        assert!(jpeg.windows(4).any(|w| w == b"Exif"));
        let out = process(&jpeg, ImageFormat::Jpeg, 1600, false).unwrap();
        assert_eq!(out.ext, "jpg");
        // Rotated upright (portrait now), then scaled to fit 1600.
        assert_eq!((out.width, out.height), (800, 1600));
        assert_eq!(out.scaled_from, Some((1200, 2400)));
        assert!(!out.bytes.windows(4).any(|w| w == b"Exif"), "EXIF survived");
        let back = image::load_from_memory(&out.bytes).unwrap();
        assert_eq!((back.width(), back.height()), (800, 1600));
    }

    #[test]
    fn a_flat_png_becomes_the_smaller_of_png_and_webp() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(300, 200, |x, _| {
            image::Rgba([if x < 150 { 200 } else { 20 }, 80, 40, 255])
        }));
        let png = encoded(&img, ImageFormat::Png);
        let out = process(&png, ImageFormat::Png, 1600, false).unwrap();
        assert!(matches!(out.ext, "png" | "webp"));
        assert_eq!((out.width, out.height, out.scaled_from), (300, 200, None));
        let back = image::load_from_memory(&out.bytes).unwrap().to_rgba8();
        assert_eq!(back.get_pixel(10, 10).0, [200, 80, 40, 255], "lossless");
        let other = if out.ext == "png" { encode_webp(&img) } else { encode_png(&img) };
        assert!(out.bytes.len() <= other.unwrap().len());
    }

    #[test]
    fn a_clean_small_original_is_kept_and_one_with_exif_is_not() {
        let jpeg = encoded(&noise(64, 48), ImageFormat::Jpeg);
        assert!(metadata_free(&jpeg, ImageFormat::Jpeg));
        let tagged = with_exif(&jpeg);
        assert!(!metadata_free(&tagged, ImageFormat::Jpeg));
        let out = process(&jpeg, ImageFormat::Jpeg, 1600, false).unwrap();
        assert!(out.bytes.len() <= jpeg.len());
        let png = encoded(&noise(8, 8), ImageFormat::Png);
        assert!(metadata_free(&png, ImageFormat::Png));
        let mut texted = png[..33].to_vec();
        let text = b"tEXtComment\0secret";
        texted.extend_from_slice(&((text.len() - 4) as u32).to_be_bytes());
        texted.extend_from_slice(text);
        texted.extend_from_slice(&[0, 0, 0, 0]);
        texted.extend_from_slice(&png[33..]);
        assert!(!metadata_free(&texted, ImageFormat::Png));
    }

    #[test]
    fn bytes_that_are_not_what_the_name_says_are_refused() {
        let png = encoded(&noise(10, 10), ImageFormat::Png);
        let err = process(&png, ImageFormat::Jpeg, 1600, false).unwrap_err();
        assert!(err.to_string().contains("bytes are PNG, not the JPEG"), "{err}");
        let err = process(b"<svg onload=alert(1)>", ImageFormat::Png, 1600, false).unwrap_err();
        assert!(matches!(err, ImageError::Mismatch { .. }), "{err}");
        // The right magic number, then garbage: only a decode tells.
        let mut cut = encoded(&noise(64, 64), ImageFormat::Jpeg);
        cut.truncate(200);
        let err = process(&cut, ImageFormat::Jpeg, 1600, false).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // A valid PNG header claiming 100,000 × 100,000 pixels.
        let mut png = encoded(&noise(1, 1), ImageFormat::Png);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let err = process(&png, ImageFormat::Png, 1600, false).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("limit"), "{err}");
    }
}
