"""Frames of enhanced multi-frame objects in slice-normal order, and the presentation step
(Presentation LUT Shape and Presentation LUT Sequence).

Real enhanced objects (pydicom-data's ``eCT_Supplemental.dcm``, ``emri_small.dcm``) plus enhanced CT
objects generated here, whose every frame carries its own spatial rank in its pixel values, so the
rendered order can be read back from the pixels.
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).parent))
from _files import tf

from core.dicom import DicomError, decode_frame, frame_order, frame_to_uint8, read_dicom, resolve_window
from core.manifest import RenderSpec
from core.render import render

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
OBLIQUE = [0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0]  # rows 30° off x; normal = (0, 0, 1)
SIZE = 8


def _item(**elements: object) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def enhanced_ct(
    ranks: list[int],
    *,
    positions: bool = True,
    in_stack: bool = True,
    dimension_index: bool = True,
    orientation: list[float] | None = None,
    per_frame_orientation: list[list[float]] | None = None,
    stack_ids: list[str] | None = None,
    temporal: list[int] | None = None,
    spacing: float = 2.5,
) -> bytes:
    """An Enhanced CT object whose stored frame ``i`` lies at spatial rank ``ranks[i]`` along the normal.

    Every pixel of stored frame ``i`` holds ``100 * (ranks[i] + 1)`` HU, so the rendered order can be read
    back; positions step ``spacing`` mm along the normal of ``orientation`` (oblique by default).
    """
    orientation = orientation or OBLIQUE
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    origin = np.array([-120.0, 35.0, 410.0])
    n = len(ranks)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.NumberOfFrames = n
    shared = _item(
        PixelValueTransformationSequence=Sequence([_item(RescaleIntercept=0, RescaleSlope=1, RescaleType="HU")]),
        FrameVOILUTSequence=Sequence([_item(WindowCenter=600, WindowWidth=1200)]),
    )
    if per_frame_orientation is None:
        shared.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=orientation)])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i, rank in enumerate(ranks):
        item = Dataset()
        content = _item()
        if in_stack:
            content.InStackPositionNumber = rank + 1
        if dimension_index:
            content.DimensionIndexValues = [1, rank + 1]
        if stack_ids is not None:
            content.StackID = stack_ids[i]
        if temporal is not None:
            content.TemporalPositionIndex = temporal[i]
        item.FrameContentSequence = Sequence([content])
        if positions:
            position = origin + normal * spacing * rank + row * 0.1 * i  # in-plane jitter must not matter
            item.PlanePositionSequence = Sequence([_item(ImagePositionPatient=[f"{v:.4f}" for v in position])])
        if per_frame_orientation is not None:
            item.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=per_frame_orientation[i])])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = np.stack([np.full((SIZE, SIZE), 100 * (rank + 1), np.int16) for rank in ranks])
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _hu_of(img) -> int:
    """HU of a rendered frame of :func:`enhanced_ct` (window 600/1200 → 8 bits, inverted by hand)."""
    v = np.asarray(img)[..., 0].astype(float).mean()
    return round(((v / 255 - 0.5) * 1199 + 599.5) / 100) * 100


# --------------------------------------------------------------------------- real files


def test_real_enhanced_ct_frames_follow_the_slice_normal() -> None:
    ds = read_dicom(tf("eCT_Supplemental.dcm"))
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert z == [-159.0, -149.0]  # stored order; orientation (-1,0,0)/(0,1,0): normal (0,0,-1)
    assert frame_order(ds) == [1, 0]  # -149 · -1 = 149 < 159: frame 1 first
    images, record = render(tf("eCT_Supplemental.dcm"), RenderSpec(frames="uniform:2", window="soft_tissue"), None)
    assert record.frames == [0, 1] and record.source_frames == [1, 0]
    by_hand = [frame_to_uint8(ds, decode_frame(ds, i), i, window=resolve_window("soft_tissue"))[0] for i in (1, 0)]
    assert [np.asarray(im)[..., 0].tobytes() for im in images] == [a.tobytes() for a in by_hand]
    # An explicit index counts in display order too: position 0 is stored frame 1.
    first, rec = render(tf("eCT_Supplemental.dcm"), RenderSpec(frames=[0], window="soft_tissue"), None)
    assert rec.source_frames == [1] and np.asarray(first[0])[..., 0].tobytes() == by_hand[0].tobytes()


def test_real_enhanced_mr_without_geometry_keeps_the_stored_order() -> None:
    ds = read_dicom(tf("emri_small.dcm"))
    assert "PerFrameFunctionalGroupsSequence" not in ds and int(ds.NumberOfFrames) == 10
    assert frame_order(ds) == list(range(10))
    _, record = render(tf("emri_small.dcm"), RenderSpec(frames="uniform:5"), None)
    assert record.source_frames == record.frames == [1, 3, 5, 7, 9]


# --------------------------------------------------------------------------- generated enhanced CT


def test_generated_enhanced_ct_is_sorted_along_an_oblique_normal() -> None:
    ranks = list(range(9))
    random.Random(3).shuffle(ranks)
    data = enhanced_ct(ranks)
    ds = read_dicom(data)
    order = frame_order(ds)
    assert [ranks[i] for i in order] == list(range(9))
    images, record = render(data, RenderSpec(frames="uniform:9"), None, max_images=9)
    assert [_hu_of(im) for im in images] == [100 * (r + 1) for r in range(9)]
    assert record.frames == list(range(9)) and record.source_frames == order
    # uniform:3 picks the centres of three equal parts of the sorted stack: ranks 1, 4, 7.
    three, rec3 = render(data, RenderSpec(frames="uniform:3"), None)
    assert [_hu_of(im) for im in three] == [200, 500, 800] and rec3.source_frames == [order[k] for k in (1, 4, 7)]


def test_stored_order_that_is_reversed_along_the_normal() -> None:
    data = enhanced_ct([4, 3, 2, 1, 0], orientation=[1, 0, 0, 0, 1, 0])
    assert frame_order(read_dicom(data)) == [4, 3, 2, 1, 0]


def test_fallback_to_in_stack_position_without_plane_positions() -> None:
    ranks = [2, 0, 3, 1]
    data = enhanced_ct(ranks, positions=False, dimension_index=False)
    assert frame_order(read_dicom(data)) == [1, 3, 0, 2]


def test_fallback_to_in_stack_position_when_orientations_differ() -> None:
    # A three-plane localizer: no single normal, so positions are not comparable; InStackPositionNumber is.
    planes = [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]]
    data = enhanced_ct([1, 2, 0], per_frame_orientation=planes)
    assert frame_order(read_dicom(data)) == [2, 0, 1]


def test_fallback_to_dimension_index_values_then_stored_order() -> None:
    data = enhanced_ct([1, 2, 0], positions=False, in_stack=False)
    assert frame_order(read_dicom(data)) == [2, 0, 1]
    plain = enhanced_ct([1, 2, 0], positions=False, in_stack=False, dimension_index=False)
    assert frame_order(read_dicom(plain)) == [0, 1, 2]


def test_malformed_positions_fall_through_to_the_next_rule() -> None:
    ds = pydicom.dcmread(io.BytesIO(enhanced_ct([1, 0, 2])))
    ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient = [1, 2]  # 2 values
    assert frame_order(ds) == [1, 0, 2]  # InStackPositionNumber


def test_stacks_and_temporal_positions() -> None:
    # Two stacks, each along the normal; within a stack, equal positions keep temporal order.
    data = enhanced_ct([1, 0, 1, 0], stack_ids=["2", "2", "1", "1"], in_stack=False, dimension_index=False)
    assert frame_order(read_dicom(data)) == [3, 2, 1, 0]
    cine = enhanced_ct([0, 0, 0, 1, 1, 1], temporal=[3, 1, 2, 2, 3, 1], in_stack=False, dimension_index=False)
    assert frame_order(read_dicom(cine)) == [1, 2, 0, 5, 3, 4]


# --------------------------------------------------------------------------- Presentation LUT Shape


def _ct(shape: str | None, photometric: str = "MONOCHROME2") -> Dataset:
    ds = read_dicom(tf("CT_small.dcm"))
    ds.PhotometricInterpretation = photometric
    if shape is not None:
        ds.PresentationLUTShape = shape
    return ds


def _lung(ds: Dataset, **kwargs: object) -> np.ndarray:
    return frame_to_uint8(ds, decode_frame(ds, 0), 0, window=resolve_window("lung"), **kwargs)[0]


def test_presentation_lut_shape_inverse_inverts_after_the_window() -> None:
    identity = _lung(_ct("IDENTITY"))
    assert identity[100, 30] == 241 and identity[10, 10] == 94  # by hand in test_dicom
    assert np.array_equal(_lung(_ct(None)), identity)
    inverse = _lung(_ct("INVERSE"))
    assert inverse[100, 30] == 14 and inverse[10, 10] == 161  # 255 − VOI output (PS3.3 C.11.6)
    np.testing.assert_array_equal(inverse.astype(int) + identity.astype(int), 255)
    composite = frame_to_uint8(_ct("INVERSE"), decode_frame(_ct(None), 0), 0, composite="ct3")[0]
    assert tuple(composite[100, 30]) == (255 - 241, 255 - 139, 255 - 80)


def test_monochrome1_with_inverse_is_inverted_once() -> None:
    mono1 = _lung(_ct(None, "MONOCHROME1"))
    np.testing.assert_array_equal(_lung(_ct("INVERSE", "MONOCHROME1")), mono1)  # DX pairs them: one inversion
    np.testing.assert_array_equal(_lung(_ct("IDENTITY", "MONOCHROME1")), mono1)  # the photometric keeps its meaning
    assert mono1[100, 30] == 255 - 241


def test_presentation_lut_shape_applies_to_auto_windows_and_rendering() -> None:
    path = tf("CT_small.dcm")
    plain, plain_record = render(path, None, None)
    ds = pydicom.dcmread(path)
    ds.PresentationLUTShape = "INVERSE"
    inverted, record = render(ds, None, None)
    assert record.windows == plain_record.windows  # the window is chosen before the presentation step
    np.testing.assert_array_equal(np.asarray(inverted[0]).astype(int) + np.asarray(plain[0]).astype(int), 255)


def test_unknown_presentation_lut_shape_names_the_tag() -> None:
    with pytest.raises(DicomError, match=r"\(2050,0020\) PresentationLUTShape"):
        _lung(_ct("LOG"))


# --------------------------------------------------------------------------- Presentation LUT Sequence

RAMP = [0, 8, 1024, 2048, 3071, 4095]  # 12-bit stored values; the window below maps each to x / 4095


def _ramp(photometric: str = "MONOCHROME2") -> Dataset:
    """One row of 12-bit values whose VOI output is exactly ``x / 4095`` (LINEAR_EXACT, PS3.3 C.11.2.1.3)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    ds.Modality, ds.BurnedInAnnotation = "DX", "NO"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, len(RAMP), 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2047.5, 4095, "LINEAR_EXACT"
    ds.PixelData = np.asarray(RAMP, dtype="<u2").tobytes()
    return ds


