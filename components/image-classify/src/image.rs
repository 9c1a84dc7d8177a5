//! EfficientNet-Lite0's preprocessing: centre square crop, bilinear resize to
//! 224×224 (half-pixel centres, no antialiasing) and ImageNet mean/std, in the
//! model's NCHW layout. `models/efficientnet_lite0.py` (`preprocess`) does the
//! same in numpy for the reference. Decoding (PNG, JPEG) is `verge-imaging`'s,
//! re-exported here.

pub use verge_imaging::{MAX_PIXELS, Rgb, decode, sniff};

pub const SIZE: usize = 224;
const MEAN: [f64; 3] = [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0];
const STD: [f64; 3] = [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0];

/// The model's input: `[3, 224, 224]` floats (planar RGB), from the centre square of `img`.
pub fn preprocess(img: &Rgb) -> Vec<f32> {
    let side = img.width.min(img.height);
    let (top, left) = ((img.height - side) / 2, (img.width - side) / 2);
    let at = |y: usize, x: usize, c: usize| {
        f64::from(img.pixels[((top + y) * img.width + left + x) * 3 + c])
    };
    // The crop is square: rows and columns share one axis.
    let steps = verge_imaging::bilinear_axis(side, SIZE);
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
