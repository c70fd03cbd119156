"""Test oracle: reads TensorBoard event files with TensorBoard's own reader and prints JSON.

Usage:
  read_events.py <logdir>
      Loads <logdir> with tensorboard's EventAccumulator (what TensorBoard itself shows), keeping
      everything (size_guidance 0), and prints
      {"scalars": {tag: [[step, value], ...]},
       "images": {tag: [{"step", "width", "height", "bytes", "sha256"}]},
       "file_version": float | null (as EventAccumulator parses it: "brain.Event:2" -> 2.0)}
      Non-finite scalar values are printed as the strings "NaN", "Infinity", "-Infinity".
  read_events.py --records <event file>
      Iterates the raw TFRecord records of one file with the CRC-checking record reader that
      TensorBoard uses and prints {"records": n, "error": null | "<ExceptionClass>: message",
      "file_version": the first Event's file_version string}.
"""
import hashlib
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def num(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def read_logdir(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea_mod

    guidance = {k: 0 for k in ea_mod.DEFAULT_SIZE_GUIDANCE}
    acc = ea_mod.EventAccumulator(logdir, size_guidance=guidance)
    acc.Reload()
    tags = acc.Tags()
    scalars = {
        tag: [[e.step, num(e.value)] for e in acc.Scalars(tag)] for tag in tags.get(ea_mod.SCALARS, [])
    }
    images = {}
    for tag in tags.get(ea_mod.IMAGES, []):
        images[tag] = [
            {
                "step": e.step,
                "width": e.width,
                "height": e.height,
                "bytes": len(e.encoded_image_string),
                "sha256": hashlib.sha256(e.encoded_image_string).hexdigest(),
            }
            for e in acc.Images(tag)
        ]
    file_version = getattr(acc, "file_version", None)
    print(json.dumps({"scalars": scalars, "images": images, "file_version": file_version}))


def read_records(path):
    from tensorboard.compat import tf
    from tensorboard.compat.proto import event_pb2

    n = 0
    error = None
    file_version = None
    try:
        # tensorboard's event_file_loader reads records this way (real TF if installed, else
        # tensorboard's stub); both verify the length and data CRCs and raise DataLossError.
        from tensorboard.backend.event_processing import event_file_loader as efl

        if hasattr(efl, "_make_tf_record_iterator"):
            it = efl._make_tf_record_iterator(path)
        else:
            it = tf.compat.v1.io.tf_record_iterator(path)
        for record in it:
            if n == 0:
                file_version = event_pb2.Event.FromString(record).file_version
            n += 1
    except Exception as e:  # noqa: BLE001 - reported to the caller
        error = f"{type(e).__name__}: {e}"
    print(json.dumps({"records": n, "error": error, "file_version": file_version}))


def main(argv):
    if len(argv) == 2 and argv[0] == "--records":
        read_records(argv[1])
    elif len(argv) == 1:
        read_logdir(argv[0])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
