#!/usr/bin/env python3
"""face-detect on the device host (TensorFlow Lite + XNNPack) beside MediaPipe's
own Python face detector (0.10.21) and beside the TFLite library called directly.

    python3 bench/face_detect.py --verge-device BIN --component face_detect.wasm \
        --model face_detection_short_range.tflite --lib libtensorflowlite_c.so \
        --python PY_WITH_NUMPY --mediapipe-python PY_WITH_MEDIAPIPE --reps N PHOTO...

Per photo, warm medians of N calls:
- verge: `verge-device run` over the photo N times (one process, the component
  instantiated per call as the daemon does): the whole request, PNG/JPEG bytes in,
  JSON out (decode, letterbox, model, anchors and NMS in Wasm).
- mediapipe: `FaceDetection.process` on the image read by OpenCV (decode + detect).
- model, native: the TFLite library through ctypes (input copied in, invoke,
  outputs copied out), XNNPack with one thread as verge configures it;
- model, verge: the same model through verge's wasi:nn on its TFLite engine
  (host-greengrass/examples/model_time.rs: checks, copies, invoke).
Ratios print against MediaPipe (goal: verge ≤ 1.5×) and the native model (goal ≤ 1.1×).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

NATIVE = textwrap.dedent("""
    import ctypes, sys, time
    lib = ctypes.CDLL(sys.argv[1]); model_bytes = open(sys.argv[2], "rb").read(); reps = int(sys.argv[3])
    class Opts(ctypes.Structure):
        _fields_ = [("raw", ctypes.c_char * 512)]
    lib.TfLiteXNNPackDelegateOptionsDefault.restype = Opts
    for f in ("TfLiteModelCreate", "TfLiteInterpreterOptionsCreate", "TfLiteXNNPackDelegateCreate",
              "TfLiteInterpreterCreate", "TfLiteInterpreterGetInputTensor"):
        getattr(lib, f).restype = ctypes.c_void_p
    buf = ctypes.create_string_buffer(model_bytes, len(model_bytes))
    model = lib.TfLiteModelCreate(buf, ctypes.c_size_t(len(model_bytes)))
    opts = lib.TfLiteInterpreterOptionsCreate()
    o = lib.TfLiteXNNPackDelegateOptionsDefault()
    ctypes.memmove(ctypes.addressof(o), (ctypes.c_int32 * 1)(1), 4)
    lib.TfLiteInterpreterOptionsAddDelegate(ctypes.c_void_p(opts), ctypes.c_void_p(lib.TfLiteXNNPackDelegateCreate(ctypes.byref(o))))
    it = lib.TfLiteInterpreterCreate(ctypes.c_void_p(model), ctypes.c_void_p(opts))
    assert it and lib.TfLiteInterpreterAllocateTensors(ctypes.c_void_p(it)) == 0
    lib.TfLiteInterpreterGetOutputTensor.restype = ctypes.c_void_p
    lib.TfLiteTensorByteSize.restype = ctypes.c_size_t
    inp = lib.TfLiteInterpreterGetInputTensor(ctypes.c_void_p(it), 0)
    size = lib.TfLiteTensorByteSize(ctypes.c_void_p(inp))
    data = ctypes.create_string_buffer(size)
    outs = [lib.TfLiteInterpreterGetOutputTensor(ctypes.c_void_p(it), i)
            for i in range(lib.TfLiteInterpreterGetOutputTensorCount(ctypes.c_void_p(it)))]
    bufs = [ctypes.create_string_buffer(lib.TfLiteTensorByteSize(ctypes.c_void_p(o))) for o in outs]
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        lib.TfLiteTensorCopyFromBuffer(ctypes.c_void_p(inp), data, ctypes.c_size_t(size))
        assert lib.TfLiteInterpreterInvoke(ctypes.c_void_p(it)) == 0
        for o, b in zip(outs, bufs):
            lib.TfLiteTensorCopyToBuffer(ctypes.c_void_p(o), b, ctypes.c_size_t(len(b)))
        times.append((time.perf_counter() - t) * 1000)
    print(",".join(f"{x:.4f}" for x in times[1:]))
""")

MEDIAPIPE = textwrap.dedent("""
    import sys, time, cv2, mediapipe as mp
    reps = int(sys.argv[1]); out = {}
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as fd:
        for path in sys.argv[2:]:
            times = []; faces = 0
            for _ in range(reps + 1):
                t = time.perf_counter()
                rgb = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                r = fd.process(rgb)
                times.append((time.perf_counter() - t) * 1000)
                faces = len(r.detections or [])
            out[path] = (times[1:], faces)
    import json; print(json.dumps(out))
""")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--verge-device", required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--lib", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("--model-time", required=True, help="host-greengrass's model_time example")
    p.add_argument("--mediapipe-python", required=True)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("photos", nargs="+")
    a = p.parse_args()

    native = [float(x) for x in subprocess.run(
        [a.python, "-c", NATIVE, a.lib, a.model, str(a.reps)], check=True, capture_output=True, text=True
    ).stdout.strip().split(",")]
    mediapipe = json.loads(subprocess.run(
        [a.mediapipe_python, "-c", MEDIAPIPE, str(a.reps), *a.photos], check=True, capture_output=True, text=True
    ).stdout)
    model_ms = statistics.median(native)
    verge_model = float(subprocess.run(
        [a.model_time, a.model, "--reps", str(max(a.reps, 20))], check=True, capture_output=True, text=True,
        env={**os.environ, "VERGE_TENSORFLOWLITE_LIB": a.lib},
    ).stdout.strip())
    print(f"model only: verge's wasi:nn {verge_model:.3f} ms, the library called directly {model_ms:.3f} ms: "
          f"{verge_model / model_ms:.2f}× (goal ≤ 1.1×)")
    print(f"| photo | faces | verge-device (ms) | MediaPipe Python (ms) | verge / MediaPipe | verge / native model ({model_ms:.2f} ms) |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for photo in a.photos:
        cmd = [a.verge_device, "run", a.component, "--model", f"face-detect={a.model}",
               "--tensorflowlite-lib", a.lib, "--format", "json"]
        for _ in range(a.reps + 1):
            cmd += ["--input", photo]
        lines = [json.loads(x) for x in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()]
        verge = statistics.median(x["ms"] for x in lines[1:])
        faces = len(lines[0]["respond"]["body"]["faces"])
        mp_times, mp_faces = mediapipe[photo]
        mp_ms = statistics.median(mp_times)
        if faces != mp_faces:
            raise SystemExit(f"{photo}: verge found {faces} faces, MediaPipe {mp_faces}")
        worst = max(worst, verge / mp_ms)
        name = photo.rsplit("/", 1)[-1]
        print(f"| {name} | {faces} | {verge:.2f} | {mp_ms:.2f} | {verge / mp_ms:.2f}× | {verge / model_ms:.2f}× |")
    print(f"face-detect: whole request at most {worst:.2f}× MediaPipe's Python detector (goal ≤ 1.5×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
