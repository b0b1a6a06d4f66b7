"""One image reader for training, explaining and serving: bit depths, float, alpha, palette, EXIF, limits, errors."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from glasszoo.data import ImageReadError, load_image_folder, read_image
from glasszoo.data.image_files import read_image_files
from glasszoo.data.image_reader import ConversionNotes, conform_image
from glasszoo.serving.request_images import RequestError, _encoded_images


def _grey16(path, values):
    Image.fromarray(np.asarray(values, dtype="uint16")).save(path)
    return path


def test_16_bit_grey_is_scaled_by_its_maximum_everywhere(tmp_path):
    values = np.array([[0, 257, 32768, 65535]] * 4, dtype="uint16")
    path = _grey16(tmp_path / "tile.png", values)
    expected = (values / 65535.0).astype("float32")[..., None]
    assert Image.open(path).mode.startswith("I;16")
    np.testing.assert_allclose(read_image(path), expected, atol=1e-7)
    # explain / predict
    np.testing.assert_allclose(read_image_files([path], (4, 4, 1))[0], expected, atol=1e-7)
    # serving
    served, _ = _encoded_images([("tile.png", path.read_bytes())], (4, 4, 1), 10**6)
    np.testing.assert_allclose(served[0], expected, atol=1e-7)
    # training: the folder loader
    for name in ("a", "b"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for index in range(5):
            _grey16(tmp_path / "folder" / name / f"{index}.png", values)
    data = load_image_folder(tmp_path / "folder", validation_fraction=0.2, test_fraction=0.2)
    assert data.color_mode == "grayscale" and data.image_size == (4, 4)
    np.testing.assert_allclose(data.x_train[0], expected, atol=1e-7)


def test_float_tiff_is_read_as_its_values_and_out_of_range_is_refused(tmp_path):
    values = np.linspace(0, 1, 36, dtype="float32").reshape(6, 6)
    Image.fromarray(values).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[..., 0], values)
    Image.fromarray(values * 300).save(tmp_path / "hounsfield.tif")
    with pytest.raises(ImageReadError, match=r"hounsfield\.tif is a float image with values in \[0, 300\]"):
        read_image(tmp_path / "hounsfield.tif")
    nan = values.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"nan\.tif .*1 NaN"):
        read_image(tmp_path / "nan.tif")


def test_32_bit_integer_tiff_is_scaled_by_its_bit_depth(tmp_path):
    values = np.array([[0, 2**31 - 1]], dtype="int32")
    Image.fromarray(values).save(tmp_path / "i32.tif")
    read = read_image(tmp_path / "i32.tif")[..., 0]
    np.testing.assert_allclose(read, values / (2**32 - 1), rtol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype="uint8")
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    image.save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=100)
    read = read_image(tmp_path / "photo.jpg")
    assert read.shape == (40, 20, 3)
    assert read[:18].mean() > 0.95 and read[22:].mean() < 0.05  # the white half is now on top


def test_alpha_is_composited_onto_black(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype="uint8")
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [51, 255]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "icon.png")
    read = read_image(tmp_path / "icon.png")
    np.testing.assert_allclose(read[..., 0], (200 / 255) * np.array([[1.0, 0.0], [0.2, 1.0]]), atol=1e-6)
    grey = Image.fromarray(rgba[..., [0, 3]], mode="LA")
    grey.save(tmp_path / "grey_alpha.png")
    np.testing.assert_allclose(read_image(tmp_path / "grey_alpha.png")[..., 0], read[..., 0], atol=1e-6)


def test_palette_one_bit_and_cmyk_images(tmp_path):
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], dtype="uint8"), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_allclose(read_image(tmp_path / "palette.png")[0, 0], [1, 0, 0])
    palette.save(tmp_path / "transparent.png", transparency=1)
    np.testing.assert_allclose(read_image(tmp_path / "transparent.png")[0, 1], [0, 0, 0])  # the transparent colour
    Image.fromarray(np.array([[0, 255]], dtype="uint8")).convert("1").save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png")[..., 0], [[0.0, 1.0]])
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=100)
    assert read_image(tmp_path / "print.jpg")[1, 1, 0] > 0.9


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_huge_images_are_refused_from_the_header_in_every_reader(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 6000, 6000)  # 36e6 values, a file of ~100 bytes
    with pytest.raises(ValueError, match=r"bomb\.png has 6000 x 6000 x 1 = 36000000 values, over the limit"):
        read_image(bomb)
    with pytest.raises(ValueError, match=r"bomb\.png has 6000 x 6000"):
        read_image_files([bomb], (28, 28, 1))
    with pytest.raises(RequestError) as refused:
        _encoded_images([("bomb.png", bomb.read_bytes())], (28, 28, 1), 10**9)
    assert refused.value.status == 413 and "over the limit" in str(refused.value)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "folder" / "b").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "folder" / "b" / "ok.png")
    _png_header_only(tmp_path / "folder" / "a" / "huge.png", 23000, 23000)
    with pytest.raises(ValueError, match=r"huge\.png"):
        load_image_folder(tmp_path / "folder")


def test_corrupt_and_non_image_files_are_named(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype="uint8")).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ImageReadError, match=r"truncated\.png"):
        read_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match=r"Cannot read .*notes\.png as an image"):
        read_image(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")
    for name in ("a", "b"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((16, 16), 40 * index, dtype="uint8")).save(tmp_path / "folder" / name / f"{index}.png")
    (tmp_path / "folder" / "a" / "readme.txt").write_text("skipped")
    (tmp_path / "folder" / "a" / ".DS_Store").write_bytes(b"\0")
    data = load_image_folder(tmp_path / "folder", validation_fraction=0.34, test_fraction=0.0)
    assert len(data.skipped) == 2 and len(data.x_train) + len(data.x_val) == 6
    (tmp_path / "folder" / "b" / "broken.png").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        load_image_folder(tmp_path / "folder")


def test_conversions_are_noted_once_and_refused_when_strict(tmp_path, capsys):
    for index in range(3):
        Image.fromarray(np.zeros((32, 32, 3), dtype="uint8")).save(tmp_path / f"{index}.png")
    paths = sorted(tmp_path.glob("*.png"))
    batch = read_image_files(paths, (28, 28, 1))
    assert batch.shape == (3, 28, 28, 1)
    message = capsys.readouterr().err
    assert message.count("converted") == 1
    assert "3 of 3 image(s)" in message and "3 colour -> grey" in message and "resized 32x32 -> 28x28" in message
    with pytest.raises(ValueError, match=r"0\.png does not match the model's input \(28, 28, 1\): colour -> grey"):
        read_image_files(paths, (28, 28, 1), strict=True)
    assert read_image_files(paths, (32, 32, 3), strict=True).shape == (3, 32, 32, 3)
    assert ConversionNotes().summary() is None


def test_conform_keeps_values_and_grey_colour_round_trip():
    grey = np.random.default_rng(0).random((8, 8, 1)).astype("float32")
    colour, notes = conform_image(grey, (8, 8, 3))
    assert notes == ["grey -> colour"]
    back, _ = conform_image(colour, (8, 8, 1))
    np.testing.assert_allclose(back, grey, atol=1e-6)
    same, notes = conform_image(grey, (None, None, 1))
    assert notes == [] and same is grey or np.array_equal(same, grey)


def test_folder_splits_are_stratified_seeded_and_the_given_layout_is_kept(tmp_path):
    counts = {"a": 20, "b": 10, "c": 30}
    for name, count in counts.items():
        (tmp_path / "flat" / name).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(np.full((8, 8, 3), index, dtype="uint8")).save(tmp_path / "flat" / name / f"{index:02d}.png")
    data = load_image_folder(tmp_path / "flat", validation_fraction=0.1, test_fraction=0.2, seed=3)
    assert data.split["images_per_class"] == {"train": [14, 7, 21], "validation": [2, 1, 3], "test": [4, 2, 6]}
    again = load_image_folder(tmp_path / "flat", validation_fraction=0.1, test_fraction=0.2, seed=3)
    assert again.paths == data.paths and again.folder_sha256 == data.folder_sha256
    other = load_image_folder(tmp_path / "flat", validation_fraction=0.1, test_fraction=0.2, seed=4)
    assert other.paths["test"] != data.paths["test"]
    every = data.paths["train"] + data.paths["validation"] + data.paths["test"]
    assert len(set(every)) == 60
    assert data.color_mode == "rgb"
    for index, path in enumerate(data.paths["test"]):  # the arrays follow the paths
        name, file = path.split("/")
        assert data.class_names[data.y_test[index]] == name
        assert data.x_test[index, 0, 0, 0] == pytest.approx(int(file[:2]) / 255)
    (tmp_path / "flat" / "a" / "00.png").write_bytes((tmp_path / "flat" / "a" / "01.png").read_bytes())
    assert load_image_folder(tmp_path / "flat").folder_sha256 != data.folder_sha256

    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        for name in ("x", "y"):
            (tmp_path / "given" / split / name).mkdir(parents=True)
            for index in range(count):
                Image.fromarray(np.full((8, 8), index, dtype="uint8")).save(tmp_path / "given" / split / name / f"{index}.png")
    given = load_image_folder(tmp_path / "given")
    assert (len(given.x_train), len(given.x_val), len(given.x_test)) == (12, 4, 6)
    assert given.class_names == ["x", "y"] and given.color_mode == "grayscale"
    assert all(path.startswith("test/") for path in given.paths["test"])
    (tmp_path / "given" / "test" / "z").mkdir()
    with pytest.raises(ValueError, match=r"class folders \['z'\]"):
        load_image_folder(tmp_path / "given")


def test_mixed_sizes_take_the_common_one_and_say_so(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(4):
            size = (12, 10) if index == 0 else (8, 8)
            Image.fromarray(np.zeros(size, dtype="uint8")).save(tmp_path / name / f"{index}.png")
    data = load_image_folder(tmp_path, validation_fraction=0.25, test_fraction=0.0)
    assert data.image_size == (8, 8) and "2 resized 12x10 -> 8x8" in data.conversions
    with pytest.raises(ValueError, match=r"does not match the common shape \(8, 8, 1\): resized 12x10 -> 8x8"):
        load_image_folder(tmp_path, validation_fraction=0.25, test_fraction=0.0, strict=True)
    assert load_image_folder(tmp_path, image_size=(6, 6), color_mode="rgb", validation_fraction=0.25, test_fraction=0.0).x_train.shape[1:] == (6, 6, 3)
