from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _files import tf

from core.budget import PixelBudget
from core.dicom import DecodeLimits
from core.manifest import RenderSpec
from core.render import BurnedInTextError, DicomError, RenderError, RenderRecord, render

BUDGET = PixelBudget(min_pixels=56 * 56, max_pixels=448 * 448)
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_ct_slice_to_budget_with_record() -> None:
    path = tf("693_J2KI.dcm")
    images, record = render(path, RenderSpec(window="lung"), BUDGET)
    assert len(images) == 1 and images[0].mode == "RGB" and images[0].size == (448, 448)
    assert record.source_kind == "dicom" and record.original_size == (512, 512)
    assert record.resized is True and record.output_sizes == [(448, 448)]
    assert record.visual_tokens == [BUDGET.visual_tokens(512, 512)] == [256]
    assert record.windows[0][0].name == "lung" and record.windows[0][0].center == -600
    assert record.modality == "CT" and record.metadata["Modality"] == "CT"
    assert record.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    again = RenderRecord.model_validate_json(record.model_dump_json())
    assert again == record
    json.dumps(record.model_dump(mode="json"))


def test_render_is_deterministic_and_sources_agree() -> None:
    path = tf("CT_small.dcm")
    data = Path(path).read_bytes()
    a, ra = render(path, RenderSpec(window="soft_tissue"), BUDGET)
    b, rb = render(data, RenderSpec(window="soft_tissue"), BUDGET)
    c, rc = render(pydicom.dcmread(path), RenderSpec(window="soft_tissue"), BUDGET)
    assert a[0].tobytes() == b[0].tobytes() == c[0].tobytes()
    assert ra.sha256 == rb.sha256 and rc.sha256 is None


def test_no_budget_keeps_size_and_exact_values() -> None:
    images, record = render(tf("CT_small.dcm"), RenderSpec(window="lung"), None)
    assert images[0].size == (128, 128) and record.resized is False and record.visual_tokens is None
    assert images[0].getpixel((30, 100)) == (241, 241, 241)  # HU 65 in the lung window, by hand in test_dicom


def test_image_already_in_budget_is_not_resized() -> None:
    png = _png(np.random.default_rng(0).integers(0, 255, (224, 280, 3), dtype=np.uint8))
    images, record = render(png, None, BUDGET)
    assert record.source_kind == "png" and record.resized is False and images[0].size == (280, 224)
    assert np.array_equal(np.asarray(images[0]), np.asarray(Image.open(io.BytesIO(png))))


def test_png_and_jpeg_go_through_the_same_function() -> None:
    jpg = (SKIMAGE_DATA / "retina.jpg").read_bytes()
    images, record = render(jpg, None, BUDGET)
    assert record.source_kind == "jpeg" and record.original_size == (1411, 1411)
    assert images[0].size == BUDGET.resized(1411, 1411) and images[0].mode == "RGB"
    images, record = render(SKIMAGE_DATA / "ihc.png", None, BUDGET)
    assert record.source_kind == "png" and images[0].size == BUDGET.resized(512, 512)
    gray = Image.open(SKIMAGE_DATA / "camera.png")
    images, record = render(gray, None, None)
    assert (
        record.source_kind == "image"
        and images[0].mode == "RGB"
        and images[0].getpixel((10, 10))[0] == gray.getpixel((10, 10))
    )


def test_16bit_png_gets_an_auto_window() -> None:
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 15).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    images, record = render(buf.getvalue(), None, None)
    out = np.asarray(images[0])[..., 0]
    assert record.windows[0][0].source == "auto" and out[0, 0] == 0 and out[-1, -1] == 255


def test_image_guards_and_bad_bytes() -> None:
    png = _png(np.zeros((100, 100), np.uint8))
    with pytest.raises(RenderError, match="over the limit of 5000"):
        render(png, None, None, limits=DecodeLimits(max_pixels=5000))
    with pytest.raises(RenderError, match="cannot decode the image"):
        render(png[:40] + b"\x00" * 20, None, None)
    with pytest.raises(RenderError, match="composite"):
        render(png, RenderSpec(composite="ct3"), None)
    with pytest.raises(RenderError, match="do not also give window"):
        render(tf("CT_small.dcm"), RenderSpec(composite="ct3", window="lung"), None)
    with pytest.raises(RenderError, match="unknown window preset"):
        render(tf("CT_small.dcm"), RenderSpec(window="liverish"), None)


