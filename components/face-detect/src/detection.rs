//! The arithmetic around BlazeFace, as MediaPipe's face detection graph does
//! it (`FaceDetectionShortRange` → `FaceDetection` in mediapipe 0.10.21):
//!
//! - [`Letterbox`]: the image-to-tensor step with `keep_aspect_ratio`: the
//!   whole image, padded to the tensor's aspect ratio around its centre, is
//!   mapped onto the tensor; detections are mapped back the same way;
//! - [`ssd_anchors`]: the SSD anchor grid ([`AnchorOptions::short_range`]);
//! - [`decode`]: the model's raw regressors and scores into detections
//!   (boxes and keypoints relative to the tensor, scores through a sigmoid);
//! - [`weighted_nms`]: non-maximum suppression that averages each cluster of
//!   overlapping boxes, weighted by score.
//!
//! Everything here is plain `f32` arithmetic, in the same order as MediaPipe's
//! calculators, so the results agree with its Python solution to rounding.

use verge_imaging::Grid;

/// An SSD anchor: centre and size relative to the tensor (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub x_center: f32,
    pub y_center: f32,
    pub width: f32,
    pub height: f32,
}

/// The options of MediaPipe's SSD anchor generator that BlazeFace uses.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorOptions {
    pub input_width: usize,
    pub input_height: usize,
    pub min_scale: f32,
    pub max_scale: f32,
    pub anchor_offset_x: f32,
    pub anchor_offset_y: f32,
    /// One stride per layer: `num_layers` is its length.
    pub strides: Vec<usize>,
    pub aspect_ratios: Vec<f32>,
    /// Adds an anchor of this aspect ratio at the geometric mean of the
    /// layer's scale and the next one's (none when 0).
    pub interpolated_scale_aspect_ratio: f32,
    /// Every anchor 1×1: the model regresses sizes directly.
    pub fixed_anchor_size: bool,
}

impl AnchorOptions {
    /// `face_detection_short_range`: a 128×128 input, 4 layers of strides
    /// 8, 16, 16 and 16, two anchors per cell: 16·16·2 + 8·8·6 = 896.
    pub fn short_range() -> AnchorOptions {
        AnchorOptions {
            input_width: 128,
            input_height: 128,
            min_scale: 0.1484375,
            max_scale: 0.75,
            anchor_offset_x: 0.5,
            anchor_offset_y: 0.5,
            strides: vec![8, 16, 16, 16],
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: 1.0,
            fixed_anchor_size: true,
        }
    }
}

fn layer_scale(min_scale: f32, max_scale: f32, index: usize, count: usize) -> f32 {
    if count == 1 {
        (min_scale + max_scale) * 0.5
    } else {
        min_scale + (max_scale - min_scale) * index as f32 / (count as f32 - 1.0)
    }
}

/// The anchors, cell by cell (rows, then columns, then the cell's anchors),
/// layers of equal stride sharing one grid.
pub fn ssd_anchors(o: &AnchorOptions) -> Vec<Anchor> {
    let n = o.strides.len();
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < n {
        // (scale, aspect ratio) of each anchor of a cell of this grid.
        let mut shapes: Vec<(f32, f32)> = Vec::new();
        let mut last = layer;
        while last < n && o.strides[last] == o.strides[layer] {
            let scale = layer_scale(o.min_scale, o.max_scale, last, n);
            for &ratio in &o.aspect_ratios {
                shapes.push((scale, ratio));
            }
            if o.interpolated_scale_aspect_ratio > 0.0 {
                let next = if last == n - 1 {
                    1.0
                } else {
                    layer_scale(o.min_scale, o.max_scale, last + 1, n)
                };
                shapes.push(((scale * next).sqrt(), o.interpolated_scale_aspect_ratio));
            }
            last += 1;
        }
        let stride = o.strides[layer];
        let rows = o.input_height.div_ceil(stride);
        let cols = o.input_width.div_ceil(stride);
        for y in 0..rows {
            for x in 0..cols {
                for &(scale, ratio) in &shapes {
                    let (width, height) = if o.fixed_anchor_size {
                        (1.0, 1.0)
                    } else {
                        (scale * ratio.sqrt(), scale / ratio.sqrt())
                    };
                    anchors.push(Anchor {
                        x_center: (x as f32 + o.anchor_offset_x) / cols as f32,
                        y_center: (y as f32 + o.anchor_offset_y) / rows as f32,
                        width,
                        height,
                    });
                }
            }
        }
        layer = last;
    }
    anchors
}

