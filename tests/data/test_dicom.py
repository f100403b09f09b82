"""DICOM series reading: ordering, rescale, transfer syntaxes, bad files."""

from __future__ import annotations

import io
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from lumbar_bench.core.errors import DataError
from lumbar_bench.data import dicom as dicom_mod
from lumbar_bench.data.dicom import QUANT_LEVELS, SeriesVolume, read_series, sagittal_side, slice_normal
from lumbar_bench.data.dicom_file import decode_pixels, slice_values

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run anterior->posterior, columns head->feet
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def make_dataset(
    pixels: np.ndarray,
    instance: int | None = 1,
    position: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
    orientation: tuple[float, ...] | None = SAGITTAL,
    slope: float | None = None,
    intercept: float | None = None,
    spacing: tuple[float, float] = (0.5, 0.6),
) -> Dataset:
    """A minimal single-frame MR dataset holding uint16 ``pixels``."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 4.0
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = pixels.tobytes()
    return ds


def write_series(
    folder: Path,
    n: int = 6,
    size: tuple[int, int] = (16, 12),
    seed: int = 0,
    names: list[str] | None = None,
    **kwargs: object,
) -> list[np.ndarray]:
    """``n`` sagittal slices 4 mm apart along x; slice i has random values plus 1000 * i.

    Written as ``{i + 1}.dcm`` with InstanceNumber ``i + 1`` unless ``names`` is given.
    Returns the raw pixel arrays in patient-x order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(n):
        arr = (rng.integers(0, 500, size) + 1000 * i).astype(np.uint16)
        ds = make_dataset(arr, instance=i + 1, position=(4.0 * i, -10.0, 20.0), **kwargs)
        name = names[i] if names else f"{i + 1}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
        arrays.append(arr)
    return arrays


def expected_pixels(raw: np.ndarray) -> np.ndarray:
    """The normalisation the reader promises, computed independently."""
    raw = raw.astype(np.float64)
    lo, hi = np.percentile(raw, [0.5, 99.5])
    return np.clip((raw - lo) / (hi - lo), 0, 1)


def test_sorted_by_position_not_instance_or_name(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    rng = np.random.default_rng(1)
    xs = [0.0, 4.0, 8.0, 12.0, 16.0]
    names = [f"{k}.dcm" for k in random.Random(3).sample(range(1, 6), 5)]
    for i, x in enumerate(xs):
        arr = (rng.integers(0, 50, (8, 8)) + 100 * i).astype(np.uint16)
        # InstanceNumber runs opposite to x; file names are shuffled.
        make_dataset(arr, instance=5 - i, position=(x, 0.0, 0.0)).save_as(
            folder / names[i], enforce_file_format=True
        )
    vol = read_series(folder)
    along = vol.positions @ vol.normal
    assert np.all(np.diff(along) > 0)
    # SAGITTAL normal is -x: ascending along the normal means patient x descending (left first).
    np.testing.assert_allclose(vol.normal, [-1, 0, 0])
    np.testing.assert_allclose(sagittal_side(vol), [16, 12, 8, 4, 0])
    assert vol.instance_numbers.tolist() == [1, 2, 3, 4, 5]
    means = vol.pixels.mean(axis=(1, 2))
    assert np.all(np.diff(means) < 0)  # brightness grew with x, so it falls along the stack
    assert vol.slice_spacing == pytest.approx(4.0)
    assert vol.pixel_spacing == (0.5, 0.6)
    np.testing.assert_allclose(vol.orientations, np.tile(SAGITTAL, (5, 1)))


def test_axial_sorted_along_z(tmp_path: Path) -> None:
    folder = tmp_path / "ax"
    folder.mkdir()
    for i, z in enumerate([30.0, 10.0, 20.0]):
        arr = np.full((4, 4), 10 * (i + 1), dtype=np.uint16)
        make_dataset(arr, instance=i + 1, position=(0.0, 0.0, z), orientation=AXIAL).save_as(
            folder / f"{i + 1}.dcm", enforce_file_format=True
        )
    vol = read_series(folder)
    np.testing.assert_allclose(vol.positions[:, 2], [10, 20, 30])
    assert vol.instance_numbers.tolist() == [2, 3, 1]
    assert vol.slice_spacing == pytest.approx(10.0)


def test_pixels_normalised_to_percentiles(tmp_path: Path) -> None:
    arrays = write_series(tmp_path / "s", n=4)
    vol = read_series(tmp_path / "s")
    assert vol.pixels.dtype == np.float32 and vol.pixels.shape == (4, 16, 12)
    assert vol.pixels.min() == 0.0 and vol.pixels.max() == 1.0
    expected = expected_pixels(np.stack(arrays[::-1]))  # stack order is x descending
    np.testing.assert_allclose(vol.pixels, expected, atol=1.0 / QUANT_LEVELS)


def test_rescale_applied(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4) + 7
    ds = pydicom.dcmread(_saved(make_dataset(arr, slope=2.5, intercept=-100), tmp_path / "a.dcm"))
    np.testing.assert_allclose(slice_values(ds), arr * 2.5 - 100)
    plain = pydicom.dcmread(_saved(make_dataset(arr), tmp_path / "b.dcm"))
    np.testing.assert_allclose(slice_values(plain), arr)


def test_series_differing_by_slope_normalise_equal(tmp_path: Path) -> None:
    write_series(tmp_path / "one", slope=1.0, intercept=0.0)
    write_series(tmp_path / "two", slope=3.0, intercept=-50.0)
    a, b = read_series(tmp_path / "one"), read_series(tmp_path / "two")
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1.0 / QUANT_LEVELS)