def test_composite_ct3_record() -> None:
    images, record = render(tf("CT_small.dcm"), RenderSpec(composite="ct3"), None)
    assert record.composite == "ct3" and [w.name for w in record.windows[0]] == ["lung", "mediastinum", "bone"]
    assert images[0].getpixel((30, 100)) == (241, 139, 80)


def test_multiframe_frame_selection() -> None:
    path = tf("examples_ybr_color.dcm")
    images, record = render(path, RenderSpec(frames="uniform:4"), BUDGET, policy="allow")
    assert len(images) == 4 and record.frames == [3, 11, 18, 26] and record.frames_total == 30
    assert record.photometric == "YBR_FULL_422" and record.windows == [[], [], [], []]
    images, record = render(path, RenderSpec(frames=[0, 29]), BUDGET, policy="allow")
    assert record.frames == [0, 29]
    with pytest.raises(RenderError, match="limit is 1"):
        render(path, RenderSpec(frames=[0, 29]), BUDGET, policy="allow", max_images=1)
    images, record = render(tf("emri_small.dcm"), None, None, max_images=3)
    assert record.frames == [1, 5, 8] and len({w[0].center for w in record.windows}) == 1  # one window for all frames


def test_burned_in_policy() -> None:
    path = tf("examples_rgb_color.dcm")  # US without BurnedInAnnotation
    with pytest.raises(BurnedInTextError) as info:
        render(path, None, BUDGET)
    assert "absent on a US image" in info.value.reason and isinstance(info.value, RenderError)
    images, record = render(path, None, BUDGET, policy="allow")
    assert record.burned_in and "US" in record.burned_in and len(images) == 1
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(BurnedInTextError, match="BurnedInAnnotation = YES"):
        render(ds, None, None)
    from core._redact import ocr_available

    if not ocr_available():
        with pytest.raises(BurnedInTextError, match="OCR extra"):
            render(ds, None, None, policy="redact")