/// How to read the model's raw outputs. Boxes are x, y, w, h (MediaPipe's
/// `reverse_output_order`), keypoints x, y; sizes are not exponentiated.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Values per anchor in the regressors (box and keypoints).
    pub num_coords: usize,
    pub box_coord_offset: usize,
    pub keypoint_coord_offset: usize,
    pub num_keypoints: usize,
    pub x_scale: f32,
    pub y_scale: f32,
    pub w_scale: f32,
    pub h_scale: f32,
    /// Raw scores are clipped to ± this before the sigmoid.
    pub score_clipping_thresh: f32,
    /// Detections scoring less are dropped.
    pub min_score_thresh: f32,
}

impl DecodeOptions {
    /// `face_detection_short_range` (16 values per anchor: a box and 6 keypoints).
    pub fn short_range(min_score_thresh: f32) -> DecodeOptions {
        DecodeOptions {
            num_coords: 16,
            box_coord_offset: 0,
            keypoint_coord_offset: 4,
            num_keypoints: 6,
            x_scale: 128.0,
            y_scale: 128.0,
            w_scale: 128.0,
            h_scale: 128.0,
            score_clipping_thresh: 100.0,
            min_score_thresh,
        }
    }
}

/// A detection: box and keypoints relative to whatever frame it is in (the
/// tensor after [`decode`]), and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub xmin: f32,
    pub ymin: f32,
    pub width: f32,
    pub height: f32,
    pub score: f32,
    pub keypoints: Vec<[f32; 2]>,
}

impl Detection {
    fn area(&self) -> f32 {
        self.width * self.height
    }
}

/// The sigmoid of the clipped raw score.
pub fn score(raw: f32, clip: f32) -> f32 {
    let s = raw.clamp(-clip, clip);
    1.0 / (1.0 + (-s).exp())
}

/// The detections scoring at least `min_score_thresh`, in anchor order.
/// `regressors` holds `num_coords` values per anchor, `scores` one raw score
/// per anchor. Boxes of negative or NaN size are dropped.
pub fn decode(
    regressors: &[f32],
    scores: &[f32],
    anchors: &[Anchor],
    o: &DecodeOptions,
) -> Vec<Detection> {
    let mut out = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let s = score(scores[i], o.score_clipping_thresh);
        if s < o.min_score_thresh {
            continue;
        }
        let r = &regressors[i * o.num_coords..(i + 1) * o.num_coords];
        let b = &r[o.box_coord_offset..];
        let x_center = b[0] / o.x_scale * a.width + a.x_center;
        let y_center = b[1] / o.y_scale * a.height + a.y_center;
        let w = b[2] / o.w_scale * a.width;
        let h = b[3] / o.h_scale * a.height;
        let (xmin, ymin) = (x_center - w / 2.0, y_center - h / 2.0);
        let (xmax, ymax) = (x_center + w / 2.0, y_center + h / 2.0);
        let (width, height) = (xmax - xmin, ymax - ymin);
        if width.is_nan() || height.is_nan() || width < 0.0 || height < 0.0 {
            continue;
        }
        let keypoints = (0..o.num_keypoints)
            .map(|k| {
                let p = &r[o.keypoint_coord_offset + 2 * k..];
                [
                    p[0] / o.x_scale * a.width + a.x_center,
                    p[1] / o.y_scale * a.height + a.y_center,
                ]
            })
            .collect();
        out.push(Detection {
            xmin,
            ymin,
            width,
            height,
            score: s,
            keypoints,
        });
    }
    out
}

