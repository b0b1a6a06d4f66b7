"""Model families: their records, registration and discovery.

A family is one folder `zoo/<family>/` whose `__init__.py` defines `FAMILY`,
a `Family` record that names the family's model class, views module and
recipes by import path, so that reading the record imports neither Keras nor
TensorFlow (`glasszoo predict` draws pictures from ONNX outputs with NumPy
and matplotlib alone). Every list of families in glasszoo (the preset
registry, the CLI, evaluation, the serving pictures, the benchmarks and the
conformance tests) comes from `families()`:

- the folders of `glasszoo.zoo` that define `FAMILY` (the built-in families);
- the entry point group `glasszoo.families` of installed distributions (a
  third-party family lives in its own package: the entry point names a
  `Family` record, or a module that defines `FAMILY`);
- `register_family(record)` at run time.

Example:
>>> from glasszoo.zoo.families import families
>>> sorted(families())  # doctest: +SKIP
['cnn', 'coda', 'inam', 'protopnet', 'prototypedl']
>>> families()["coda"].model_class().__name__  # doctest: +SKIP
'CoDA'
"""

import dataclasses
import importlib
import pkgutil
import sys
import threading
import warnings

ENTRY_POINT_GROUP = "glasszoo.families"

_registered = {}
_discovered = False
_deferred = set()  # families whose model import met a glasszoo module still being imported: retried later
_lock = threading.RLock()


def _resolve(path):
    """The object named by `"package.module:attribute"` (or the module for a path without `:`)."""
    module, _, attribute = path.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


@dataclasses.dataclass(frozen=True)
class Family:
    """What glasszoo needs to know about a model family, without importing it.

    Args:
        name: the family name (`config.json`'s `family`, the ONNX metadata's
            `family`, the model class's `family` attribute).
        model: `"module:Class"` of the `ZooModel` subclass.
        views: module of the family's pictures (NumPy and matplotlib only):
            `draw(image, outputs, index, class_names)` and `REQUIRED_OUTPUTS`;
            optionally `draw_overview(images, outputs, class_names)` and
            `model_views(model, images, stems, explanation, labels, out)`.
        description: one line for listings.
        recipes: `"module:RECIPES"`, the training recipes of its presets
            (`glasszoo train NAME`), or None.
        test_config: constructor arguments of a tiny model for 28 x 28 x 1
            images and 10 classes, which the conformance tests build.
        black_box: True for a baseline without an inherent explanation of its
            decision process (it is compared with, not advertised).
        demo_preset: the preset `glasszoo demo` runs for this family, if any.

    Example:
    >>> FAMILY = Family(name="tiny", model="my_pkg.model:Tiny", views="my_pkg.views",
    ...                 description="A tiny family.", test_config={"width": 4})
    """

    name: str
    model: str
    views: str
    description: str = ""
    recipes: str = None
    test_config: dict = dataclasses.field(default_factory=dict)
    black_box: bool = False
    demo_preset: str = None

    def __post_init__(self):
        if not self.name or not str(self.name).isidentifier():
            raise ValueError(f"A family name must be a Python identifier; got {self.name!r}.")
        if ":" not in str(self.model):
            raise ValueError(f"Family {self.name!r}: model must be 'module:Class'; got {self.model!r}.")

    def model_class(self):
        """The family's `ZooModel` subclass (imports Keras)."""
        cls = _resolve(self.model)
        if _deferred and not _glasszoo_is_importing():
            register_keras_classes(sorted(_deferred))
        if getattr(cls, "family", None) != self.name:
            raise TypeError(f"{self.model} has family {getattr(cls, 'family', None)!r}, but its record says {self.name!r}.")
        return cls

    def views_module(self):
        """The family's views module (NumPy and matplotlib only)."""
        return _resolve(self.views)

    def recipe_table(self):
        """`{preset name: recipe}` of the family (empty without recipes)."""
        return dict(_resolve(self.recipes)) if self.recipes else {}


def register_family(record, replace=False):
    """Adds a `Family` record to the registry; returns it.

    Args:
        record: a `Family`.
        replace: allow replacing a record of the same name (else a ValueError).

    Example:
    >>> register_family(Family(name="tiny", model="my_pkg.model:Tiny", views="my_pkg.views"))  # doctest: +SKIP
    """
    if not isinstance(record, Family):
        raise TypeError(f"register_family takes a glasszoo.zoo.families.Family; got {type(record).__name__}.")
    with _lock:
        existing = _registered.get(record.name)
        if existing is not None and existing != record and not replace:
            raise ValueError(f"A family named {record.name!r} is already registered ({existing.model}); pass replace=True to replace it.")
        _registered[record.name] = record
    return record


