"""Reduced-precision exports of each preset against its float32 export: accuracy, drift of every output, size and speed.

For each preset (by default each family's demo preset and the black-box
baseline's, from the registry of families: see `bench_common.py`), the
preset is exported at `fp32`, `fp16` and `int8`
(`glasszoo.export.to_onnx(..., precision=...)`) and each export runs in
onnxruntime (CPU provider) on the first `--images` (1,000) test images of
the preset's dataset. Printed per preset and precision:

- test accuracy of the export, and the share of images whose predicted
  class is the float32 export's;
- for every output: the relative L2 distance to the float32 export's
  output (`glasszoo.export.precision.output_drift`) and the non-finite
  count; for outputs of positions (whose name or description says
  "location"), the share of positions equal to float32's instead;
- file size and throughput at `--batch` (256), as ratios to float32,
  timed side by side (interleaved best of `--repeats`). Shared machines
  are noisy: read the ratios.

    python3 bench/precision_drift.py [--families FAMILY ...] [--models PRESET ...] [--images 1000]
                                     [--batch 256] [--repeats 5] [--json results.json]
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import add_selection_arguments, interleaved_best, markdown_table, preset_dataset, ratio, select_presets, write_json

PRECISIONS = ("fp32", "fp16", "int8")


def run_export(session, images, batch):
    """Every output of an onnxruntime session on `images`, `batch` at a time: `{name: array}`."""
    import numpy as np

    names = [output.name for output in session.get_outputs()]
    parts = [session.run(None, {"image": images[start : start + batch]}) for start in range(0, len(images), batch)]
    return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(names)}


def measure(name, count, batch, repeats, folder):
    import glasszoo
    import numpy as np
    import onnxruntime
    from glasszoo.data import load_dataset
    from glasszoo.export import to_onnx
    from glasszoo.export.precision import location_output_names, output_drift

    model = glasszoo.load(name)
    data = load_dataset(preset_dataset(name) or "fashion_mnist")
    images, labels = data.x_test[:count].astype("float32"), data.y_test[:count]
    sessions, outputs, sizes = {}, {}, {}
    for precision in PRECISIONS:
        path = os.path.join(folder, f"{name}.{precision}.onnx")
        to_onnx(model, path, precision=precision, sidecar=False, check_drift=False)  # measured here, not refused
        sizes[precision] = os.path.getsize(path)
        sessions[precision] = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        outputs[precision] = run_export(sessions[precision], images, batch)
    timing_batch = np.ascontiguousarray(images[np.arange(batch) % len(images)])
    times = interleaved_best({p: (lambda s=sessions[p]: s.run(None, {"image": timing_batch})) for p in PRECISIONS}, repeats)
    positions = location_output_names(model.explanation_outputs)
    reference = outputs["fp32"]
    rows = []
    for precision in PRECISIONS:
        served = outputs[precision]
        drift = output_drift({k: v for k, v in reference.items() if k not in positions}, {k: v for k, v in served.items() if k not in positions})
        for key in positions:
            drift[key] = {"equal_share": float(np.mean(served[key] == reference[key])), "non_finite": int(np.sum(~np.isfinite(served[key])))}
        rows.append({
            "preset": name,
            "precision": precision,
            "accuracy": float(np.mean(served["logits"].argmax(-1) == labels)),
            "agreement": float(np.mean(served["logits"].argmax(-1) == reference["logits"].argmax(-1))),
            "drift": drift,
            "size_ratio": sizes[precision] / sizes["fp32"],
            "speed_ratio": times["fp32"]["best_s"] / times[precision]["best_s"],
            "images": len(images),
        })  # fmt: skip
    return rows


def drift_cell(values):
    if "equal_share" in values:
        text = f"{values['equal_share']:.3f} equal"
    else:
        text = f"{values['relative_l2']:.1e}"
    return text + (f" ({values['non_finite']} non-finite)" if values["non_finite"] else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_arguments(parser)
    parser.add_argument("--images", type=int, default=1000, help="test images of the preset's dataset")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    presets = select_presets(args.families, args.models)
    results = []
    with tempfile.TemporaryDirectory(prefix="glasszoo-precision-") as folder:
        for name in presets:
            rows = measure(name, args.images, args.batch, args.repeats, folder)
            for row in rows[1:]:
                print(f"  {name} {row['precision']}: accuracy {row['accuracy']:.4f} (fp32 {rows[0]['accuracy']:.4f}), speed {ratio(row['speed_ratio'])}", flush=True)
            results += rows
    print()
    table = []
    for row in results:
        drift = "; ".join(f"{key} {drift_cell(values)}" for key, values in row["drift"].items() if key != "logits")
        table.append([row["preset"], row["precision"], f"{row['accuracy']:.4f}", f"{row['agreement']:.4f}", drift_cell(row["drift"]["logits"]), drift, f"{row['size_ratio']:.2f}", ratio(row["speed_ratio"])])
    header = ["preset", "precision", "test acc.", "same class as fp32", "logits drift", "other outputs' drift", "size / fp32", "speed / fp32"]
    print(markdown_table(header, table))
    write_json(args.json, "precision_drift", vars(args), results)


if __name__ == "__main__":
    main()