/// Intersection over union of two boxes (0 when they do not overlap or
/// their union is empty).
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let w = (a.xmin + a.width).min(b.xmin + b.width) - a.xmin.max(b.xmin);
    let h = (a.ymin + a.height).min(b.ymin + b.height) - a.ymin.max(b.ymin);
    if w < 0.0 || h < 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = a.area() + b.area() - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Weighted non-maximum suppression, best score first: the best remaining
/// detection and every remaining one overlapping it by more than
/// `min_suppression_threshold` (IoU) form a cluster; the output keeps the
/// best one's score, with box corners and keypoints averaged over the
/// cluster, weighted by score. At most `max` detections.
pub fn weighted_nms(
    detections: &[Detection],
    min_suppression_threshold: f32,
    max: usize,
) -> Vec<Detection> {
    // By score, best first; equal scores in input order.
    let mut remaining: Vec<usize> = (0..detections.len()).collect();
    remaining.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score));
    let mut out = Vec::new();
    while let Some(&best) = remaining.first() {
        if out.len() >= max {
            break;
        }
        let top = &detections[best];
        let (cluster, rest): (Vec<usize>, Vec<usize>) = remaining
            .iter()
            .partition(|&&i| iou(&detections[i], top) > min_suppression_threshold);
        let mut merged = top.clone();
        if !cluster.is_empty() {
            let (mut x0, mut y0, mut x1, mut y1, mut total) = (0f32, 0f32, 0f32, 0f32, 0f32);
            let mut kps = vec![[0f32; 2]; top.keypoints.len()];
            for &i in &cluster {
                let d = &detections[i];
                total += d.score;
                x0 += d.xmin * d.score;
                y0 += d.ymin * d.score;
                x1 += (d.xmin + d.width) * d.score;
                y1 += (d.ymin + d.height) * d.score;
                for (k, p) in kps.iter_mut().zip(&d.keypoints) {
                    k[0] += p[0] * d.score;
                    k[1] += p[1] * d.score;
                }
            }
            merged.xmin = x0 / total;
            merged.ymin = y0 / total;
            merged.width = x1 / total - merged.xmin;
            merged.height = y1 / total - merged.ymin;
            for (m, k) in merged.keypoints.iter_mut().zip(&kps) {
                *m = [k[0] / total, k[1] / total];
            }
        }
        out.push(merged);
        // A best box of zero area clusters with nothing: MediaPipe stops there.
        if rest.len() == remaining.len() {
            break;
        }
        remaining = rest;
    }
    out
}

/// Where the image lies in the tensor: MediaPipe's image-to-tensor with
/// `keep_aspect_ratio`. The region of interest is the whole image, centred,
/// grown along one axis to the tensor's aspect ratio; the tensor's corners
/// are that region's corners (pixel centres at integer coordinates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub center_x: f32,
    pub center_y: f32,
    /// The region's size in image pixels.
    pub width: f32,
    pub height: f32,
}

impl Letterbox {
    pub fn new(
        image_width: usize,
        image_height: usize,
        tensor_width: usize,
        tensor_height: usize,
    ) -> Letterbox {
        let (w, h) = (image_width as f32, image_height as f32);
        let tensor_ratio = tensor_height as f32 / tensor_width as f32;
        let (width, height) = if tensor_ratio > h / w {
            (w, w * tensor_ratio)
        } else {
            (h / tensor_ratio, h)
        };
        Letterbox {
            center_x: 0.5 * w,
            center_y: 0.5 * h,
            width,
            height,
        }
    }

    /// The sampling grids (x, y) that fill a `tensor_width`×`tensor_height` tensor.
    pub fn grids(&self, tensor_width: usize, tensor_height: usize) -> (Grid, Grid) {
        let left = self.center_x - self.width / 2.0;
        let top = self.center_y - self.height / 2.0;
        (
            Grid {
                origin: f64::from(left),
                step: f64::from(self.width) / tensor_width as f64,
            },
            Grid {
                origin: f64::from(top),
                step: f64::from(self.height) / tensor_height as f64,
            },
        )
    }

