//! Decoding (PNG, JPEG) and EfficientNet-Lite0's preprocessing: centre square
//! crop, bilinear resize to 224×224 (half-pixel centres, no antialiasing) and
//! ImageNet mean/std, in the model's NCHW layout. `models/efficientnet_lite0.py`
//! (`preprocess`) does the same in numpy for the reference.

use verge_sdk::Error;

pub const SIZE: usize = 224;
const MEAN: [f64; 3] = [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0];
const STD: [f64; 3] = [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0];
/// Larger images are refused rather than decoded (memory of a 128 MB instance).
pub const MAX_PIXELS: usize = 40_000_000;

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// The image format from its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpeg")
    } else {
        None
    }
}

fn too_large(width: usize, height: usize) -> Result<(), Error> {
    if width == 0 || height == 0 || width.saturating_mul(height) > MAX_PIXELS {
        return Err(Error::invalid(format!(
            "image of {width}×{height} pixels: expected 1 to {MAX_PIXELS} pixels"
        )));
    }
    Ok(())
}

/// Decodes a PNG or JPEG into RGB (alpha dropped, grey replicated).
pub fn decode(bytes: &[u8]) -> Result<Rgb, Error> {
    match sniff(bytes) {
        Some("png") => decode_png(bytes),
        Some(_) => decode_jpeg(bytes),
        None => Err(Error::invalid(
            "not a PNG or JPEG image (unrecognised signature)",
        )),
    }
}

fn decode_png(bytes: &[u8]) -> Result<Rgb, Error> {
    let bad = |e: png::DecodingError| Error::invalid(format!("invalid PNG: {e}"));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    too_large(w, h)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::invalid("PNG too large"))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let data = &buf[..frame.buffer_size()];
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(Error::invalid("indexed PNG was not expanded"));
        }
    };
    let mut pixels = Vec::with_capacity(w * h * 3);
    for px in data.chunks_exact(channels) {
        if channels < 3 {
            pixels.extend([px[0]; 3]);
        } else {
            pixels.extend(&px[..3]);
        }
    }
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb, Error> {
    use zune_jpeg::JpegDecoder;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(1 << 14)
        .set_max_height(1 << 14);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| Error::invalid(format!("invalid JPEG: {e:?}")))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| Error::invalid("invalid JPEG: no dimensions"))?;
    too_large(w, h)?;
    let pixels = decoder
        .decode()
        .map_err(|e| Error::invalid(format!("invalid JPEG: {e:?}")))?;
    if pixels.len() != w * h * 3 {
        return Err(Error::invalid(format!(
            "invalid JPEG: {} bytes decoded for {w}×{h} RGB",
            pixels.len()
        )));
    }
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

/// Source index pairs and weights of a half-pixel-centre bilinear resize of `n_in` to `SIZE`.
fn axis(n_in: usize) -> Vec<(usize, usize, f64)> {
    (0..SIZE)
        .map(|i| {
            let pos = ((i as f64 + 0.5) * (n_in as f64 / SIZE as f64) - 0.5)
                .clamp(0.0, (n_in - 1) as f64);
            let lo = pos.floor() as usize;
            (lo, (lo + 1).min(n_in - 1), pos - lo as f64)
        })
        .collect()
}

/// The model's input: `[3, 224, 224]` floats (planar RGB), from the centre square of `img`.
pub fn preprocess(img: &Rgb) -> Vec<f32> {
    let side = img.width.min(img.height);
    let (top, left) = ((img.height - side) / 2, (img.width - side) / 2);
    let at = |y: usize, x: usize, c: usize| {
        f64::from(img.pixels[((top + y) * img.width + left + x) * 3 + c])
    };
    // The crop is square: rows and columns share one axis.
    let steps = axis(side);
    let mut out = vec![0f32; 3 * SIZE * SIZE];
    for (oy, &(y0, y1, fy)) in steps.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in steps.iter().enumerate() {
            for c in 0..3 {
                // Rows first, then columns, as the numpy reference does.
                let r0 = at(y0, x0, c) * (1.0 - fy) + at(y1, x0, c) * fy;
                let r1 = at(y0, x1, c) * (1.0 - fy) + at(y1, x1, c) * fy;
                let v = r0 * (1.0 - fx) + r1 * fx;
                out[c * SIZE * SIZE + oy * SIZE + ox] = ((v - MEAN[c]) / STD[c]) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn decodes_png_variants() {
        let rgba = png_bytes(2, 1, png::ColorType::Rgba, &[1, 2, 3, 255, 4, 5, 6, 0]);
        assert_eq!(decode(&rgba).unwrap().pixels, vec![1, 2, 3, 4, 5, 6]);
        let grey = png_bytes(2, 1, png::ColorType::Grayscale, &[7, 9]);
        let img = decode(&grey).unwrap();
        assert_eq!((img.width, img.height), (2, 1));
        assert_eq!(img.pixels, vec![7, 7, 7, 9, 9, 9]);
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let msg = |b: &[u8]| match decode(b) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg(b"hello").contains("not a PNG or JPEG"));
        assert!(msg(b"").contains("not a PNG or JPEG"));
        assert!(msg(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").contains("invalid PNG"));
        assert!(msg(&[0xff, 0xd8, 0xff, 0xe0, 0, 0]).contains("invalid JPEG"));
    }

    #[test]
    fn preprocessing_is_centred_and_normalised() {
        // A uniform image stays uniform: every value is (v - mean) / std.
        let img = Rgb {
            width: 300,
            height: 200,
            pixels: [10u8, 128, 250].repeat(300 * 200),
        };
        let x = preprocess(&img);
        assert_eq!(x.len(), 3 * SIZE * SIZE);
        for (c, v) in [10.0, 128.0, 250.0].into_iter().enumerate() {
            let want = ((v - MEAN[c]) / STD[c]) as f32;
            assert!(
                x[c * SIZE * SIZE..(c + 1) * SIZE * SIZE]
                    .iter()
                    .all(|&y| y == want)
            );
        }
        // Upscaling a 2×2 image interpolates between its pixels.
        let img = Rgb {
            width: 2,
            height: 2,
            pixels: vec![0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255],
        };
        let x = preprocess(&img);
        assert!(x[0] < x[SIZE / 2] && x[SIZE / 2] < x[SIZE - 1]);
        assert_eq!(x[0], ((0.0 - MEAN[0]) / STD[0]) as f32);
    }
}
