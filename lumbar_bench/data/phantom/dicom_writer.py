"""Write one slice stack as DICOM Part 10 MR files (Explicit VR Little Endian, 16-bit).

No dates, times or patient-identifying content; UIDs derive from the phantom seed and ids,
so the same config writes byte-identical files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lumbar_bench.data.phantom.geometry import Stack

#: (TR, TE, TI) in ms of each contrast; TI only for STIR.
_TIMING = {"T1": (550.0, 10.0, None), "T2": (3500.0, 95.0, None), "STIR": (4200.0, 60.0, 160.0)}


@dataclass(frozen=True)
class SeriesInfo:
    """Series-level tags."""

    study_id: int
    series_id: int
    series_number: int
    study_uid: str
    frame_uid: str
    contrast: str
    slope: float
    intercept: float
    bits_stored: int
    field_strength: float


def uid(*parts: object) -> str:
    """Deterministic UID from ``parts`` (pydicom's prefix + a hash of the parts)."""
    return str(generate_uid(entropy_srcs=["lumbar-bench-phantom", *map(str, parts)]))


def _ds(value: float) -> str:
    """Format ``value`` as a DS string of at most 16 characters."""
    text = f"{value:.8g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def _series_dataset(stack: Stack, info: SeriesInfo) -> Dataset:
    """Tags shared by every slice of the series."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = uid("series", info.study_id, info.series_id)
    ds.FrameOfReferenceUID = info.frame_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.Modality = "MR"
    ds.Manufacturer = "lumbar-bench phantom"
    ds.PatientName = "ANON"
    ds.PatientID = "phantom"
    ds.StudyID = str(info.study_id)[-16:]
    ds.SeriesNumber = info.series_number
    ds.SeriesDescription = stack.description
    ds.BodyPartExamined = "LSPINE"
    tr, te, ti = _TIMING[info.contrast]
    ds.ScanningSequence = ["SE", "IR"] if ti is not None else "SE"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime, ds.EchoTime = _ds(tr), _ds(te)
    if ti is not None:
        ds.InversionTime = _ds(ti)
    ds.MagneticFieldStrength = _ds(info.field_strength)
    ds.SliceThickness = _ds(stack.thickness)
    ds.SpacingBetweenSlices = _ds(stack.spacing)
    ds.PixelSpacing = [_ds(stack.pixel_spacing), _ds(stack.pixel_spacing)]
    ds.Rows, ds.Columns = stack.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = info.bits_stored
    ds.HighBit = info.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _ds(info.intercept)
    ds.RescaleSlope = _ds(info.slope)
    ds.RescaleType = "US"
    return ds


def write_series(folder: Path, stack: Stack, stored: np.ndarray, info: SeriesInfo, fast: bool = True) -> int:
    """Write ``stored`` uint16 ``(n, H, W)`` (spatial order) as ``{InstanceNumber}.dcm`` files.

    ``fast`` encodes the series-level tags once and splices the per-slice elements in
    (byte-identical to ``Dataset.save_as``, which ``fast=False`` uses). Returns the file count.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ds = _series_dataset(stack, info)
    sample = stored[:, ::4, ::4].astype(np.float32) * np.float32(info.slope) + np.float32(info.intercept)
    lo, mid, hi = np.percentile(sample, [1.0, 50.0, 99.5])
    ds.WindowCenter, ds.WindowWidth = _ds(round(float(mid))), _ds(round(max(float(hi - lo), 1.0)))
    template = _Template(ds) if fast else None
    for k in range(stack.n):
        number = int(stack.instance_numbers[k])
        sop = uid("sop", info.study_id, info.series_id, number)
        values = {
            _SOP: sop,
            _NUMBER: number,
            _IPP: [_ds(x) for x in stack.positions[k]],
            _IOP: [_ds(x) for x in (*stack.row_dirs[k], *stack.col_dirs[k])],
            _LOCATION: _ds(float(stack.positions[k] @ stack.normal(k))),
            _PIXELS: np.ascontiguousarray(stored[k], dtype="<u2").tobytes(),
        }
        path = folder / f"{number}.dcm"
        if template is not None and len(sop) == len(_PLACEHOLDER):
            path.write_bytes(template.encode(values))
        else:
            _save_with_pydicom(ds, values, path)
    return stack.n


_SOP, _NUMBER, _IPP, _IOP, _LOCATION, _PIXELS = (
    0x00080018,
    0x00200013,
    0x00200032,
    0x00200037,
    0x00201041,
    0x7FE00010,
)
_KEYWORDS = {
    _SOP: "SOPInstanceUID",
    _NUMBER: "InstanceNumber",
    _IPP: "ImagePositionPatient",
    _IOP: "ImageOrientationPatient",
    _LOCATION: "SliceLocation",
    _PIXELS: "PixelData",
}
_VR = {_SOP: b"UI", _NUMBER: b"IS", _IPP: b"DS", _IOP: b"DS", _LOCATION: b"DS", _PIXELS: b"OW"}
_PLACEHOLDER = "1." + "9" * 62


def _file_meta(sop: str) -> FileMetaDataset:
    """File meta information of one MR image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _save_with_pydicom(ds: Dataset, values: dict[int, object], path: Path) -> None:
    """Set the per-slice tags and let pydicom write the file (the reference path)."""
    ds.file_meta = _file_meta(str(values[_SOP]))
    for tag, value in values.items():
        setattr(ds, _KEYWORDS[tag], value)
    ds.save_as(path, enforce_file_format=True)


class _Template:
    """A series' fixed bytes, split around the per-slice elements (Explicit VR Little Endian)."""

    def __init__(self, ds: Dataset) -> None:
        meta = _file_meta(_PLACEHOLDER)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        self.head = fp.getvalue()
        cuts = sorted(_VR)
        self.blocks: list[bytes] = []
        for lo, hi in zip([-1, *cuts], [*cuts, 0xFFFFFFFF], strict=True):
            part = Dataset()
            for elem in ds:
                if lo < elem.tag < hi and elem.tag not in _VR:
                    part.add(elem)
            block = DicomBytesIO()
            block.is_little_endian, block.is_implicit_VR = True, False
            write_dataset(block, part)
            self.blocks.append(block.getvalue())
        self.tags = cuts

    def encode(self, values: dict[int, object]) -> bytes:
        """Return the whole file of one slice."""
        sop = str(values[_SOP]).encode("ascii")
        parts = [self.head.replace(_PLACEHOLDER.encode("ascii"), sop), self.blocks[0]]
        for tag, block in zip(self.tags, self.blocks[1:], strict=True):
            parts.append(_element(tag, values[tag]))
            parts.append(block)
        return b"".join(parts)


def _element(tag: int, value: object) -> bytes:
    """One Explicit VR Little Endian element (the few VRs the per-slice tags use)."""
    vr = _VR[tag]
    if vr == b"OW":
        data = bytes(value)  # type: ignore[arg-type]
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(data)) + data
    if isinstance(value, list):
        text = "\\".join(value)
    else:
        text = str(value)
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(data)) + data