def unregister_family(name):
    """Removes a family registered at run time (tests of third-party families)."""
    with _lock:
        _registered.pop(name, None)


def _record_of(value, origin):
    record = getattr(value, "FAMILY", value)
    if not isinstance(record, Family):
        raise TypeError(f"{origin} does not define a glasszoo Family record (got {type(record).__name__}).")
    return record


def _builtin_records():
    import glasszoo.zoo as zoo

    for info in pkgutil.iter_modules(zoo.__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"glasszoo.zoo.{info.name}")
        if hasattr(module, "FAMILY"):
            yield _record_of(module, module.__name__)


def _entry_point_records():
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            yield _record_of(entry_point.load(), f"entry point {entry_point.name!r} ({entry_point.value})")
        except Exception as error:  # a broken third-party family must not break the zoo
            warnings.warn(f"glasszoo: skipped the family of entry point {entry_point.name!r}: {error}", stacklevel=3)


def _discover():
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        for source in (_builtin_records, _entry_point_records):
            for record in source():
                _registered.setdefault(record.name, record)


def families():
    """`{name: Family}` of every known family, sorted by name."""
    _discover()
    with _lock:
        return {name: _registered[name] for name in sorted(_registered)}


def get_family(name):
    """The `Family` record of `name`; a ValueError listing the known families otherwise."""
    known = families()
    if name not in known:
        raise ValueError(f"Unknown model family {name!r}; known: {', '.join(known) or 'none'}.")
    return known[name]


def family_class(name):
    """The `ZooModel` subclass of family `name` (imports Keras)."""
    return get_family(name).model_class()


def register_keras_classes(names=None):
    """Imports every family's model module, so that Keras finds the classes when it loads a `.keras` file.

    `glasszoo.zoo.base` calls it once `ZooModel` is defined; call it yourself
    only for families registered later. A family whose import fails because
    another glasszoo module is still being imported (a family model module
    that imports `glasszoo.zoo.base` first, while another family's model
    subclasses it) is deferred without a warning and imported again by the
    next `model_class()` call made once no glasszoo import is under way.

    Args:
        names: the families to import (default: all).

    Returns:
        the names of the families whose model could not be imported (each also warned about).
    """
    failed = []
    for name, record in families().items():
        if names is not None and name not in names:
            continue
        module = sys.modules.get(record.model.partition(":")[0])
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            continue  # being imported right now: its classes register themselves when it finishes
        try:
            # a retry imports the module alone: model_class() itself retries the deferred families
            record.model_class() if names is None else _resolve(record.model)
        except Exception as error:
            if _glasszoo_is_importing():
                _deferred.add(name)
                continue
            warnings.warn(f"glasszoo: the model class of family {name!r} could not be imported: {error}", stacklevel=2)
            failed.append(name)
        else:
            _deferred.discard(name)
    return failed


def _glasszoo_is_importing(ignore=()):
    """True while a glasszoo module (other than those in `ignore`) is being executed: its import has not finished."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if (name == "glasszoo" or name.startswith("glasszoo.")) and name not in ignore
    )


class _AfterKerasImport:
    """A one-shot import hook: once `keras` has been imported, the zoo's model classes are registered with it.

    `import glasszoo` must not import Keras (serving needs onnxruntime and
    NumPy only), yet `keras.saving.load_model("model.keras")` must find the
    zoo's classes after `import glasszoo`, whichever of the two was imported
    first. When Keras is first imported by a glasszoo module, the classes are
    registered by `glasszoo.zoo.base` instead, once it is defined.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        self.remove()
        import importlib.util

        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            if not _glasszoo_is_importing():
                importlib.import_module("glasszoo.zoo.base")  # registers every family's classes

        spec.loader.exec_module = exec_module
        return spec

    def remove(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def invalidate_caches(self):
        pass


def register_keras_classes_when_keras_is_imported():
    """Registers the zoo's Keras classes now if Keras is imported, else right after Keras is imported.

    Called at the end of `glasszoo/__init__.py`.
    """
    if "keras" in sys.modules:
        if not _glasszoo_is_importing(ignore=("glasszoo",)):
            importlib.import_module("glasszoo.zoo.base")
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
