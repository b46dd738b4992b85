from __future__ import annotations

import base64
import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _files import tf  # noqa: E402

from core.dicom import (  # noqa: E402
    DecodeLimits,
    DicomError,
    burned_in_reason,
    decode_frame,
    dicom_part,
    frame_to_uint8,
    read_dicom,
    resolve_window,
    select_frames,
    slice_order,
)
from core.manifest import RenderSpec  # noqa: E402
from core.render import render  # noqa: E402

# One file per transfer syntax the data here covers (name → expected transfer syntax UID).
TRANSFER_SYNTAXES = {
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",  # implicit VR little endian
    "MR_small.dcm": "1.2.840.10008.1.2.1",  # explicit VR little endian
    "MR_small_bigendian.dcm": "1.2.840.10008.1.2.2",  # explicit VR big endian
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",  # deflated
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",  # RLE lossless
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",  # JPEG extended 12-bit
    "JPEG-LL.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm": "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "693_J2KI.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
}


@pytest.mark.parametrize("name", sorted(TRANSFER_SYNTAXES))
def test_every_transfer_syntax_decodes(name: str) -> None:
    ds = read_dicom(tf(name))
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[name]
    frame = decode_frame(ds, 0, name)
    rows, cols = int(ds.Rows), int(ds.Columns)
    assert frame.data.shape[:2] == (rows, cols)
    arr, _ = frame_to_uint8(ds, frame, 0, label=name)
    assert arr.dtype == np.uint8 and arr.shape[:2] == (rows, cols)
    assert arr.std() > 5  # real image content, not a flat field


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_lossless_variants_decode_to_identical_pixels(name: str) -> None:
    ref = read_dicom(tf("MR_small.dcm"))
    ds = read_dicom(tf(name))
    a, _ = frame_to_uint8(ref, decode_frame(ref, 0), 0)
    b, _ = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    np.testing.assert_array_equal(a, b)


def test_12bit_jpeg_matches_lossless_reference_closely() -> None:
    lossy = read_dicom(tf("JPGExtended.dcm"))
    lossless = read_dicom(tf("JPEG-LL.dcm"))
    a = decode_frame(lossy, 0).data.astype(float)
    b = decode_frame(lossless, 0).data.astype(float)
    assert a.shape == b.shape and a.max() > 255  # really 12-bit samples
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_ct_hounsfield_and_windows_by_hand() -> None:
    ds = read_dicom(tf("CT_small.dcm"))
    frame = decode_frame(ds, 0)
    assert frame.raw_bits == 16  # zero-copy path
    # stored 1089 at (100, 30) → HU 65; stored 224 at (10, 10) → HU −800 (RescaleIntercept −1024).
    assert int(pydicom.dcmread(tf("CT_small.dcm")).pixel_array[100, 30]) == 1089
    lung, _ = frame_to_uint8(ds, frame, 0, window=resolve_window("lung"))
    soft, _ = frame_to_uint8(ds, frame, 0, window=resolve_window("soft_tissue"))
    explicit, windows = frame_to_uint8(ds, frame, 0, window=resolve_window({"center": 65, "width": 2}))
    # PS3.3 linear window: ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    assert lung[100, 30] == 241  # ((65 + 600.5) / 1499 + 0.5) * 255 = 240.7
    assert lung[10, 10] == 94  # ((-800 + 600.5) / 1499 + 0.5) * 255 = 93.6
    assert soft[100, 30] == 144  # ((65 - 39.5) / 399 + 0.5) * 255 = 143.8
    assert explicit[100, 30] == 255 and explicit[10, 10] == 0
    assert windows[0].source == "explicit"


def test_ct3_composite_puts_three_windows_in_rgb() -> None:
    ds = read_dicom(tf("CT_small.dcm"))
    rgb, windows = frame_to_uint8(ds, decode_frame(ds, 0), 0, composite="ct3")
    assert rgb.shape == (128, 128, 3)
    assert [w.name for w in windows] == ["lung", "mediastinum", "bone"]
    # HU 65: lung 241; mediastinum (50/350): ((65-49.5)/349+0.5)*255 = 138.8; bone (400/1800): ((65-399.5)/1799+0.5)*255 = 80.1
    assert tuple(rgb[100, 30]) == (241, 139, 80)