def test_cr_monochrome1_film_renders_inverted() -> None:
    images, record = render(tf("RG1_UNCR.dcm"), None, BUDGET)
    assert record.photometric == "MONOCHROME1" and images[0].size == BUDGET.resized(1841, 1955)
    arr = np.asarray(images[0])[..., 0].astype(float)
    h, w = arr.shape
    # Lungs (centre band) are darker than the mediastinum/bone edges of the film once inverted.
    assert arr[h // 2, w // 4] < arr[h // 2, w // 2]


def _ct5n() -> list[str]:
    folder = Path(tf("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    return sorted(str(p) for p in folder.iterdir())


def test_series_render_is_independent_of_file_order() -> None:
    paths = _ct5n()
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    a, ra = render(paths, RenderSpec(window="soft_tissue", frames="uniform:5"), BUDGET)
    b, rb = render(shuffled, RenderSpec(window="soft_tissue", frames="uniform:5"), BUDGET)
    assert ra.source_kind == "series" and ra.frames_total == 5 and len(a) == 5
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert ra.sha256 == rb.sha256
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths]
    first = min(range(5), key=lambda i: z[i])
    single, _ = render(paths[first], RenderSpec(window="soft_tissue"), BUDGET)
    assert single[0].tobytes() == a[0].tobytes()  # the first image is the lowest slice


def _shipped_files() -> list[str]:
    from core import render as render_module

    prefix = f"{render_module._SHM_PREFIX}{os.getpid()}-"
    return [n for n in os.listdir(render_module._SHM_DIR) if n.startswith(prefix)] if os.path.isdir("/dev/shm") else []


@pytest.mark.parametrize("size", [96, 320])  # results through the pipe; pixels through shared memory
def test_phantom_series_in_two_processes_matches_one(tmp_path, size: int) -> None:
    from core.phantoms import generate_series

    paths = [str(p) for p in generate_series(tmp_path, slices=12, seed=0, size=size)]
    random.Random(0).shuffle(paths)
    one, r1 = render(paths, RenderSpec(frames="uniform:12"), BUDGET, max_images=12)
    two, r2 = render(paths, RenderSpec(frames="uniform:12"), BUDGET, max_images=12, workers=2)
    assert [x.tobytes() for x in one] == [x.tobytes() for x in two]
    assert r1.model_dump() == r2.model_dump()
    positions = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths]
    assert r1.frames == list(range(12)) and len(set(positions)) == 12
    assert _shipped_files() == []  # every shared-memory file the worker wrote was taken and removed


@pytest.mark.parametrize("bad", [0, 11])  # a slice this process renders, and one a worker renders
def test_broken_slice_in_two_processes_is_a_clear_error_and_the_pool_survives(tmp_path, bad: int) -> None:
    from core.phantoms import generate_series

    paths = [str(p) for p in generate_series(tmp_path, slices=12, seed=0, size=320)]
    paths.sort(key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    data = Path(paths[bad]).read_bytes()
    Path(paths[bad]).write_bytes(data[: len(data) - 4000])  # pixel data cut short
    with pytest.raises(DicomError, match=Path(paths[bad]).name):
        render(paths, RenderSpec(frames="uniform:12"), BUDGET, max_images=12, workers=2)
    assert _shipped_files() == []  # chunks the worker finished but nobody took are removed too
    Path(paths[bad]).write_bytes(data)
    images, record = render(paths, RenderSpec(frames="uniform:12"), BUDGET, max_images=12, workers=2)
    assert len(images) == 12 and record.frames == list(range(12))


def test_series_rejects_plain_images_and_mixed_series() -> None:
    png = _png(np.zeros((10, 10), np.uint8))
    with pytest.raises(RenderError, match="DICOM series"):
        render([png, png], None, None)
    with pytest.raises(DicomError, match="different series"):
        render([tf("CT_small.dcm"), tf("MR_small.dcm")], None, None)


@pytest.mark.parametrize("api", ["rapidocr 3", "rapidocr-onnxruntime 1"])
def test_redact_policy_blacks_out_ocr_boxes(monkeypatch, api: str) -> None:
    """A stand-in engine for each OCR API checks the redaction path end to end (test_ocr.py runs the real one)."""
    import types

    import core._redact as redact

    box = [[10, 10], [40, 10], [40, 20], [10, 20]]

    def fake(rgb):
        assert rgb.ndim == 3 and rgb.shape[-1] == 3
        if api == "rapidocr 3":
            return types.SimpleNamespace(boxes=np.array([box], float), txts=("DOE^JANE",), scores=(0.99,))
        return [(box, "DOE^JANE", 0.99)], 0.01

    monkeypatch.setattr(redact, "_OCR", fake)
    images, record = render(tf("examples_rgb_color.dcm"), None, None, policy="redact")
    arr = np.asarray(images[0])
    assert record.redacted_regions == 1 and record.burned_in
    assert arr[8:22, 8:42].max() == 0 and arr.max() > 0


def test_exif_rotated_jpeg_keeps_its_displayed_aspect() -> None:
    img = Image.fromarray(np.zeros((100, 300, 3), np.uint8))  # 300 wide, 100 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: 100 wide, 300 high
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    images, record = render(buf.getvalue(), None, BUDGET)
    assert record.original_size == (100, 300)
    assert images[0].size == BUDGET.resized(100, 300)


def test_series_subset_and_one_auto_window_for_all_slices(tmp_path) -> None:
    from core.phantoms import generate_series

    paths = []
    for p in generate_series(tmp_path, slices=7, seed=4, size=64):
        ds = pydicom.dcmread(p)
        del ds.WindowCenter, ds.WindowWidth  # no file window: percentiles of the middle slice
        ds.save_as(p)
        paths.append(str(p))
    images, record = render(paths[::-1], RenderSpec(frames="uniform:3"), None)
    assert record.frames == [1, 3, 5] and record.frames_total == 7 and len(images) == 3
    windows = {(w[0].source, w[0].center, w[0].width) for w in record.windows}
    assert len(windows) == 1 and next(iter(windows))[0] == "auto"
    single, _ = render(
        paths[3], RenderSpec(window={"center": record.windows[0][0].center, "width": record.windows[0][0].width}), None
    )
    assert single[0].tobytes() == images[1].tobytes()  # the middle selected slice is slice 3 along z
    _all_images, all_record = render(paths, None, None, max_images=7)
    assert len({(w[0].center, w[0].width) for w in all_record.windows}) == 1


def test_a_parsed_header_is_rendered_without_parsing_again(monkeypatch) -> None:
    from core.dicom import parse_header

    names = ["CT_small.dcm", "MR_small_RLE.dcm", "693_J2KI.dcm", "MR_small_bigendian.dcm", "emri_small.dcm"]
    files = {n: parse_header(Path(tf(n)).read_bytes(), name=n) for n in names}
    series = [parse_header(Path(p).read_bytes()) for p in _ct5n()]
    calls: list[bool] = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(True) or real(*a, **k))
    rendered = {n: render(f, RenderSpec(frames="uniform:2"), BUDGET) for n, f in files.items()}
    series_images, series_record = render(series, RenderSpec(window="lung"), BUDGET, max_images=5)
    assert not calls  # big-endian data too is read on from where the header ended
    monkeypatch.setattr(pydicom, "dcmread", real)
    for n in names:
        images, record = render(Path(tf(n)).read_bytes(), RenderSpec(frames="uniform:2"), BUDGET, name=n)
        assert [im.tobytes() for im in rendered[n][0]] == [im.tobytes() for im in images], n
        assert rendered[n][1] == record and record.sha256 == hashlib.sha256(Path(tf(n)).read_bytes()).hexdigest()
    from_bytes, bytes_record = render(
        [Path(p).read_bytes() for p in _ct5n()], RenderSpec(window="lung"), BUDGET, max_images=5
    )
    assert [im.tobytes() for im in series_images] == [im.tobytes() for im in from_bytes]
    assert series_record == bytes_record


@pytest.mark.parametrize(
    "name",
    [
        "image_dfl.dcm",  # deflated: parsed whole at once (the transfer syntax is read from the file meta first)
        "MR_small_bigendian.dcm",  # 16-bit grey big endian: viewed where the header ended, byte-swapped
        "SC_rgb_expb.dcm",  # big-endian colour: the pixel data element read on from the header's end
        "OBXXXX1A_expb_2frame.dcm",  # 8-bit big-endian palette, two frames
    ],
)
def test_deflated_and_big_endian_files_are_parsed_once(monkeypatch, name: str) -> None:
    from core.dicom import parse_header, read_dicom

    path = tf(name)
    spec = RenderSpec(frames="uniform:2")
    expected, expected_record = render(pydicom.dcmread(path), spec, BUDGET, policy="allow")  # pydicom's whole parse
    calls: list[bool] = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(True) or real(*a, **k))
    from_bytes, record = render(Path(path).read_bytes(), spec, BUDGET, policy="allow", name=name)
    assert len(calls) == 1
    header = parse_header(path)  # a memory map
    from_header, _ = render(header, spec, BUDGET, policy="allow")
    assert len(calls) == 2
    assert read_dicom(path, stop_before_pixels=True) is not None and len(calls) == 3
    for images in (from_bytes, from_header):
        assert [im.tobytes() for im in images] == [im.tobytes() for im in expected], name
    assert record.windows == expected_record.windows and record.frames == expected_record.frames


