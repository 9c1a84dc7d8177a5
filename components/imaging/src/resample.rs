//! Bilinear resampling, two ways:
//!
//! - [`bilinear_axis`]: a plain resize with half-pixel centres, no
//!   antialiasing, edges clamped (what `image-classify` and its numpy
//!   reference use);
//! - [`warp_bilinear`]: an axis-aligned affine warp in the manner of a
//!   classic computer-vision warp with linear interpolation and a constant
//!   (black) border: output pixel `i` reads the source at `origin + i * step`
//!   (pixel centres at integer coordinates), positions quantised to 1/32
//!   pixel and weights to 15 bits, results rounded to 8 bits. MediaPipe's
//!   CPU image-to-tensor conversion samples this way, which is what
//!   `face-detect` needs to agree with it.

use crate::Rgb;

/// Source taps of a half-pixel-centre bilinear resize of `n_in` samples to
/// `n_out`: for each output index, the two source indices and the weight of
/// the second. Positions outside the source are clamped to its edges.
pub fn bilinear_axis(n_in: usize, n_out: usize) -> Vec<(usize, usize, f64)> {
    (0..n_out)
        .map(|i| {
            let pos = ((i as f64 + 0.5) * (n_in as f64 / n_out as f64) - 0.5)
                .clamp(0.0, (n_in - 1) as f64);
            let lo = pos.floor() as usize;
            (lo, (lo + 1).min(n_in - 1), pos - lo as f64)
        })
        .collect()
}

/// One axis of an affine sampling grid: output index `i` reads the source at
/// `origin + i * step` (in source pixels, pixel centres at integers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub origin: f64,
    pub step: f64,
}

/// Subpixel positions per pixel (5 bits).
const SUBPIXEL: i64 = 32;
/// Fixed-point scale of the four weights of a pixel (15 bits).
const WEIGHT_BITS: u32 = 15;

/// For each output index: the first source index (maybe outside the image)
/// and the fraction, in 1/32 pixel, towards the next one.
fn taps(grid: Grid, n_out: usize) -> Vec<(i64, i64)> {
    (0..n_out)
        .map(|i| {
            let pos = grid.origin + i as f64 * grid.step;
            // Round to the nearest 1/32 (ties to even), then split.
            let q = (pos * SUBPIXEL as f64)
                .round_ties_even()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i64;
            (q.div_euclid(SUBPIXEL), q.rem_euclid(SUBPIXEL))
        })
        .collect()
}

/// A `width`×`height` image sampled bilinearly from `img` on the grid
/// `(x, y)`; source pixels outside `img` count as black.
pub fn warp_bilinear(img: &Rgb, width: usize, height: usize, x: Grid, y: Grid) -> Rgb {
    let (xs, ys) = (taps(x, width), taps(y, height));
    let (w, h) = (img.width as i64, img.height as i64);
    // The pixel at (sx, sy), black outside the image: one bounds check per
    // tap rather than per channel.
    let at = |sx: i64, sy: i64| -> [i32; 3] {
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            let i = ((sy * w + sx) as usize) * 3;
            let p = &img.pixels[i..i + 3];
            [p[0].into(), p[1].into(), p[2].into()]
        } else {
            [0; 3]
        }
    };
    const S: i32 = SUBPIXEL as i32;
    let mut pixels = vec![0u8; width * height * 3];
    // `max(1)`: a zero-width image has no rows to fill (and chunks may not be empty).
    for (row, &(sy, fy)) in pixels.chunks_exact_mut((width * 3).max(1)).zip(&ys) {
        for (o, &(sx, fx)) in row.chunks_exact_mut(3).zip(&xs) {
            let (fx, fy) = (fx as i32, fy as i32);
            // (32 - f) * f' products of the two axes, times 32: they sum to
            // 1 << 15, so a sum of four 8-bit taps fits an i32.
            let weights = [
                (S - fx) * (S - fy) * S,
                fx * (S - fy) * S,
                (S - fx) * fy * S,
                fx * fy * S,
            ];
            let taps = [
                at(sx, sy),
                at(sx + 1, sy),
                at(sx, sy + 1),
                at(sx + 1, sy + 1),
            ];
            for (c, v) in o.iter_mut().enumerate() {
                let sum: i32 = taps.iter().zip(weights).map(|(t, w)| t[c] * w).sum();
                *v = ((sum + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS).clamp(0, 255) as u8;
            }
        }
    }
    Rgb {
        width,
        height,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_pixel_axis() {
        // Same size: the identity.
        assert_eq!(
            bilinear_axis(3, 3),
            vec![(0, 1, 0.0), (1, 2, 0.0), (2, 2, 0.0)]
        );
        // Halving: each output sits between two inputs.
        assert_eq!(bilinear_axis(4, 2), vec![(0, 1, 0.5), (2, 3, 0.5)]);
        // Upscaling clamps at the edges.
        let up = bilinear_axis(2, 4);
        assert_eq!(up[0], (0, 1, 0.0));
        assert_eq!(up[3], (1, 1, 0.0));
        assert_eq!(up[1], (0, 1, 0.25));
    }

    fn ramp(w: usize, h: usize) -> Rgb {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                pixels.extend([(x * 10) as u8, (y * 10) as u8, 200]);
            }
        }
        Rgb {
            width: w,
            height: h,
            pixels,
        }
    }

    #[test]
    fn integer_steps_pick_pixels() {
        let img = ramp(8, 8);
        let g = Grid {
            origin: 0.0,
            step: 2.0,
        };
        let out = warp_bilinear(&img, 4, 4, g, g);
        assert_eq!(out.width, 4);
        for y in 0..4 {
            for x in 0..4 {
                let p = &out.pixels[(y * 4 + x) * 3..][..3];
                assert_eq!(p, [(x * 20) as u8, (y * 20) as u8, 200]);
            }
        }
    }

    #[test]
    fn fractions_interpolate_and_borders_are_black() {
        let img = ramp(4, 4);
        // Half way between columns 0 and 1, and between rows 1 and 2.
        let x = Grid {
            origin: 0.5,
            step: 1.0,
        };
        let y = Grid {
            origin: 1.5,
            step: 1.0,
        };
        let out = warp_bilinear(&img, 3, 1, x, y);
        assert_eq!(&out.pixels[..3], [5, 15, 200]);
        // A letterbox: rows above and below the image are black, and the
        // row half over the edge is half the edge's value.
        let y = Grid {
            origin: -1.0,
            step: 0.5,
        };
        let x = Grid {
            origin: 0.0,
            step: 1.0,
        };
        let out = warp_bilinear(&img, 1, 12, x, y);
        let blue: Vec<u8> = out.pixels.chunks(3).map(|p| p[2]).collect();
        assert_eq!(blue, [0, 100, 200, 200, 200, 200, 200, 200, 200, 100, 0, 0]);
        // Rounding to 1/32 pixel: 0.01 of a pixel is no move at all.
        let x = Grid {
            origin: 0.01,
            step: 1.0,
        };
        let out = warp_bilinear(&img, 1, 1, x, x);
        assert_eq!(&out.pixels[..3], [0, 0, 200]);
    }
}