def test_monochrome1_is_inverted() -> None:
    ds = read_dicom(tf("RG1_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    arr, windows = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert windows[0].source == "file" and (windows[0].center, windows[0].width) == (15000, 30000)
    # stored 3606 at (1000, 900): ((3606 - 14999.5) / 29999 + 0.5) * 255 = 30.6 → 31, inverted → 224
    assert arr[1000, 900] == 224
    # Same pixels declared MONOCHROME2 give the un-inverted value.
    ds2 = read_dicom(tf("RG1_UNCR.dcm"))
    ds2.PhotometricInterpretation = "MONOCHROME2"
    arr2, _ = frame_to_uint8(ds2, decode_frame(ds2, 0), 0)
    np.testing.assert_array_equal(arr.astype(int) + arr2.astype(int), 255)


def test_mr_file_window_by_hand() -> None:
    ds = read_dicom(tf("MR_small.dcm"))
    arr, windows = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert (windows[0].source, windows[0].center, windows[0].width) == ("file", 600, 1600)
    assert arr[32, 32] == 61  # stored 182: ((182 - 599.5) / 1599 + 0.5) * 255 = 60.9


def test_palette_colour_is_sensible_rgb() -> None:
    ds = read_dicom(tf("examples_palette.dcm"))
    rgb, windows = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert windows is None and rgb.shape == (350, 800, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[100, 400]) == (162, 162, 162)  # index 155 → palette 41472 (16-bit) → 162


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_ybr_full_uncompressed.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_32bit.dcm",
    ],
)
def test_ybr_and_deep_rgb_match_the_rgb_original(name: str) -> None:
    ref_ds = read_dicom(tf("SC_rgb.dcm"))
    ref, _ = frame_to_uint8(ref_ds, decode_frame(ref_ds, 0), 0)
    ds = read_dicom(tf(name))
    rgb, _ = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert rgb.shape == ref.shape == (100, 100, 3)
    # SC_rgb.dcm: horizontal bands of pure red, green, blue, ... → colours survive conversion
    assert np.abs(rgb.astype(int) - ref.astype(int)).mean() < 6
    assert tuple(ref[5, 50]) == (255, 0, 0) and rgb[5, 50, 0] > 200 and rgb[5, 50, 1] < 40


def test_voi_lut_sequence_and_modality_lut_sequence() -> None:
    ds = read_dicom(tf("vlut_04.dcm"))
    arr, windows = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert windows[0].source == "voi_lut" and arr.std() > 10
    ds = read_dicom(tf("mlut_18.dcm"))
    arr, _ = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert arr.std() > 10


def test_enhanced_ct_uses_per_frame_functional_groups() -> None:
    ds = read_dicom(tf("eCT_Supplemental.dcm"))
    _, windows = frame_to_uint8(ds, decode_frame(ds, 1), 1)
    assert (windows[0].source, windows[0].center, windows[0].width) == ("file", 49, 102)


def test_auto_window_uses_percentiles_when_the_file_has_none() -> None:
    ds = read_dicom(tf("CT_small.dcm"))
    _, windows = frame_to_uint8(ds, decode_frame(ds, 0), 0)
    assert windows[0].source == "auto"
    hu = pydicom.dcmread(tf("CT_small.dcm")).pixel_array.astype(float) - 1024
    lo, hi = np.percentile(hu, [0.5, 99.5])
    assert abs(windows[0].center - (lo + hi) / 2) < 40 and abs(windows[0].width - (hi - lo)) < 80


# --------------------------------------------------------------------------- broken files and guards


@pytest.mark.parametrize(
    ("name", "tag", "problem"),
    [
        ("MR_truncated.dcm", "(7FE0,0010) PixelData", "truncated"),
        ("badVR.dcm", "(0028,0008) NumberOfFrames", "not an integer"),
        ("no_meta.dcm", None, "not a DICOM file"),
        ("JPEG2000-embedded-sequence-delimiter.dcm", "(7FE0,0010) PixelData", "cannot decode"),
        ("nested_priv_SQ.dcm", "(0028,0010) Rows", "required tag is missing"),
    ],
)
def test_broken_files_give_one_clear_error(name: str, tag: str | None, problem: str) -> None:
    path = tf(name)
    with pytest.raises(DicomError) as info:
        render(path, None, None, policy="allow")
    message = str(info.value)
    assert name in message and problem in message
    if tag:
        assert tag in message
    assert isinstance(info.value, ValueError)


