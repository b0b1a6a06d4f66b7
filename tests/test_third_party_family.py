"""A family defined outside the repository plugs in through the `glasszoo.families` entry point, with no shared file edited.

The test writes a tiny installed-looking distribution into a temporary
folder: a package `pixelfam` (a linear model on pixels, whose exact
contribution map is pixel x weight) with its `Family` record, model and
views, and a `.dist-info` folder whose `entry_points.txt` names the record.
With that folder on `PYTHONPATH`, subprocesses run `glasszoo explain`,
`export`, `predict --out` and `evaluate --explanations` on a preset folder of
the family, and the family shows in `glasszoo.families()`.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

RECORD = '''
from glasszoo.zoo.families import Family

FAMILY = Family(
    name="pixelfam",
    model="pixelfam.model:PixelLinear",
    views="pixelfam.views",
    description="A linear model on pixels: logits = sum(x * W_c) + b_c; its contribution map is exact.",
    test_config={},
)
'''

MODEL = '''
import keras
import numpy as np
from glasszoo.zoo.base import ZooModel, class_selection
from keras import ops


@keras.saving.register_keras_serializable(package="pixelfam")
class PixelLinear(ZooModel):
    family = "pixelfam"
    explanation_outputs = {
        "logits": "(B, K) class scores",
        "contributions": "(B, H, W) pixel x weight of the explained class, summed over channels",
    }
    attribution_output = "contributions"

    def __init__(self, num_classes=10, input_shape=(28, 28, 1), class_names=None, **kwargs):
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        self.classifier.build((None, int(np.prod(self.image_shape))))
        self.built = True

    def call(self, images):
        return self.classifier(ops.reshape(images, (-1, int(np.prod(self.image_shape)))))

    def explanation_graph(self, images, target=None):
        logits = self.call(images)
        weights = ops.matmul(class_selection(logits, target), ops.transpose(self.classifier.kernel))
        per_pixel = images * ops.reshape(weights, (-1,) + self.image_shape)
        return {"logits": logits, "contributions": ops.sum(per_pixel, axis=-1)}
'''

VIEWS = '''
import numpy as np
from glasszoo.explain.figures import new_figure, show_image, show_signed

REQUIRED_OUTPUTS = {"logits": 2, "contributions": 3}


def draw(image, outputs, index, class_names=None):
    figure, axes = new_figure(1, 2)
    show_image(axes[0, 0], image)
    show_signed(axes[0, 1], np.asarray(outputs["contributions"][index], dtype="float64"))
    return figure
'''

ENTRY_POINTS = "[glasszoo.families]\npixelfam = pixelfam:FAMILY\n"

# Trains the family on the shipped samples (it has no recipe) and saves a preset folder.
TRAIN = '''
import sys, keras, numpy as np, glasszoo
from glasszoo.data.samples import load_samples
assert "pixelfam" in glasszoo.families(), sorted(glasszoo.families())
images, labels, names = load_samples()
keras.utils.set_random_seed(0)
model = glasszoo.families()["pixelfam"].model_class()(num_classes=10, input_shape=(28, 28, 1), class_names=[str(n) for n in names])
model.compile(optimizer=keras.optimizers.Adam(0.05))
model.fit(images[..., None] if images.ndim == 3 else images, labels, epochs=60, batch_size=40, verbose=0)
model.save_preset(sys.argv[1], metadata={"description": "pixelfam on the shipped samples", "data": {"dataset": "fashion_mnist"}})
print("accuracy", float((model.predict_classes(images) == labels).mean()))
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """A folder with the `pixelfam` package and its dist-info (entry point), and the environment that sees it."""
    root = tmp_path_factory.mktemp("site")
    package = root / "pixelfam"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(RECORD))
    (package / "model.py").write_text(textwrap.dedent(MODEL))
    (package / "views.py").write_text(textwrap.dedent(VIEWS))
    info = root / "pixelfam-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pixelfam\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]), TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    return root, env


def run(env, *argv, code=None, cwd=None):
    command = [sys.executable, "-c", code, *map(str, argv)] if code else [sys.executable, "-m", "glasszoo", *map(str, argv)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def preset(plugin):
    root, env = plugin
    folder = root / "pixelfam_preset"
    result = run(env, folder, code=TRAIN)
    assert float(result.stdout.split("accuracy")[-1]) > 0.9
    return folder


def test_the_family_registers_through_its_entry_point_without_keras(plugin):
    root, env = plugin
    code = "import sys, glasszoo; assert 'pixelfam' in glasszoo.families(); assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    run(env, code=code)


def test_explain_export_predict_and_evaluate_a_family_from_outside_the_zoo(plugin, preset, tmp_path, samples):
    from PIL import Image

    root, env = plugin
    explained = tmp_path / "explained"
    run(env, "explain", preset, "--out", explained, "--samples", "4")
    assert len(list(explained.glob("local_*.png"))) == 4
    with np.load(explained / "explanations.npz") as arrays:
        assert sorted(arrays.files) == ["contributions", "images", "logits"]
        rebuilt = arrays["contributions"].sum(axis=(1, 2))
    assert json.loads((explained / "predictions.json").read_text())[0]["image"].startswith("sample00")

    onnx_path = tmp_path / "pixelfam.onnx"
    result = run(env, "export", preset, onnx_path)
    assert "contributions" in result.stdout
    image = tmp_path / "shoe.png"
    Image.fromarray(np.round(samples[0][0, ..., 0] * 255).astype("uint8")).save(image)
    served = tmp_path / "served"
    report = json.loads(run(env, "predict", onnx_path, image, "--out", served).stdout)
    assert report["family"] == "pixelfam" and report["predictions"][0]["picture"]
    assert (served / report["predictions"][0]["picture"]).stat().st_size > 2000

    folder = tmp_path / "images"  # the shipped samples, 5 copies each, as an image folder: one sub-folder per class
    images, labels, names = samples
    for index, (picture, label) in enumerate(zip(images, labels)):
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
        for copy in range(5):
            Image.fromarray(np.round(picture[..., 0] * 255).astype("uint8")).save(folder / f"class_{label}" / f"{index:03d}_{copy}.png")
    evaluated = tmp_path / "evaluated"
    run(env, "evaluate", preset, "--dataset", folder, "--explanations", "inherent,saliency", "--explanation-images", "40",
        "--grids", "1", "--consistency", "0", "--out", evaluated)
    report = json.loads((evaluated / "report.json").read_text())
    methods = report["explanations"][str(preset)]["methods"]
    assert set(methods) == {"inherent", "saliency"}
    assert 0.0 <= methods["inherent"]["localisation"]["mean"] <= 1.0
    assert np.isfinite(rebuilt).all()
