"""Oracle for test/inpaint.test.ts: OpenCV-Python's own Telea inpainting (opencv-python-headless,
pinned in requirements.txt to the OpenCV version of the wasm build that src/eval/inpaint.ts runs).

Usage: inpaint_oracle.py DIR. DIR/job.json: {"width", "height", "mask", "cases": [{"image", "radius",
"out"}]}: mask names a raw height*width byte file (non-zero = fill), each image a raw
height*width*3 byte file (row-major, interleaved channels). For each case, writes
cv2.inpaint(image, mask, radius, cv2.INPAINT_TELEA) to DIR/<out> in the image's layout. Prints one
JSON line: {"opencv": version, "cases": count}.
"""
import json
import os
import sys

import cv2
import numpy as np


def read(directory: str, name: str, size: int) -> np.ndarray:
    data = np.fromfile(os.path.join(directory, name), dtype=np.uint8)
    assert data.size == size, f"{name} has {data.size} bytes, expected {size}"
    return data


def main(directory: str) -> None:
    with open(os.path.join(directory, "job.json")) as f:
        job = json.load(f)
    h, w = job["height"], job["width"]
    mask = read(directory, job["mask"], h * w).reshape(h, w)
    for case in job["cases"]:
        image = read(directory, case["image"], h * w * 3).reshape(h, w, 3)
        out = cv2.inpaint(image, mask, case["radius"], cv2.INPAINT_TELEA)
        assert out.shape == image.shape and out.dtype == np.uint8
        np.ascontiguousarray(out).tofile(os.path.join(directory, case["out"]))
    print(json.dumps({"opencv": cv2.__version__, "cases": len(job["cases"])}))


if __name__ == "__main__":
    main(sys.argv[1])