def test_guards_refuse_before_decoding(tmp_path) -> None:
    path = tf("RG1_UNCR.dcm")
    with pytest.raises(DicomError, match="over the limit of 1000000"):
        read_dicom(path, limits=DecodeLimits(max_pixels=1_000_000))
    with pytest.raises(DicomError, match="bytes, over the limit"):
        read_dicom(path, limits=DecodeLimits(max_bytes=1_000_000))
    # A header claiming a huge multi-frame object is refused without touching its pixels.
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    ds.NumberOfFrames = 100_000
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb)
    with pytest.raises(DicomError, match="NumberOfFrames"):
        read_dicom(bomb)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, this is not an image" * 10)
    with pytest.raises(DicomError, match="not a DICOM file"):
        render(junk, None, None)


def test_frame_selection() -> None:
    assert select_frames("auto", 1, max_images=None) == [0]
    assert select_frames("auto", 30, max_images=4) == [3, 11, 18, 26]
    assert select_frames("uniform:1", 100, max_images=None) == [50]
    assert select_frames("uniform:50", 10, max_images=None) == list(range(10))
    assert select_frames([2, 0], 3, max_images=None) == [2, 0]
    with pytest.raises(DicomError, match="out of range"):
        select_frames([5], 3, max_images=None)
    with pytest.raises(ValueError, match="limit is 2"):
        select_frames([0, 1, 2], 3, max_images=2)


def _ct5n() -> list[str]:
    folder = Path(tf("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    paths = sorted(str(p) for p in folder.iterdir())
    if len(paths) < 2:
        pytest.skip("dicomdir CT series not available")
    return paths


def test_series_sorted_along_the_normal_when_shuffled() -> None:
    paths = _ct5n()
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    normal = np.cross(
        np.array(headers[0].ImageOrientationPatient[:3], float), np.array(headers[0].ImageOrientationPatient[3:], float)
    )
    expected = sorted(
        range(len(paths)), key=lambda i: float(np.dot(np.array(headers[i].ImagePositionPatient, float), normal))
    )
    z = [float(headers[i].ImagePositionPatient[2]) for i in expected]
    assert z == sorted(z) and len(set(z)) == len(z)
    for seed in range(3):
        shuffled = list(range(len(paths)))
        random.Random(seed).shuffle(shuffled)
        order = slice_order([headers[i] for i in shuffled])
        assert [shuffled[i] for i in order] == expected


def test_series_fallback_and_mixed_series() -> None:
    a, b = pydicom.Dataset(), pydicom.Dataset()
    a.SeriesInstanceUID = b.SeriesInstanceUID = "1.2.3"
    a.InstanceNumber, b.InstanceNumber = 7, 2
    assert slice_order([a, b]) == [1, 0]
    b.SeriesInstanceUID = "1.2.4"
    with pytest.raises(DicomError, match="SeriesInstanceUID"):
        slice_order([a, b])


def test_burned_in_reasons() -> None:
    us = pydicom.dcmread(tf("examples_rgb_color.dcm"), stop_before_pixels=True)
    assert "BurnedInAnnotation" not in us and "absent on a US image" in burned_in_reason(us)
    ct = pydicom.dcmread(tf("CT_small.dcm"), stop_before_pixels=True)
    assert burned_in_reason(ct) is None
    ct.BurnedInAnnotation = "YES"
    assert "BurnedInAnnotation = YES" in burned_in_reason(ct)


def test_dicom_part_builds_the_wire_format() -> None:
    part = dicom_part(tf("CT_small.dcm"), window="lung", frames="auto")
    assert part["type"] == "image_url"
    url = part["image_url"]["url"]
    assert url.startswith("data:application/dicom;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == Path(tf("CT_small.dcm")).read_bytes()
    assert part["image_url"]["dicom"] == {"window": "lung", "frames": "auto"}
    with pytest.raises(ValueError):
        dicom_part(tf("CT_small.dcm"), window={"center": 1})


def test_no_gpl_decoder_is_used() -> None:
    assert importlib.util.find_spec("libjpeg") is None  # pylibjpeg-libjpeg (GPLv3) stays out
    assert RenderSpec(window="lung").window == "lung"
