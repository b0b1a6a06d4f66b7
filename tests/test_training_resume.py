"""Training survives interruption, and the files it writes are written atomically.

`test_killed_run_resumes_from_its_last_epoch`: a subprocess trains a tiny
recipe (the test model of the first registered family trained without
stages, tests/tiny_recipes.py; registered in `glasszoo.zoo.recipes.RECIPES`)
and is killed (SIGKILL, no clean-up) in the middle of its third epoch;
a half-written log line is appended as a kill during a write would leave it;
re-running the same command here resumes from the backup of epoch 2
(weights and optimizer state equal to those the killed run had after epoch
2) and ends with 4 epochs, a log without duplicated epochs and a verified
preset. The other tests check `glasszoo.zoo.atomic`: a failure in the middle
of a write leaves the old file intact and no temporary file behind, for the
checkpoints and for every registered family's preset files.
"""

import json
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import family_names

KILLED_RUN = r'''
import json, os, signal, sys
import keras
import numpy as np
from glasszoo.zoo import recipes
from glasszoo.zoo.training import train_preset

recipes.RECIPES["tiny_resume"] = json.loads(sys.argv[1])
out, work = sys.argv[2], sys.argv[3]


class KillInEpochThree(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # the state after epoch 2, for the test to compare with the resumed run's start
            np.savez(os.path.join(work, "..", "after_epoch_2.npz"), *self.model.get_weights(),
                     iterations=int(self.model.optimizer.iterations.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() > 2 * 4 + 1:  # 4 steps an epoch: the 2nd step of epoch 3
            os.kill(os.getpid(), signal.SIGKILL)


train_preset("tiny_resume", out, work_dir=work, grid=False, verbose=0, max_train=128, callbacks=[KillInEpochThree()])
'''


def test_killed_run_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    import glasszoo
    import keras
    from glasszoo.zoo import recipes
    from glasszoo.zoo.training import _read_log, train_preset
    from tiny_models import subprocess_env
    from tiny_recipes import tiny_recipe

    tiny = tiny_recipe(epochs=4)
    out, work = tmp_path / "preset", tmp_path / "work"
    env = subprocess_env(KERAS_BACKEND="tensorflow")
    process = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(tiny), str(out), str(work)], env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    assert not out.exists()
    state = json.loads((work / "backup" / "state.json").read_text())
    assert state["epoch"] == 2
    assert [row["epoch"] for row in _read_log(work / "training_log.csv")] == [1, 2]
    with open(work / "training_log.csv", "a") as log:  # a kill in the middle of writing epoch 3's line
        log.write("2,0.51")

    class StartState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [w.copy() for w in self.model.get_weights()]
            self.iterations = int(self.model.optimizer.iterations.numpy())

    start = StartState()
    monkeypatch.setitem(recipes.RECIPES, "tiny_resume", tiny)
    assert recipes.recipe("tiny_resume") == tiny
    card = train_preset("tiny_resume", out, work_dir=work, grid=False, verbose=0, max_train=128, callbacks=[start])

    with np.load(tmp_path / "after_epoch_2.npz") as saved:
        assert start.iterations == int(saved["iterations"]) == 8
        for index, weights in enumerate(start.weights):
            np.testing.assert_array_equal(weights, saved[f"arr_{index}"])
    lines = (work / "training_log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 5, lines
    assert [int(line.split(",")[0]) for line in lines[1:]] == [0, 1, 2, 3]
    assert card["training"]["epochs"] == 4 and [row["epoch"] for row in card["history"]] == [1, 2, 3, 4]
    assert card["training"]["distribution"]["kind"] == "none" and card["training"]["distribution"]["replicas"] == 1
    assert not (work / "backup").exists()  # finished: a re-run starts afresh
    model = glasszoo.load(out)  # verifies the weights' sha256
    assert model.preset_metadata["metrics"]["test_accuracy"] == card["metrics"]["test_accuracy"]
    assert not list(out.glob(".*partial*")) and not list(work.glob(".*partial*"))


def test_read_log_skips_a_partial_last_line(tmp_path):
    from glasszoo.zoo.training import _read_log, _truncate_log

    log = tmp_path / "log.csv"
    log.write_text("epoch,accuracy,val_accuracy\n0,0.5,0.6\n1,0.7,0.8\n2,0.9")
    assert _read_log(log) == [{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.6}, {"epoch": 2, "accuracy": 0.7, "val_accuracy": 0.8}]
    _truncate_log(log, 1)
    assert log.read_text() == "epoch,accuracy,val_accuracy\n0,0.5,0.6\n"


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    from glasszoo.zoo.atomic import atomic_copy, atomic_path, atomic_write

    target = tmp_path / "grid.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half of the new cont")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"

    weights = tmp_path / "best.weights.h5"
    weights.write_bytes(b"old weights")
    with pytest.raises(OSError):
        with atomic_path(weights) as temporary:
            assert temporary.parent == weights.parent and temporary.name.endswith(".weights.h5")
            temporary.write_bytes(b"partial")
            raise OSError("disk full")
    assert weights.read_bytes() == b"old weights"
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing.h5", weights)
    assert weights.read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.weights.h5", "grid.json"]  # no temporary file left


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    from glasszoo.zoo import presets
    from glasszoo.zoo.training import BestCheckpoint
    from tiny_models import build
    from tiny_recipes import plain_family

    presets.write_json(tmp_path / "card.json", {"a": 1})
    with pytest.raises(TypeError):
        presets.write_json(tmp_path / "card.json", {"a": object()})
    assert json.loads((tmp_path / "card.json").read_text()) == {"a": 1}

    model = build(plain_family())
    checkpoint = BestCheckpoint(tmp_path / "best.weights.h5")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_accuracy": 0.5})
    before = (tmp_path / "best.weights.h5").read_bytes()

    def failing_save(path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"truncated")
        raise OSError("killed while saving")

    monkeypatch.setattr(model, "save_weights", failing_save)
    with pytest.raises(OSError):
        checkpoint.on_epoch_end(1, {"val_accuracy": 0.9})
    assert (tmp_path / "best.weights.h5").read_bytes() == before
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("family", family_names())
def test_preset_files_are_written_atomically(tmp_path, family):
    """`finish_training`'s files (`preset_files`) and the preset folder: complete files, none temporary left behind."""
    import glasszoo
    from tiny_models import build

    model = build(family)
    images = np.random.default_rng(0).random((12, 28, 28, 1), dtype="float32")
    model.finish_training(images)
    (tmp_path / "files").mkdir()
    files = model.preset_files(tmp_path / "files")
    for name, path in files.items():
        path = pathlib.Path(path)
        assert path.name == name and path.parent == tmp_path / "files" and path.stat().st_size > 0, (name, path)
    model.save_preset(tmp_path / "preset")
    loaded = glasszoo.load(tmp_path / "preset")  # sha256 of the weights and of every file verified
    assert sorted(loaded.preset_metadata.get("files", {})) == sorted(files)
    np.testing.assert_allclose(loaded.explain(images[:4])["logits"], model.explain(images[:4])["logits"], atol=1e-5)
    assert not list(tmp_path.rglob(".*partial*")) and not list(tmp_path.rglob(".preset-*"))
