"""A static web folder that classifies and explains in the browser: the ONNX export, its metadata and a page.

`export_web(model, folder)` writes `model.onnx` (`to_onnx`), `metadata.json`
(what JavaScript cannot read from the ONNX file: classes, input, output
order, activation, and which outputs the page draws), the page
(`index.html`, `glasszoo-web.js`, shipped in `glasszoo/export/web/`) and
onnxruntime-web's WebAssembly build, copied from an npm install of
`onnxruntime-web` so the folder runs offline from any static server:

    npm install --prefix ~/.cache/glasszoo onnxruntime-web@1.30.0

The page draws from the outputs alone, as `metadata.json["picture"]` says:
the model's own pixel map of the predicted class over the image
(`attribution_output`), and for a family that explains with parts
(`part_outputs`) the maps of the three parts that add most to that class.
The folder is published whole: it is written beside the target and renamed
into place, so a reader sees the previous export or the new one.
"""

import json
import os
import pathlib
import shutil

WEB_ASSETS = pathlib.Path(__file__).resolve().parent / "web"
PAGE_FILES = ("index.html", "glasszoo-web.js")
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEB_VERSION = "1.30.0"
INSTALL_HINT = f"npm install --prefix ~/.cache/glasszoo onnxruntime-web@{ORT_WEB_VERSION}"
MARKER = "glasszoo_web"


def onnxruntime_web_candidates():
    """Folders searched for onnxruntime-web's `dist/`, in order: $GLASSZOO_ORT_WEB, ./node_modules, ~/.cache/glasszoo."""
    candidates = []
    if os.environ.get("GLASSZOO_ORT_WEB"):
        candidates.append(pathlib.Path(os.environ["GLASSZOO_ORT_WEB"]))
    candidates.append(pathlib.Path.cwd() / "node_modules" / "onnxruntime-web" / "dist")
    candidates.append(pathlib.Path.home() / ".cache" / "glasszoo" / "node_modules" / "onnxruntime-web" / "dist")
    return candidates


def find_onnxruntime_web(explicit=None):
    """`(dist folder, version)` of an onnxruntime-web install holding its WebAssembly build.

    Args:
        explicit: a `dist/` folder (or the package folder above it); None
            searches `onnxruntime_web_candidates()`.

    Raises:
        FileNotFoundError: none found; the message gives the npm command.

    Example:
    >>> folder, version = find_onnxruntime_web()  # doctest: +SKIP
    """
    searched = [pathlib.Path(explicit)] if explicit else onnxruntime_web_candidates()
    for folder in searched:
        for dist in (folder, folder / "dist"):
            if all((dist / name).is_file() for name in ORT_WEB_FILES):
                package = dist.parent / "package.json"
                version = json.loads(package.read_text()).get("version") if package.is_file() else None
                return dist, version
    raise FileNotFoundError(
        f"onnxruntime-web's WebAssembly build ({', '.join(ORT_WEB_FILES)}) was not found in "
        f"{', '.join(str(f) for f in searched)}. Install it with: {INSTALL_HINT} (or pass its dist/ folder)."
    )


def picture_spec(model):
    """Which outputs the page draws: `{"heatmap": name or None, "part_maps", "part_contributions"}` (from the model's attributes)."""
    parts = getattr(model, "part_outputs", None) or {}
    return {
        "heatmap": getattr(model, "attribution_output", None),
        "part_maps": parts.get("maps"),
        "part_contributions": parts.get("contributions"),
    }


def web_metadata(model, served, model_name, ort_version):
    """The page's `metadata.json` for `model` exported as `served` (an `OnnxModel`)."""
    from glasszoo import __version__

    return {
        MARKER: 1,
        "model_name": model_name,
        "family": model.family,
        "class_names": list(model.class_names),
        "input": {"name": served.input_name, "shape": list(model.image_shape), "range": [0.0, 1.0], "layout": "NHWC float32"},
        "outputs": list(served.output_names),
        "output_descriptions": dict(model.explanation_outputs),
        "output_activation": model.output_activation,
        "picture": picture_spec(model),
        "onnxruntime_web": ort_version,
        "glasszoo_version": __version__,
    }


def _is_replaceable(folder):
    """True for a missing or empty folder, or a previous web export (its metadata.json has the marker)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        return json.loads((folder / "metadata.json").read_text()).get(MARKER) == 1
    except (OSError, ValueError, AttributeError):
        return False


def export_web(model, folder, ort_web=None, model_name=None, opset=None):
    """Writes the web folder of `model` (see the module's docstring) and returns its path.

    Args:
        model: a glasszoo model.
        folder: the folder to write; an existing one must be empty or a
            previous web export (anything else is refused, untouched).
        ort_web: onnxruntime-web's `dist/` folder (None: searched).
        model_name: the name the page shows (default: the preset's).
        opset: ONNX opset (see `to_onnx`).

    Raises:
        FileNotFoundError: onnxruntime-web is not installed (with the npm command).
        FileExistsError: `folder` holds other files.

    Example:
    >>> export_web(glasszoo.load("my_preset"), "my-web")  # doctest: +SKIP
    >>> # python3 -m http.server -d my-web 8000, then open http://127.0.0.1:8000
    """
    from glasszoo.export.onnx_export import to_onnx
    from glasszoo.export.runtime import OnnxModel
    from glasszoo.zoo.atomic import atomic_folder, atomic_write_text

    folder = pathlib.Path(folder)
    if folder.exists() and not _is_replaceable(folder):
        raise FileExistsError(f"{folder} exists and is not a glasszoo web export; give an empty or new folder.")
    dist, ort_version = find_onnxruntime_web(ort_web)
    name = model_name or (getattr(model, "preset_metadata", {}) or {}).get("name") or model.name
    with atomic_folder(folder, replaceable=_is_replaceable) as staging:
        onnx_path = to_onnx(model, staging / "model.onnx", opset=opset, model_name=name, sidecar=False)  # metadata.json instead
        served = OnnxModel(onnx_path, providers=["CPUExecutionProvider"])
        atomic_write_text(staging / "metadata.json", json.dumps(web_metadata(model, served, name, ort_version), indent=2))
        for file in PAGE_FILES:
            shutil.copyfile(WEB_ASSETS / file, staging / file)
        for file in ORT_WEB_FILES:
            shutil.copyfile(dist / file, staging / file)
    return folder