def test_resize_is_close_to_pillow_bicubic_and_exact_for_integer_factors() -> None:
    from core.render import resize_uint8

    images, _ = render(tf("CT_small.dcm"), RenderSpec(window="lung"), None)
    arr = np.asarray(images[0])[..., 0]
    for size in ((112, 112), (100, 60), (256, 256), (64, 64)):
        ours = resize_uint8(arr, size).astype(int)
        pillow = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC)).astype(int)
        assert ours.shape == (size[1], size[0]) and np.abs(ours - pillow).mean() < 1.5, size
    # An integer factor is an exact box mean (2×2 → 1), no interpolation on top.
    box = arr.reshape(64, 2, 64, 2).astype(float).mean(axis=(1, 3))
    assert np.abs(resize_uint8(arr, (64, 64)).astype(float) - box).max() <= 0.5
    assert resize_uint8(arr, (128, 128)) is arr


def test_errors_cross_the_process_boundary_intact() -> None:
    import pickle

    from core._errors import BurnedInTextError

    e = pickle.loads(pickle.dumps(DicomError("a.dcm", "pixel data is truncated", tag="(7FE0,0010) PixelData")))
    assert (str(e), e.source, e.tag, e.problem) == ("a.dcm: (7FE0,0010) PixelData: pixel data is truncated", "a.dcm", "(7FE0,0010) PixelData", "pixel data is truncated")
    b = pickle.loads(pickle.dumps(BurnedInTextError("b.dcm", "text may be burned in")))
    assert (str(b), b.reason) == ("b.dcm: refused: text may be burned in", "text may be burned in")