def _with_table(ds: Dataset, table: list[int], bits: int, *, ow: bool = False, entries: int | None = None) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(table) if entries is None else entries, 0, bits]
    if ow:
        item.add_new(0x00283006, "OW", np.asarray(table, dtype="<u2").tobytes())
    else:
        item.add_new(0x00283006, "US", table)
    ds.PresentationLUTSequence = Sequence([item])
    return ds


def _row(ds: Dataset) -> list[int]:
    return frame_to_uint8(ds, decode_frame(ds, 0), 0)[0][0].tolist()


INVERTING_12 = [4095 - i for i in range(4096)]
GAMMA_12 = [round(4095 * (i / 4095) ** (1 / 2.2)) for i in range(4096)]  # P-values of a 1/2.2 gamma, 12 bits


def test_presentation_lut_sequence_maps_the_voi_output_through_its_table() -> None:
    assert _row(_ramp()) == [0, 0, 64, 128, 191, 255]  # rint(x / 4095 × 255): no table
    # Inverting table: P = 4095 − x, scaled to 8 bits: rint((4095 − x) / 4095 × 255).
    assert _row(_with_table(_ramp(), INVERTING_12, 12, ow=True)) == [255, 255, 191, 127, 64, 0]
    # Gamma: P(8) = 240, P(1024) = 2181, P(2048) = 2989, P(3071) = 3593 → rint(P / 4095 × 255).
    # The table is indexed with the VOI output before 8-bit rounding: x = 8 shows 15, not 0.
    assert _row(_with_table(_ramp(), GAMMA_12, 12)) == [0, 15, 136, 186, 224, 255]