def _files(
    arrays: list[np.ndarray], signed: bool = False, photometric: str = "MONOCHROME2", **kwargs: object
) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of one sagittal series holding ``arrays`` (int16 stored values when ``signed``)."""
    out = []
    for i, arr in enumerate(arrays):
        ds = make_dataset(np.zeros(arr.shape), instance=i + 1, position=(4.0 * i, 0.0, 0.0), **kwargs)
        ds.PixelRepresentation = int(signed)
        ds.PhotometricInterpretation = photometric
        ds.PixelData = arr.astype(np.int16 if signed else np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append((f"{i + 1}.dcm", buf.getvalue()))
    return out


def _no_call(*args: object, **kwargs: object) -> None:
    raise AssertionError("called")


@pytest.mark.parametrize(
    ("signed", "slope", "intercept", "photometric"),
    [
        (False, None, None, "MONOCHROME2"),
        (False, 2.5, -100.0, "MONOCHROME2"),
        (False, 0.3, 7.0, "MONOCHROME1"),
        (True, -1.5, 20.0, "MONOCHROME2"),
        (True, 1.0, 0.0, "MONOCHROME2"),
    ],
)
@pytest.mark.parametrize("seed", range(4))
def test_lookup_table_path_gives_the_float_paths_bits(
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    signed: bool,
    slope: float | None,
    intercept: float | None,
    photometric: str,
) -> None:
    rng = np.random.default_rng(seed)
    lo = -3000 if signed else 0
    n = int(rng.integers(1, 6))
    arrays = [
        rng.integers(lo, lo + int(rng.integers(2, 5000)), (int(rng.integers(1, 40)), 9)) for _ in range(n)
    ]
    rows = {a.shape[0] for a in arrays}
    arrays = [a[: min(rows)] for a in arrays]
    files = _files(arrays, signed, photometric, slope=slope, intercept=intercept)
    with monkeypatch.context() as m:
        m.setattr(np, "percentile", _no_call)  # the table path never sorts the pixels
        fast = dicom_mod.decode_series(files, Path("s"))
    monkeypatch.setattr(dicom_mod, "_TABLE_DTYPES", frozenset())  # force the general float path
    general = dicom_mod.decode_series(files, Path("s"))
    assert fast.quantised.dtype == np.uint16
    np.testing.assert_array_equal(fast.quantised, general.quantised)


@pytest.mark.parametrize(
    ("bits", "stored", "signed", "syntax"),
    [
        (16, 16, False, ExplicitVRLittleEndian),
        (16, 12, False, ExplicitVRLittleEndian),
        (16, 16, True, ExplicitVRLittleEndian),
        (16, 12, True, ExplicitVRLittleEndian),
        (8, 8, False, ExplicitVRLittleEndian),
        (16, 12, False, ImplicitVRLittleEndian),
        (16, 16, False, ExplicitVRBigEndian),
        (16, 16, False, RLELossless),
    ],
)
def test_decode_pixels_equals_pydicom(bits: int, stored: int, signed: bool, syntax: pydicom.uid.UID) -> None:
    rng = np.random.default_rng(bits + stored)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    info = np.iinfo(dtype)
    arr = rng.integers(info.min, info.max, (7, 5), endpoint=True).astype(dtype)  # high bits set too
    ds = make_dataset(np.zeros((7, 5)))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        bits,
        stored,
        stored - 1,
        int(signed),
    )
    ds.PixelData = arr.tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(
        buf,
        enforce_file_format=True,
        little_endian=syntax != ExplicitVRBigEndian,
        implicit_vr=syntax == ImplicitVRLittleEndian,
    )
    read = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    expected = pydicom.dcmread(io.BytesIO(buf.getvalue())).pixel_array
    got = decode_pixels(read)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_modality_lut_sequence_goes_through_pydicom(tmp_path: Path) -> None:
    """A Modality LUT Sequence (8 KB: left unread by the header parse) takes the general path."""
    for i in range(3):
        ds = make_dataset(np.arange(64).reshape(8, 8) * (i + 1), instance=i + 1, position=(4.0 * i, 0, 0))
        item = Dataset()
        item.LUTDescriptor, item.ModalityLUTType = [4096, 0, 16], "HU"
        item.LUTData = (np.arange(4096, dtype=np.uint16) * 2).tobytes()
        ds.ModalityLUTSequence = pydicom.sequence.Sequence([item])
        _saved(ds, tmp_path / f"{i + 1}.dcm")
    vol = read_series(tmp_path)
    assert vol.table is None
    values = np.stack(
        [slice_values(pydicom.dcmread(tmp_path / f"{i + 1}.dcm")) for i in (2, 1, 0)]
    )  # x falling
    assert values.max() == 2 * 63 * 3  # the LUT doubles every stored value
    np.testing.assert_allclose(vol.pixels, expected_pixels(values), atol=1.0 / QUANT_LEVELS)


@pytest.mark.parametrize("seed", range(20))
def test_percentiles_from_counts_equal_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=int(rng.integers(1, 300))) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    counts = rng.integers(0, 4, values.size)
    counts[rng.integers(values.size)] += 1  # never empty
    data = np.repeat(values, counts)
    qs = (0.5, 99.5, float(rng.uniform(0, 100)))
    expected = np.percentile(data, qs)
    got = dicom_mod.percentiles_from_counts(counts, values, qs)
    assert np.asarray(got).tobytes() == np.asarray(expected, dtype=np.float64).tobytes()


def _saved(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# --- transfer syntaxes -----------------------------------------------------------------

MR_SMALL_VARIANTS = {
    "MR_small_implicit.dcm": "Implicit VR Little Endian",
    "MR_small_bigendian.dcm": "Explicit VR Big Endian",
    "MR_small_expb.dcm": "Explicit VR Big Endian",
    "MR_small_RLE.dcm": "RLE Lossless",
    "MR_small_jp2klossless.dcm": "JPEG 2000 (lossless)",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless",
}


def _testdata(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available offline")
    return Path(path)


@pytest.mark.parametrize("name", sorted(MR_SMALL_VARIANTS))
def test_transfer_syntax_decodes_like_reference(tmp_path: Path, name: str) -> None:
    reference = pydicom.dcmread(_testdata("MR_small.dcm"))
    variant = pydicom.dcmread(_testdata(name))
    np.testing.assert_array_equal(slice_values(variant), slice_values(reference))
    for label, source in (("ref", "MR_small.dcm"), ("var", name)):
        (tmp_path / label).mkdir()
        shutil.copy(_testdata(source), tmp_path / label / "1.dcm")
    ref_vol, var_vol = read_series(tmp_path / "ref"), read_series(tmp_path / "var")
    assert var_vol.pixels.shape == (1, 64, 64)
    np.testing.assert_array_equal(var_vol.pixels, ref_vol.pixels)
    np.testing.assert_allclose(var_vol.positions, ref_vol.positions)


def test_jpeg_lossless_sv1_matches_rle() -> None:
    jpeg = pydicom.dcmread(_testdata("SC_rgb_jpeg_gdcm.dcm"))
    assert jpeg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    rle = pydicom.dcmread(_testdata("SC_rgb_rle.dcm"))
    grey = slice_values(jpeg)
    assert grey.shape == (100, 100)
    np.testing.assert_array_equal(grey, slice_values(rle))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("JPGExtended.dcm", (1024, 256)), ("693_J2KI.dcm", (512, 512)), ("JPEGLSNearLossless_16.dcm", (50, 10))],
)
def test_lossy_syntaxes_decode(name: str, shape: tuple[int, int]) -> None:
    values = slice_values(pydicom.dcmread(_testdata(name)))
    assert values.shape == shape and values.dtype == np.float32
    assert np.isfinite(values).all() and values.std() > 0


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda u: u.name)
def test_encoded_series_roundtrip(tmp_path: Path, syntax: pydicom.uid.UID) -> None:
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no local encoder for {syntax.name}")
    write_series(tmp_path / "plain", n=3, size=(64, 48))
    (tmp_path / "packed").mkdir()
    for path in sorted((tmp_path / "plain").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(tmp_path / "packed" / path.name, enforce_file_format=True)
    packed = read_series(tmp_path / "packed")
    assert pydicom.dcmread(tmp_path / "packed" / "1.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(packed.pixels, read_series(tmp_path / "plain").pixels)


def encode_jpeg_lossless_sv1(pixels: np.ndarray) -> bytes:
    """A minimal 16-bit greyscale JPEG lossless (process 14, predictor 1) codestream.

    No local encoder writes this transfer syntax, so the test carries its own: one Huffman
    table giving each difference category SSSS = 0..16 a 5-bit code.
    """
    rows, cols = pixels.shape
    img = pixels.astype(np.int64)
    pred = np.empty_like(img)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = img[0, :-1]
    pred[1:, 0] = img[:-1, 0]
    pred[1:, 1:] = img[1:, :-1]
    diff = (img - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)
    bits = []
    for d in diff.ravel().tolist():
        ssss = 16 if d == -32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            bits.append(format(d if d > 0 else (d - 1) & ((1 << ssss) - 1), f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        data.append(int(stream[i : i + 8], 2))
        if data[-1] == 0xFF:
            data.append(0)
    size = rows.to_bytes(2, "big") + cols.to_bytes(2, "big")
    sof = b"\xff\xc3\x00\x0b\x10" + size + bytes([1, 1, 0x11, 0])
    dht = b"\xff\xc4" + (36).to_bytes(2, "big") + bytes([0, 0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = b"\xff\xda\x00\x08" + bytes([1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + bytes(data) + b"\xff\xd9"


def test_jpeg_lossless_sv1_greyscale_16bit(tmp_path: Path) -> None:
    arrays = write_series(tmp_path / "plain", n=3, size=(40, 24))
    arrays[1][2, 0] = 40000  # a difference of -32768 from the pixel above exercises SSSS = 16
    arrays[1][1, 0] = 7232
    (tmp_path / "packed").mkdir()
    for i, arr in enumerate(arrays):
        ds = make_dataset(arr, instance=i + 1, position=(4.0 * i, -10.0, 20.0))
        ds.save_as(tmp_path / "plain" / f"{i + 1}.dcm", enforce_file_format=True)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([encode_jpeg_lossless_sv1(arr)])
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / "packed" / f"{i + 1}.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(slice_values(pydicom.dcmread(tmp_path / "packed" / "2.dcm")), arrays[1])
    np.testing.assert_array_equal(
        read_series(tmp_path / "packed").pixels, read_series(tmp_path / "plain").pixels
    )


# --- bad files ---------------------------------------------------------------------------


def test_bad_files_skipped_with_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "s"
    write_series(folder, n=5)
    raw = (folder / "2.dcm").read_bytes()
    (folder / "2.dcm").write_bytes(raw[: len(raw) - 100])  # truncated pixel data
    ds = pydicom.dcmread(folder / "3.dcm")
    del ds.PixelData
    ds.save_as(folder / "3.dcm", enforce_file_format=True)
    (folder / "4.dcm").write_bytes(b"not a dicom file at all")
    make_dataset(np.zeros((8, 8)), instance=9, position=(99.0, 0, 0)).save_as(
        folder / "9.dcm", enforce_file_format=True
    )
    with caplog.at_level(logging.WARNING):
        vol = read_series(folder)
    assert vol.n_slices == 2
    reasons = dict(vol.skipped)
    assert set(reasons) == {"2.dcm", "3.dcm", "4.dcm", "9.dcm"}
    assert "pixel data" in reasons["2.dcm"]
    assert reasons["3.dcm"] == "no pixel data"
    assert "unreadable" in reasons["4.dcm"]
    assert "shape (8, 8)" in reasons["9.dcm"]
    for name in reasons:
        assert any(name in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_all_bad_series_raises_naming_folder(tmp_path: Path) -> None:
    folder = tmp_path / "study" / "series"
    folder.mkdir(parents=True)
    (folder / "1.dcm").write_bytes(b"garbage")
    (folder / "2.dcm").write_bytes(b"")
    with pytest.raises(DataError, match=str(folder)):
        read_series(folder)


def test_missing_or_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_series(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_series(tmp_path / "empty")


def test_missing_geometry_falls_back_to_instance_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    for i, inst in enumerate([3, 1, 2]):
        arr = np.full((4, 4), inst * 10, dtype=np.uint16)
        make_dataset(arr, instance=inst, position=None, orientation=None).save_as(
            folder / f"f{i}.dcm", enforce_file_format=True
        )
    with caplog.at_level(logging.WARNING):
        vol = read_series(folder)
    assert vol.instance_numbers.tolist() == [1, 2, 3]
    assert np.isnan(vol.positions).all() and np.isnan(vol.orientations).all()
    assert vol.orientations.shape == (3, 6)
    assert vol.slice_spacing == 4.0  # SliceThickness fallback
    assert any("InstanceNumber" in r.getMessage() for r in caplog.records)


def test_slice_normal() -> None:
    np.testing.assert_allclose(slice_normal(np.array(AXIAL)), [0, 0, 1])
    assert np.isnan(slice_normal(np.zeros(6))).all()


def test_volume_is_frozen(tmp_path: Path) -> None:
    write_series(tmp_path / "s", n=2)
    vol: SeriesVolume = read_series(tmp_path / "s")
    with pytest.raises(AttributeError):
        vol.pixels = None  # type: ignore[misc]


def test_localiser_in_another_plane_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write_series(folder, n=4)
    scout = make_dataset(np.full((16, 12), 7), instance=99, position=(0.0, 0.0, 0.0), orientation=AXIAL)
    scout.save_as(folder / "99.dcm", enforce_file_format=True)
    tilted = (np.sin(0.3), np.cos(0.3), 0.0, 0.0, 0.0, -1.0)  # normal 17 degrees off the series'
    vol = read_series(folder)
    assert vol.n_slices == 4 and dict(vol.skipped)["99.dcm"].startswith("orientation 90 degrees")
    make_dataset(np.full((16, 12), 7), instance=5, position=(18.0, -10.0, 20.0), orientation=tilted).save_as(
        folder / "5.dcm", enforce_file_format=True
    )
    assert read_series(folder).n_slices == 5


def _tilted_axial(angle: float) -> tuple[float, ...]:
    """Axial orientation tilted by ``angle`` radians about the x axis (normal (0, sin, cos))."""
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(-np.sin(angle)))


def write_tilted_blocks(folder: Path, tilts_deg: tuple[float, ...], per_block: int = 3) -> list[int]:
    """Axial blocks centred 40 mm apart along z, each tilted by its own angle, written in a
    scrambled file order; returns the InstanceNumbers in spatial order (bottom to top)."""
    folder.mkdir()
    rows, cols, ps = 16, 12, 10.0  # a 160 x 120 mm field of view
    spatial = []
    for b, tilt in enumerate(tilts_deg):
        o = np.array(_tilted_axial(np.deg2rad(tilt)))
        normal = slice_normal(o)
        for i in range(per_block):
            centre = np.array([0.0, 0.0, 40.0 * b]) + (i - (per_block - 1) / 2) * 4.0 * normal
            top_left = centre - (cols - 1) / 2 * ps * o[:3] - (rows - 1) / 2 * ps * o[3:]
            spatial.append((tuple(top_left), tuple(o)))
    order = random.Random(5).sample(range(len(spatial)), len(spatial))
    for inst, k in enumerate(order, start=1):
        position, orientation = spatial[k]
        ds = make_dataset(
            np.full((rows, cols), k + 1), instance=inst, position=position, orientation=orientation
        )
        ds.PixelSpacing = [ps, ps]
        ds.save_as(folder / f"{inst}.dcm", enforce_file_format=True)
    return [order.index(k) + 1 for k in range(len(spatial))]


def test_tilted_blocks_keep_each_slice_orientation_and_order(tmp_path: Path) -> None:
    tilts = (-18.0, -5.0, 8.0, 20.0)  # the phantom tilts blocks up to 20 degrees either way
    expected = write_tilted_blocks(tmp_path / "ax", tilts)
    vol = read_series(tmp_path / "ax")
    assert vol.n_slices == 12 and not vol.skipped  # no block is "off the series' plane"
    assert vol.instance_numbers.tolist() == expected  # blocks in order, slices in order within each
    assert vol.orientations.shape == (12, 6)
    angles = np.degrees(np.arcsin(vol.normals[:, 1]))
    np.testing.assert_allclose(angles, np.repeat(tilts, 3), atol=1e-6)
    # the mean normal is the stack direction, not any block's plane
    assert abs(np.degrees(np.arcsin(vol.normal[1])) - np.mean(tilts)) < 2.0


def test_tilted_blocks_beside_a_localiser(tmp_path: Path) -> None:
    write_tilted_blocks(tmp_path / "ax", (-20.0, 20.0, -20.0))
    scout = make_dataset(np.full((16, 12), 7), instance=99, position=(0.0, 0.0, 0.0), orientation=SAGITTAL)
    scout.save_as(tmp_path / "ax" / "99.dcm", enforce_file_format=True)
    vol = read_series(tmp_path / "ax")
    assert vol.n_slices == 9
    assert [name for name, _ in vol.skipped] == ["99.dcm"]
