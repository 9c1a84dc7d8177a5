#!/usr/bin/env python3
"""Reference answers for the `face-detect` component: MediaPipe's own Python face detector
(mediapipe 0.10.21, `mp.solutions.face_detection.FaceDetection(model_selection=0,
min_detection_confidence=0.5)`: the BlazeFace short-range model and graph the component
reimplements) on test photographs from scikit-image 0.26.0's wheel (models/fetch.py puts them
under models/.cache/<name>/<file>):

- astronaut.png (one face), camera.png (one face);
- astronaut-pair.png, derived here: a 300×300 crop of astronaut.png around the face, beside its
  mirror image (600×300, two faces; written next to OUT, deterministic);
- chelsea.png, coffee.png, rocket.jpg (no face).

Writes one JSON line per image: {"image" (absolute path), "file", "width", "height",
"faces": [{"box": {"x", "y", "width", "height"}, "score", "keypoints": [[x, y] * 6]}]}, in pixels
of the image, best score first (MediaPipe's order).

Needs a Python (3.9 to 3.12) with mediapipe==0.10.21, whose solutions import cv2 and matplotlib
and need numpy<2 and protobuf 4; the smallest venv that runs it:

    python3 -m venv "$VERGE_CACHE/mediapipe-venv"
    "$VERGE_CACHE/mediapipe-venv/bin/pip" install --no-deps mediapipe==0.10.21
    "$VERGE_CACHE/mediapipe-venv/bin/pip" install absl-py attrs flatbuffers "numpy<2" \
        "protobuf>=4.25.3,<5" "opencv-python-headless<4.11" matplotlib

Usage: face_detect_reference.py OUT.jsonl [--models DIR]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGES = [
    ("skimage-astronaut", "astronaut.png"),
    ("skimage-camera", "camera.png"),
    (None, "astronaut-pair.png"),
    ("skimage-chelsea", "chelsea.png"),
    ("skimage-coffee", "coffee.png"),
    ("skimage-rocket", "rocket.jpg"),
]
# The crop of astronaut.png (rows, columns) that holds the face (MediaPipe finds it at about
# x 178..273, y 83..178).
PAIR_CROP = (slice(0, 300), slice(80, 380))


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def make_pair(astronaut: Path, out: Path) -> None:
    crop = rgb(astronaut)[PAIR_CROP]
    pair = np.concatenate([crop, crop[:, ::-1]], axis=1)
    Image.fromarray(np.ascontiguousarray(pair)).save(out, format="PNG")


def faces(detector, img: np.ndarray) -> list:
    h, w = img.shape[:2]
    result = detector.process(img)
    out = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        out.append({
            "box": {"x": b.xmin * w, "y": b.ymin * h, "width": b.width * w, "height": b.height * h},
            "score": float(d.score[0]),
            "keypoints": [[k.x * w, k.y * h] for k in d.location_data.relative_keypoints],
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="JSON lines to write")
    ap.add_argument("--models", type=Path, default=REPO / "models" / ".cache")
    args = ap.parse_args()
    import mediapipe as mp

    if mp.__version__ != "0.10.21":
        sys.exit(f"mediapipe {mp.__version__}: expected 0.10.21")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, file in IMAGES:
        path = args.out.parent / file if name is None else args.models / name / file
        if name is not None and not path.is_file():
            sys.exit(f"{path} is missing: run python3 models/fetch.py first")
        paths.append(path)
    make_pair(paths[0], paths[2])

    lines = []
    for path in paths:
        img = rgb(path)
        # A fresh detector per image: no state carried from one photo to the next.
        with mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=0.5) as detector:
            found = faces(detector, img)
        lines.append(json.dumps({"image": str(path.resolve()), "file": path.name,
                                 "width": int(img.shape[1]), "height": int(img.shape[0]),
                                 "faces": found}))
    args.out.write_text("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