def test_presentation_lut_sequence_defines_the_p_values_of_monochrome1() -> None:
    # The table is the whole presentation step: MONOCHROME1 adds no inversion on top of it.
    linear = _with_table(_ramp("MONOCHROME1"), list(range(4096)), 12)
    assert _row(linear) == [0, 0, 64, 128, 191, 255]
    assert _row(_ramp("MONOCHROME1")) == [255, 255, 191, 127, 64, 0]  # without a table: inverted
    # A shape beside the table is ignored (the module holds one or the other).
    linear.PresentationLUTShape = "INVERSE"
    assert _row(linear) == [0, 0, 64, 128, 191, 255]


def test_an_8_bit_inverting_table_equals_presentation_lut_shape_inverse() -> None:
    ds = _with_table(_ct(None), [255 - i for i in range(256)], 8)
    table = _lung(ds)
    assert table[100, 30] == 14 and table[10, 10] == 161  # 255 − the lung window's output (test_dicom)
    np.testing.assert_array_equal(table, _lung(_ct("INVERSE")))
    composite = frame_to_uint8(ds, decode_frame(ds, 0), 0, composite="ct3")[0]
    assert tuple(composite[100, 30]) == (255 - 241, 255 - 139, 255 - 80)


def test_presentation_lut_sequence_is_rendered_and_recorded() -> None:
    images, record = render(_with_table(_ramp(), GAMMA_12, 12), None, None, name="gamma.dcm")
    assert np.asarray(images[0])[0, :, 0].tolist() == [0, 15, 136, 186, 224, 255]
    assert record.presentation == "lut" and record.windows[0][0].source == "file"
    assert render(_ramp("MONOCHROME1"), None, None)[1].presentation == "inverse"
    assert render(_ramp(), None, None)[1].presentation == "identity"
    assert render(tf("SC_rgb.dcm"), None, None, policy="allow")[1].presentation is None  # colour
    old = record.model_dump(exclude={"presentation"})
    assert type(record).model_validate(old).presentation is None  # records written before the field


