//! PNG and JPEG decoding into 8-bit RGB, with a pixel budget.

use verge_sdk::Error;

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
    let pixels = if channels == 3 && data.len() == w * h * 3 {
        // Already RGB: the decoder's buffer is the image (no second copy,
        // no second megabyte of fresh memory).
        buf.truncate(w * h * 3);
        buf
    } else {
        let mut pixels = Vec::with_capacity(w * h * 3);
        for px in data.chunks_exact(channels) {
            if channels < 3 {
                pixels.extend([px[0]; 3]);
            } else {
                pixels.extend(&px[..3]);
            }
        }
        pixels
    };
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
}
