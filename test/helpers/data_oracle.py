"""Oracle for the data-pipeline tests (test/data*.test.ts): TensorFlow and Python's tarfile write
and read the files the TypeScript readers and writer must agree with.

    data_oracle.py tfrecord MANIFEST OUT
        MANIFEST (JSON): {"records": [{"image": path, "label": int (1..1000) or null,
        "synset": str, "filename": str, "height": int, "width": int,
        "bbox": [[xmin, ymin, xmax, ymax], ...] (relative)}]}
        Writes OUT with tf.io.TFRecordWriter, one tf.train.Example per record with the fields of
        TensorFlow's build_imagenet_data.py (_convert_to_example); a record with "label": null
        has no image/class/label. For every record also writes OUT.<i>.rgb: the image decoded by
        TensorFlow (tf.io.decode_jpeg with dct_method INTEGER_ACCURATE for JPEG, decode_image
        otherwise; channels=3), HWC uint8. Prints [{"offset", "length", "shape"}] as JSON.

    data_oracle.py tarmake MANIFEST OUT FORMAT
        MANIFEST: {"entries": [{"name": str, "file": path}]}; FORMAT gnu | pax | ustar.
        Writes OUT with Python's tarfile.

    data_oracle.py tarlist TAR
        Prints [{"name", "size", "sha256"}] of the regular members, read with tarfile.
"""
import hashlib
import json
import os
import sys
import tarfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _int64(v):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=v if isinstance(v, list) else [v]))


def _float(v):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=v))


def _bytes(v):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=v if isinstance(v, list) else [v]))


def tfrecord(manifest, out):
    import numpy as np
    import tensorflow as tf

    with open(manifest) as f:
        recs = json.load(f)["records"]
    info = []
    offset = 0
    with tf.io.TFRecordWriter(out) as w:
        for i, r in enumerate(recs):
            with open(r["image"], "rb") as f:
                img = f.read()
            boxes = r.get("bbox", [])
            # as build_imagenet_data.py's _convert_to_example
            feature = {
                "image/height": _int64(r["height"]),
                "image/width": _int64(r["width"]),
                "image/colorspace": _bytes(b"RGB"),
                "image/channels": _int64(3),
                "image/class/synset": _bytes(r["synset"].encode()),
                "image/class/text": _bytes(b"text of " + r["synset"].encode()),
                "image/object/bbox/xmin": _float([b[0] for b in boxes]),
                "image/object/bbox/xmax": _float([b[2] for b in boxes]),
                "image/object/bbox/ymin": _float([b[1] for b in boxes]),
                "image/object/bbox/ymax": _float([b[3] for b in boxes]),
                "image/format": _bytes(b"JPEG"),
                "image/filename": _bytes(r["filename"].encode()),
                "image/encoded": _bytes(img),
            }
            if r.get("label") is not None:
                feature["image/class/label"] = _int64(r["label"])
                feature["image/object/bbox/label"] = _int64([r["label"]] * len(boxes))
            ex = tf.train.Example(features=tf.train.Features(feature=feature))
            data = ex.SerializeToString()
            w.write(data)
            if img[:2] == b"\xff\xd8":
                # the accurate integer IDCT (libjpeg's ISLOW, as PIL and libvips use), not TF's fast default
                rgb = tf.io.decode_jpeg(img, channels=3, dct_method="INTEGER_ACCURATE")
            else:
                rgb = tf.io.decode_image(img, channels=3, expand_animations=False)
            rgb = rgb.numpy().astype(np.uint8)
            rgb.tofile(f"{out}.{i}.rgb")
            info.append({"offset": offset, "length": len(data), "shape": list(rgb.shape)})
            offset += 16 + len(data)
    print(json.dumps(info))


def tarmake(manifest, out, fmt):
    with open(manifest) as f:
        entries = json.load(f)["entries"]
    form = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}[fmt]
    with tarfile.open(out, "w", format=form) as t:
        for e in entries:
            t.add(e["file"], arcname=e["name"])


def tarlist(path):
    out = []
    with tarfile.open(path, "r") as t:
        for m in t.getmembers():
            if not m.isfile():
                continue
            data = t.extractfile(m).read()
            out.append({"name": m.name, "size": m.size, "sha256": hashlib.sha256(data).hexdigest()})
    print(json.dumps(out))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "tfrecord":
        tfrecord(sys.argv[2], sys.argv[3])
    elif cmd == "tarmake":
        tarmake(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "tarlist":
        tarlist(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {cmd}")