def test_ow_table_of_a_big_endian_file_is_read_in_its_byte_order(tmp_path: Path) -> None:
    path = tmp_path / "be.dcm"
    ds = _with_table(_ramp(), GAMMA_12, 12, ow=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    ds.PixelData = np.asarray(RAMP, dtype=">u2").tobytes()
    ds.PresentationLUTSequence[0].LUTData = np.asarray(GAMMA_12, dtype=">u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert _row(read_dicom(path)) == [0, 15, 136, 186, 224, 255]


@pytest.mark.parametrize(
    ("table", "entries", "ow", "problem"),
    [
        (None, 4096, False, "LUTData is missing"),
        (list(range(100)), 4096, False, "100 values, the descriptor says 4096 entries"),
        (list(range(100)), 4096, True, "200 bytes, the descriptor's 4096 entries need 8192"),
    ],
)
def test_malformed_presentation_lut_sequence_names_the_file_and_tag(
    table: list[int] | None, entries: int, ow: bool, problem: str
) -> None:
    ds = _with_table(_ramp(), table or [0], 12, ow=ow, entries=entries)
    if table is None:
        del ds.PresentationLUTSequence[0].LUTData
    with pytest.raises(DicomError, match=r"^plut\.dcm: \(2050,0010\) PresentationLUTSequence: ") as e:
        render(ds, None, None, name="plut.dcm")
    assert problem in e.value.problem
    ds.PresentationLUTSequence = Sequence([])
    with pytest.raises(DicomError, match="the sequence has no item"):
        render(ds, None, None, name="plut.dcm")
