"""One DICOM file -> :class:`DicomSlice`: its stored pixel values and the header values a series needs.

Native little-endian 8/16-bit greyscale, most of an MRI archive, is viewed in place in the
file's bytes: the header parse leaves large values unread (pydicom's ``defer_size``), and
pydicom's decoder machinery costs more than such a decode itself. Everything else (JPEG,
JPEG lossless, JPEG-LS, JPEG 2000, RLE, big endian, colour) is parsed whole and decoded by
pydicom's pixel handlers and the pylibjpeg plugins. Header values that the slices of a series
share byte for byte are converted once per series; DS/IS geometry is parsed from its raw text.
:mod:`lumbar_bench.data.dicom` puts the slices of a series together.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale, pixel_array
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian


@dataclass(frozen=True)
class DicomSlice:
    """One usable file: stored values, dataset, rescale key and geometry tags (None where absent).

    ``rescale`` is what the modality LUT depends on (its last item: a Modality LUT Sequence is
    present); slices with equal ones share one lookup table.
    """

    name: str
    stored: np.ndarray
    ds: Dataset
    rescale: tuple
    instance_number: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    spacing_between: float | None
    thickness: float | None

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)``."""
        return int(self.stored.shape[0]), int(self.stored.shape[1])

    @property
    def values(self) -> np.ndarray:
        """Rescaled float32 ``(H, W)``: :func:`slice_values` without decoding again."""
        return modality_values(self.stored, self.ds)


def slice_values(ds: Dataset) -> np.ndarray:
    """Decode one single-frame dataset and apply the modality LUT: float32 ``(H, W)``.

    RescaleSlope/RescaleIntercept are applied (``pydicom.pixels.apply_rescale``); colour
    data is averaged to grey; MONOCHROME1 is negated so that bright always means high signal.
    """
    return modality_values(ds.pixel_array, ds)