    /// A point relative to the tensor (0 to 1) in image pixels.
    pub fn to_image(&self, x: f32, y: f32) -> [f32; 2] {
        [
            self.center_x + (x - 0.5) * self.width,
            self.center_y + (y - 0.5) * self.height,
        ]
    }

    /// A detection relative to the tensor as one in image pixels.
    pub fn detection_to_image(&self, d: &Detection) -> Detection {
        let [x0, y0] = self.to_image(d.xmin, d.ymin);
        let [x1, y1] = self.to_image(d.xmin + d.width, d.ymin + d.height);
        Detection {
            xmin: x0,
            ymin: y0,
            width: x1 - x0,
            height: y1 - y0,
            score: d.score,
            keypoints: d
                .keypoints
                .iter()
                .map(|p| self.to_image(p[0], p[1]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(xmin: f32, ymin: f32, w: f32, h: f32, score: f32) -> Detection {
        Detection {
            xmin,
            ymin,
            width: w,
            height: h,
            score,
            keypoints: vec![[xmin, ymin]],
        }
    }

    #[test]
    fn short_range_anchors() {
        let a = ssd_anchors(&AnchorOptions::short_range());
        assert_eq!(a.len(), 896);
        // Stride 8: a 16×16 grid, two anchors a cell.
        let first = Anchor {
            x_center: 0.5 / 16.0,
            y_center: 0.5 / 16.0,
            width: 1.0,
            height: 1.0,
        };
        assert_eq!(a[0], first);
        assert_eq!(a[1], first);
        assert_eq!(a[2].x_center, 1.5 / 16.0);
        assert_eq!(a[32].y_center, 1.5 / 16.0);
        assert_eq!(a[511].x_center, 15.5 / 16.0);
        assert_eq!(a[511].y_center, 15.5 / 16.0);
        // Strides 16 share one 8×8 grid, six anchors a cell.
        assert!(a[512..518].iter().all(|x| x.x_center == 0.5 / 8.0));
        assert_eq!(a[518].x_center, 1.5 / 8.0);
        assert_eq!(a[895].x_center, 7.5 / 8.0);
        assert_eq!(a[895].y_center, 7.5 / 8.0);
        assert!(a.iter().all(|x| x.width == 1.0 && x.height == 1.0));
    }

    #[test]
    fn anchors_of_free_size() {
        let o = AnchorOptions {
            strides: vec![8, 16],
            fixed_anchor_size: false,
            interpolated_scale_aspect_ratio: 0.0,
            aspect_ratios: vec![1.0, 4.0],
            ..AnchorOptions::short_range()
        };
        let a = ssd_anchors(&o);
        assert_eq!(a.len(), 16 * 16 * 2 + 8 * 8 * 2);
        // Layer 0 of 2: min_scale; aspect 4 is twice as wide as high.
        assert_eq!((a[0].width, a[0].height), (0.1484375, 0.1484375));
        assert_eq!(a[1].width, 0.1484375 * 2.0);
        assert_eq!(a[1].height, 0.1484375 / 2.0);
        assert_eq!(a[512].width, 0.75);
    }

    #[test]
    fn decoding() {
        let anchors = [
            Anchor {
                x_center: 0.25,
                y_center: 0.5,
                width: 1.0,
                height: 1.0,
            },
            Anchor {
                x_center: 0.75,
                y_center: 0.5,
                width: 1.0,
                height: 1.0,
            },
        ];
        let mut reg = vec![0f32; 32];
        // Anchor 0: shifted 16 px right, 32×64 px, first keypoint 8 px up.
        reg[..4].copy_from_slice(&[16.0, 0.0, 32.0, 64.0]);
        reg[5] = -8.0;
        let o = DecodeOptions::short_range(0.5);
        // Anchor 1 scores sigmoid(-1) < 0.5: dropped.
        let d = decode(&reg, &[2.0, -1.0], &anchors, &o);
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.xmin, 0.375 - 0.125);
        assert_eq!(d.width, 0.25);
        assert_eq!((d.ymin, d.height), (0.25, 0.5));
        assert_eq!(d.score, 1.0 / (1.0 + (-2f32).exp()));
        assert_eq!(d.keypoints.len(), 6);
        assert_eq!(d.keypoints[0], [0.25, 0.5 - 8.0 / 128.0]);
        assert_eq!(d.keypoints[1], [0.25, 0.5]);
        // Scores are clipped before the sigmoid; negative sizes are dropped.
        assert_eq!(score(1e9, 100.0), score(100.0, 100.0));
        reg[2] = -1.0;
        assert!(decode(&reg, &[2.0, -1.0], &anchors, &o).is_empty());
    }

    #[test]
    fn overlap() {
        let a = det(0.0, 0.0, 2.0, 2.0, 1.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &det(1.0, 0.0, 2.0, 2.0, 1.0)), 2.0 / 6.0);
        assert_eq!(iou(&a, &det(3.0, 0.0, 2.0, 2.0, 1.0)), 0.0);
        assert_eq!(iou(&a, &det(2.0, 0.0, 2.0, 2.0, 1.0)), 0.0);
        let empty = det(0.0, 0.0, 0.0, 0.0, 1.0);
        assert_eq!(iou(&empty, &empty), 0.0);
    }

    #[test]
    fn weighted_suppression() {
        let dets = vec![
            det(10.0, 0.0, 2.0, 2.0, 0.6),  // alone
            det(0.1, 0.0, 2.0, 2.0, 0.25),  // clusters with the next
            det(0.0, 0.0, 2.0, 2.0, 0.75),  // best
            det(1.5, 0.0, 2.0, 2.0, 0.7),   // IoU 1/7 with the best: kept apart
            det(10.0, 0.0, 2.0, 2.1, 0.55), // clusters with the first
        ];
        let out = weighted_nms(&dets, 0.3, 10);
        assert_eq!(out.len(), 3);
        let scores: Vec<f32> = out.iter().map(|d| d.score).collect();
        assert_eq!(scores, [0.75, 0.7, 0.6]);
        // The best cluster: xmin (0·0.75 + 0.1·0.25) / 1.0, keypoints alike.
        assert!((out[0].xmin - 0.025).abs() < 1e-6);
        assert!((out[0].width - 2.0).abs() < 1e-6);
        assert!((out[0].keypoints[0][0] - 0.025).abs() < 1e-6);
        // The second cluster is the box alone; the third is averaged.
        assert!((out[1].xmin - 1.5).abs() < 1e-6 && (out[1].width - 2.0).abs() < 1e-6);
        let h = (2.0 * 0.6 + 2.1 * 0.55) / 1.15;
        assert!((out[2].height - h).abs() < 1e-6);
        // At most `max`.
        assert_eq!(weighted_nms(&dets, 0.3, 1).len(), 1);
        assert!(weighted_nms(&[], 0.3, 10).is_empty());
    }

    #[test]
    fn letterbox_round_trip() {
        // A wide image: the region is 200×200 around its centre, 50 px of
        // padding above and below.
        let lb = Letterbox::new(200, 100, 128, 128);
        assert_eq!((lb.width, lb.height), (200.0, 200.0));
        let (gx, gy) = lb.grids(128, 128);
        assert_eq!((gx.origin, gx.step), (0.0, 200.0 / 128.0));
        assert_eq!((gy.origin, gy.step), (-50.0, 200.0 / 128.0));
        assert_eq!(lb.to_image(0.0, 0.25), [0.0, 0.0]);
        assert_eq!(lb.to_image(1.0, 0.75), [200.0, 100.0]);
        let d = lb.detection_to_image(&det(0.25, 0.5, 0.5, 0.25, 0.9));
        assert_eq!(
            (d.xmin, d.ymin, d.width, d.height, d.score),
            (50.0, 50.0, 100.0, 50.0, 0.9)
        );
        assert_eq!(d.keypoints, vec![[50.0, 50.0]]);
        // A tall one pads left and right; a square one not at all.
        let lb = Letterbox::new(60, 120, 128, 128);
        assert_eq!(lb.grids(128, 128).0.origin, -30.0);
        assert_eq!(
            Letterbox::new(512, 512, 128, 128).grids(128, 128).0.step,
            4.0
        );
    }
}