_CRASH = """
import os, sys
from core import render

parent = os.getpid()

def square(x):
    if os.getpid() != parent:
        os._exit(3)  # a worker dies (killed by the OOM killer, say)
    return x * x

print(render._map(square, list(range(40)), 2) == [x * x for x in range(40)], render._POOL is None)
"""


def test_a_dead_worker_falls_back_in_process_and_the_interpreter_still_exits() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _CRASH], cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


@pytest.mark.parametrize("n", [2, 3, 7, 12, 100, 1001])
def test_meeting_chunks_cover_every_item_once_and_are_smallest_in_the_middle(n: int) -> None:
    from core.render import _meeting_chunks

    bounds = _meeting_chunks(n)
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in bounds]
    mid = len(sizes) // 2
    assert sizes[mid - 1] == sizes[mid] == 1  # where the pool and the caller meet
    assert sizes[:mid] == sorted(sizes[:mid], reverse=True) and sizes[mid:] == sorted(sizes[mid:])


def test_shipping_pixels_through_shared_memory_round_trips_and_falls_back(tmp_path, monkeypatch) -> None:
    from core import render as render_module
    from core.render import _receive, _Rendered, _ship, _Shipped

    def results() -> list:
        rng = np.random.default_rng(0)
        grey = _Rendered(rng.integers(0, 256, (300, 200), np.uint8), None, (400, 600))
        rgb = _Rendered(rng.integers(0, 256, (100, 120, 3), np.uint8), None, (120, 100))
        return [({"h": 1}, "abc", grey), ({"h": 2}, "def", None), rgb]  # _file_task triples and a _Rendered

    expected = results()
    monkeypatch.setattr(render_module, "_SHM_DIR", str(tmp_path))
    shipped = _ship(results())
    assert isinstance(shipped, _Shipped) and Path(shipped.path).parent == tmp_path
    got = _receive(shipped)
    assert list(tmp_path.iterdir()) == []  # removed once mapped
    assert np.array_equal(got[0][2].pixels, expected[0][2].pixels) and got[1][2] is None
    assert np.array_equal(got[2].pixels, expected[2].pixels) and got[2].to_image().mode == "RGB"
    assert got[0][:2] == ({"h": 1}, "abc")

    monkeypatch.setattr(render_module, "_SHM_DIR", str(tmp_path / "absent"))  # no /dev/shm: the pipe
    plain = _ship(results())
    assert isinstance(plain, list) and np.array_equal(plain[2].pixels, expected[2].pixels)
    monkeypatch.setattr(render_module, "_SHM_DIR", str(tmp_path))
    small = [_Rendered(np.zeros((8, 8), np.uint8), None, (8, 8))]
    assert _ship(small) is small  # a few bytes go through the pipe


def test_shared_memory_files_of_dead_callers_are_swept(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    from core import render as render_module

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    monkeypatch.setattr(render_module, "_SHM_DIR", str(tmp_path))
    left = tmp_path / f"{render_module._SHM_PREFIX}{dead.stdout.strip()}-x1"
    live = tmp_path / f"{render_module._SHM_PREFIX}{os.getpid()}-x2"
    other = tmp_path / "someone-else"
    for f in (left, live, other):
        f.write_bytes(b"x")
    render_module._sweep_shipped()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