def modality_values(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> float32 through ds's modality LUT; elementwise except the colour mean."""
    values = np.asarray(apply_rescale(stored, ds), dtype=np.float32)
    if values.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        values = values.mean(axis=-1, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        values = -values
    return values


#: Transfer syntaxes whose pixel data is the array's own little-endian bytes.
_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


def decode_pixels(ds: Dataset) -> np.ndarray:
    """Stored values of a single-frame dataset, as ``pydicom.pixels.pixel_array`` gives them.

    Native little-endian 8/16-bit greyscale, most of an MRI archive, is read straight from the
    pixel data bytes (pydicom's decoder machinery costs more than the decode itself there);
    unused high bits of unsigned values are masked off as pydicom does. Everything else goes
    through pydicom's decoders.
    """
    native = _native_pixels(ds, _Header(ds, {}).shared(), None)
    return native if native is not None else pixel_array(ds)


def _native_pixels(ds: Dataset, h: _Shared, raw: bytes | None) -> np.ndarray | None:
    """Native little-endian 8/16-bit greyscale straight from its bytes; None for anything else.

    When ``ds`` was read with the pixel data deferred, its value is viewed in place in ``raw``,
    the file's bytes, without a copy.
    """
    meta = getattr(ds, "file_meta", None)
    native = (
        meta is not None
        and meta.get("TransferSyntaxUID") in _NATIVE
        and h.samples == 1
        and h.bits in (8, 16)
        and 0 < h.stored_bits <= h.bits
        and not (h.signed and h.stored_bits < h.bits)
    )
    elem = ds.get_item(_tag("PixelData"), keep_deferred=True) if native else None
    if not isinstance(elem, pydicom.dataelem.RawDataElement):
        return None
    if isinstance(elem.value, bytes):
        buffer, offset, length = elem.value, 0, len(elem.value)
    elif elem.value is None and raw is not None and elem.value_tell is not None:
        buffer, offset, length = raw, int(elem.value_tell), int(elem.length)
    else:
        return None
    count = h.rows * h.cols
    if count == 0 or length < count * h.bits // 8 or offset + count * h.bits // 8 > len(buffer):
        return None
    dtype = np.dtype(f"<{'i' if h.signed else 'u'}{h.bits // 8}")
    arr = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(h.rows, h.cols)
    return arr & dtype.type((1 << h.stored_bits) - 1) if h.stored_bits < h.bits else arr


def _floats(value: object, n: int) -> np.ndarray | None:
    """``n`` finite floats from a multi-valued tag, or None."""
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _number(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


class _Header:
    """Tag values of one file; the values its series shares are converted once per series.

    The slices of a series mostly share their header values byte for byte (size, bit depth,
    rescale, spacing); pydicom's conversion of a raw element costs more than decoding a small
    native image, so ``memo`` (one per series) maps those raw bytes to a :class:`_Shared`.
    """

    def __init__(self, ds: Dataset, memo: dict) -> None:
        self.ds, self.memo = ds, memo

    def get(self, keyword: str, default: object = None) -> object:
        """``ds.get(keyword, default)``, looked up by a cached tag."""
        tag = _tag(keyword)
        return self.ds[tag].value if tag in self.ds else default

    def numbers(self, keyword: str) -> object:
        """A DS or IS tag's values as floats, parsed from its raw text; else :meth:`get`'s value.

        Geometry differs in every slice, so the memo cannot help there, and pydicom makes a
        validated DSfloat of every number; the text is decimal numbers separated by backslashes.
        """
        elem = self.ds.get_item(_tag(keyword))
        raw = elem.value if isinstance(elem, pydicom.dataelem.RawDataElement) else None
        if isinstance(raw, bytes) and (elem.VR or dictionary_VR(elem.tag)) in ("DS", "IS"):
            try:
                values = [float(v) for v in raw.split(b"\\")]
                return values[0] if len(values) == 1 else values  # as pydicom: one value bare
            except ValueError:
                pass  # let pydicom say what it makes of it
        return self.get(keyword)

    def shared(self) -> _Shared:
        """The :data:`_SHARED` values, converted once per distinct set of raw values in ``memo``."""
        key = (
            *(_raw_key(self.ds.get_item(_tag(kw))) for kw in _SHARED),
            _tag("ModalityLUTSequence") in self.ds,
        )
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = _Shared.read(self)
        return found


#: Header values the slices of a series usually share byte for byte: read once per series.
_SHARED = (
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "Rows",
    "Columns",
    "RescaleSlope",
    "RescaleIntercept",
    "PhotometricInterpretation",
    "PixelSpacing",
    "SpacingBetweenSlices",
    "SliceThickness",
)


@dataclass(frozen=True)
class _Shared:
    """The header values of :data:`_SHARED`, converted (None where absent)."""

    frames: float
    bits: int
    stored_bits: int
    signed: bool
    samples: int
    rows: int
    cols: int
    rescale: tuple  # what the modality LUT depends on: slices with equal ones share one table
    pixel_spacing: tuple[float, float] | None
    spacing_between: float | None
    thickness: float | None

    @classmethod
    def read(cls, header: _Header) -> _Shared:
        """Convert the values of one file (the slow path, once per distinct header)."""
        get = header.get
        spacing = _floats(header.numbers("PixelSpacing"), 2)
        return cls(
            frames=_number(get("NumberOfFrames", 1)) or 1.0,
            bits=int(_number(get("BitsAllocated")) or 0),
            stored_bits=int(_number(get("BitsStored")) or 0),
            signed=_number(get("PixelRepresentation")) == 1,
            samples=int(_number(get("SamplesPerPixel", 1)) or 1),
            rows=int(_number(get("Rows")) or 0),
            cols=int(_number(get("Columns")) or 0),
            rescale=(
                str(get("RescaleSlope")),
                str(get("RescaleIntercept")),
                str(get("PhotometricInterpretation", "")),
                _tag("ModalityLUTSequence") in header.ds,
            ),
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
            spacing_between=_number(header.numbers("SpacingBetweenSlices")),
            thickness=_number(header.numbers("SliceThickness")),
        )


def _raw_key(elem: object) -> object:
    """A hashable stand-in for one element's raw value (None when absent)."""
    if elem is None:
        return None
    if isinstance(elem, pydicom.dataelem.RawDataElement):
        return (elem.VR, elem.value, elem.is_little_endian, elem.is_implicit_VR)
    return ("converted", str(elem.value))  # type: ignore[attr-defined]


@cache
def _tag(keyword: str) -> BaseTag:
    """The tag of a keyword, looked up once (pydicom's lookup by keyword costs microseconds)."""
    return Tag(keyword)


_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Values longer than this are left unread by the header parse (pydicom's ``defer_size``).
_DEFER_BYTES = 4096


def read_slice(name: str, raw: bytes, memo: dict | None = None) -> DicomSlice | str:
    """Decode one file; the reason it is unusable as a string instead (``memo``: see :class:`_Header`)."""
    try:  # large values (the pixel data) stay in ``raw``, read in place when native
        ds = pydicom.dcmread(io.BytesIO(raw), defer_size=_DEFER_BYTES)
    except Exception as exc:  # any parse failure means "skip this file"
        return f"unreadable: {short_error(exc)}"
    if not any(_tag(kw) in ds for kw in _PIXEL_TAGS):
        return "no pixel data"
    header = _Header(ds, {} if memo is None else memo)
    shared = header.shared()
    if shared.frames > 1:
        return f"multi-frame ({int(shared.frames)} frames) not supported"
    try:
        stored = _native_pixels(ds, shared, raw)
        if stored is None:  # pydicom's decoders, on the file read whole
            ds = pydicom.dcmread(io.BytesIO(raw))
            stored = pixel_array(ds)
    except Exception as exc:  # decoder errors come in many types
        return f"cannot decode pixel data: {short_error(exc)}"
    grey = stored.ndim == 3 and shared.samples > 1
    if stored.ndim != 2 and not grey:
        return f"unexpected pixel array shape {stored.shape}"
    instance = _number(header.numbers("InstanceNumber"))
    return DicomSlice(
        name=name,
        stored=stored,
        ds=ds,
        rescale=(stored.dtype.str, stored.ndim, *shared.rescale),
        instance_number=int(instance) if instance is not None else None,
        position=_floats(header.numbers("ImagePositionPatient"), 3),
        orientation=_floats(header.numbers("ImageOrientationPatient"), 6),
        pixel_spacing=shared.pixel_spacing,
        spacing_between=shared.spacing_between,
        thickness=shared.thickness,
    )


def short_error(exc: BaseException) -> str:
    """First line of an exception, prefixed with its type."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
