"""lsdc-2.5d stages on hand-made inputs: levels, crops, heatmaps, the loss, the noise filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lumbar_bench.approaches.lsdc25d import crops as cr
from lumbar_bench.approaches.lsdc25d import grader as gr
from lumbar_bench.approaches.lsdc25d import levels as lvl
from lumbar_bench.approaches.lsdc25d import localize as loc
from lumbar_bench.approaches.lsdc25d import sets
from lumbar_bench.approaches.lsdc25d.config import Lsdc25dConfig
from lumbar_bench.approaches.lsdc25d.study import Shift, _level_centres, shifts
from lumbar_bench.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, SERIES_TYPES
from lumbar_bench.core.errors import ConfigError
from lumbar_bench.data.dicom import SeriesVolume, quantise
from lumbar_bench.data.geometry import SliceGeometry
from tests.data.test_geometry import DISCS, TILTS, block_stack


def test_axial_slots_follow_each_tilted_block_and_pick_the_closest_series() -> None:
    blocks, truth = block_stack(DISCS, TILTS)
    upper = {lv: DISCS[lv] for lv in LEVELS[:3]}
    partial, _ = block_stack(upper, TILTS, per_block=5, gap=2.0)
    slots = lvl.axial_slots({1: blocks, 2: partial}, DISCS)
    assert set(slots) == set(LEVELS)
    for lv, slot in slots.items():
        levels = truth if slot.series_id == 1 else [lv for lv in upper for _ in range(5)]
        assert levels[slot.index] == lv
        assert slot.distance == pytest.approx(0.0, abs=1e-6)  # both series put a slice through it


def test_a_level_outside_every_axial_stack_has_no_slot() -> None:
    lower = {lv: DISCS[lv] for lv in LEVELS[2:]}
    blocks, _ = block_stack(lower, TILTS)
    slots = lvl.axial_slots({7: blocks}, DISCS)
    assert set(slots) == set(LEVELS[2:])


def test_level_points_fall_back_to_the_foraminal_midpoint() -> None:
    spinal = {"l1_l2": np.array([0.0, 0.0, 10.0])}
    foraminal = {
        (CONDITIONS[1], "l2_l3"): np.array([20.0, 0.0, 0.0]),
        (CONDITIONS[2], "l2_l3"): np.array([-10.0, 0.0, 0.0]),
    }
    points = lvl.level_points(spinal, foraminal)
    np.testing.assert_allclose(points["l2_l3"], [5.0, 0.0, 0.0])
    np.testing.assert_allclose(points["l1_l2"], [0.0, 0.0, 10.0])


def _volume(pixels: np.ndarray, spacing: tuple[float, float], xs: np.ndarray | None = None) -> SeriesVolume:
    n = len(pixels)
    xs = np.arange(n, dtype=float) if xs is None else xs
    positions = np.stack([xs, np.zeros(n), np.zeros(n)], axis=1)
    orientations = np.tile([0.0, 1.0, 0.0, 0.0, 0.0, -1.0], (n, 1))
    return SeriesVolume(quantise(pixels), None, np.arange(1, n + 1), positions, orientations, spacing, 1.0)


def test_crop_centres_the_point_and_sizes_the_window_in_mm() -> None:
    pixels = np.zeros((5, 60, 60), dtype=np.float32)
    pixels[2, 20, 40] = 1.0
    fine = _volume(pixels, (0.5, 0.5))
    out = cr.crop(
        fine, np.arange(5), cr.CropSpec(2, 20.0, 40.0, half_mm=5.0), depth=1, size=21, sagittal=True
    )
    assert out.shape == (3, 21, 21)
    assert np.unravel_index(np.argmax(out), out.shape) == (1, 10, 10)
    # 5 mm on each side is 10 pixels at 0.5 mm: the window spans 20 pixels onto 21 samples
    np.testing.assert_allclose(out[1, 10, 9], 0.0, atol=1e-3)
    coarse = _volume(np.zeros((5, 30, 30), dtype=np.float32), (1.0, 1.0))
    edge = cr.crop(
        coarse, np.arange(5), cr.CropSpec(0, 0.0, 0.0, half_mm=5.0), depth=2, size=11, sagittal=True
    )
    assert edge.shape == (5, 11, 11)  # slices past the end repeat, pixels outside are zero


def test_mirror_reverses_sagittal_slices_and_axial_columns() -> None:
    rng = np.random.default_rng(0)
    vol = _volume(rng.random((5, 16, 16)).astype(np.float32), (1.0, 1.0))
    spec = cr.CropSpec(2, 8.0, 8.0, half_mm=4.0)
    mirrored = cr.CropSpec(2, 8.0, 8.0, half_mm=4.0, mirror=True)
    plain = cr.crop(vol, np.arange(5), spec, 2, 9, sagittal=True)
    np.testing.assert_array_equal(cr.crop(vol, np.arange(5), mirrored, 2, 9, sagittal=True), plain[::-1])
    plain = cr.crop(vol, np.arange(5), spec, 2, 9, sagittal=False)
    np.testing.assert_array_equal(
        cr.crop(vol, np.arange(5), mirrored, 2, 9, sagittal=False), plain[:, :, ::-1]
    )


def test_sagittal_slices_are_cropped_in_patient_x_order() -> None:
    vol = _volume(np.zeros((4, 8, 8), dtype=np.float32), (1.0, 1.0), xs=np.array([30.0, 10.0, 20.0, 0.0]))
    np.testing.assert_array_equal(cr.slice_order(vol, sagittal=True), [3, 1, 2, 0])
    np.testing.assert_array_equal(cr.slice_order(vol, sagittal=False), [0, 1, 2, 3])


def test_test_time_shifts_are_the_eight_in_plane_neighbours() -> None:
    assert shifts(0.0) == []
    offsets = {(s.rows_mm, s.cols_mm) for s in shifts(1.5)}
    assert len(offsets) == 8 and (0.0, 0.0) not in offsets
    assert {abs(v) for o in offsets for v in o} == {0.0, 1.5}
    spec = cr.CropSpec(3, 10.0, 20.0, half_mm=5.0, mirror=True)
    moved = Shift(1.5, -3.0).move(spec, np.arange(5), (0.5, 1.5))
    assert (moved.index, moved.row, moved.col, moved.half_mm, moved.mirror) == (3, 13.0, 18.0, 5.0, True)


def test_level_spacing_is_the_median_gap() -> None:
    assert cr.level_spacing(DISCS) == pytest.approx(
        np.median([np.linalg.norm(DISCS[b] - DISCS[a]) for a, b in zip(LEVELS, LEVELS[1:], strict=False)])
    )
    assert cr.level_spacing({}) == cr.DEFAULT_LEVEL_SPACING_MM


def test_heatmap_target_masks_unannotated_channels_and_fades_with_slices() -> None:
    maps, mask = loc.target((16, 16), [(1, 4, 8.0, 5.0)], index=5, channels=3, sigma=1.5, sigma_z=1.0)
    assert mask.tolist() == [0.0, 1.0, 0.0]
    assert maps[0].max() == 0 and maps[2].max() == 0
    assert maps[1, 8, 5] == pytest.approx(np.exp(-0.5))  # one slice away
    both, _ = loc.target(
        (16, 16), [(0, 5, 8.0, 3.0), (0, 5, 8.0, 12.0)], index=5, channels=1, sigma=1.5, sigma_z=0
    )
    assert both[0, 8, 3] == pytest.approx(1.0) and both[0, 8, 12] == pytest.approx(1.0)  # left and right
    maps, _ = loc.target((16, 16), [(0, 4, 8.0, 5.0)], index=5, channels=1, sigma=1.5, sigma_z=0.0)
    assert maps.max() == 0  # axial: only the annotated slice


def test_inputs_carry_neighbours_and_coordinate_planes() -> None:
    stack = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 5, 5), dtype=np.float32)
    x = loc.neighbours(stack, 0)
    assert x.shape == (loc.IN_CHANNELS, 5, 5)
    assert [x[i, 0, 0] for i in range(3)] == [0.0, 0.0, 1.0]  # the edge slice repeats
    assert x[3, 0, 0] == -1 and x[3, -1, 0] == 1 and x[4, 0, -1] == 1 and x[5, 2, 2] == -1
    assert loc.neighbours(stack, 3)[5, 0, 0] == 1


def test_peak_takes_the_arg_max_over_slices_and_scales_to_the_series() -> None:
    maps = np.zeros((3, 8, 8), dtype=np.float32)
    maps[1, 2, 5] = 0.9
    maps[2, 6, 1] = 0.5
    p = loc.peak(maps, [10, 11, 12], scale=(2.0, 4.0))
    assert (p.index, p.row, p.col, p.peak) == (11, 4.0, 20.0, pytest.approx(0.9))
    assert loc.peak(maps[:0], [], scale=(1.0, 1.0)) is None


def test_sides_come_from_patient_x_not_from_the_channel() -> None:
    maps = np.zeros((4, 8, 8), dtype=np.float32)
    maps[0, 3, 3], maps[3, 4, 4] = 0.8, 0.6  # slice 0 lies right of the midline, slice 3 left
    x = np.array([-20.0, -5.0, 5.0, 20.0])
    left, right = loc.split_sides(maps, [0, 1, 2, 3], x, midline=0.0, scale=(1.0, 1.0))
    assert (left.index, right.index) == (3, 0)
    heat = np.zeros((16, 16), dtype=np.float32)
    heat[8, 4], heat[8, 5], heat[8, 12] = 1.0, 0.95, 0.7
    (r1, c1, _), (r2, c2, _) = loc.two_peaks(heat, radius=3.0)
    assert (r1, c1, r2, c2) == (8, 4, 8, 12)  # the neighbour of the first peak is suppressed


def test_disc_candidates_are_suppressed_peaks_and_levels_take_them_in_order() -> None:
    maps = np.zeros((2, 2, 16, 16), dtype=np.float32)
    maps[0, 0, 2, 8], maps[1, 1, 3, 8], maps[0, 1, 9, 8], maps[1, 0, 14, 8] = 0.9, 0.8, 0.7, 0.6
    assert loc.candidates(maps, radius=3.0, count=5) == [(2, 8), (9, 8), (14, 8)]  # (3, 8) suppressed
    assert loc.value_near(maps[:, 1], 10, 8, radius=1.5) == pytest.approx(0.7)
    assert loc.value_near(maps[:, 1], 12, 2, radius=1.5) == 0.0
    near = loc.peak_near(maps[:, 0], [4, 5], (1.0, 1.0), 13, 8, radius=2.0)
    assert (near.index, near.row, near.col) == (5, 14.0, 8.0)  # not the higher peak at (2, 8)
    # Level 1's own map prefers candidate 0 like level 0's; order sends it to candidate 1.
    scores = np.log([[0.9, 0.5, 0.1, 0.1], [0.8, 0.6, 0.2, 0.1], [0.1, 0.2, 0.1, 0.9]])
    assert loc.ordered_assignment(scores)[0] == [0, 1, 3]
    assert loc.ordered_assignment(np.log([[0.1, 0.2, 0.9], [0.1, 0.9, 0.3]]))[0] == [0, 1]


def test_evenly_spaced_levels_skip_a_strong_peak_between_two_discs() -> None:
    # Candidates head to foot: discs at 0, 36 mm, a spurious peak at 54, discs at 72, 108, 144
    # (the five levels' discs are candidates 0, 1, 3, 4, 5) and one more disc below at 180.
    positions = np.array([[r, 0.0] for r in (0.0, 36.0, 54.0, 72.0, 108.0, 144.0, 180.0)])
    scores = np.full((len(LEVELS), len(positions)), np.log(0.3))
    scores[np.arange(len(LEVELS)), [0, 1, 3, 4, 5]] = np.log(0.5)  # each level near its own disc
    scores[[2, 3, 4], [2, 3, 4]] = np.log(0.9)  # but three level maps like the candidate above
    plain, _ = loc.ordered_assignment(scores)
    assert plain == [0, 1, 2, 3, 4]  # the spurious peak takes level 2 and shifts the ones below
    spacings = np.geomspace(20.0, 60.0, 32)
    assert loc.regular_assignment(scores, positions, spacings, spread=0.15) == [0, 1, 3, 4, 5]


def test_levels_take_the_disc_peaks_head_to_foot_even_when_two_level_maps_agree() -> None:
    geom = SliceGeometry.of(np.zeros(3), np.array([0.0, 1, 0, 0, 0, -1]), (2.0, 2.0), (64, 64))
    maps = np.zeros((1, len(LEVELS) + 1, 64, 64), dtype=np.float32)
    rows = [14, 26, 38, 50, 62]  # head to foot (rows grow toward the feet), 24 mm apart
    for ch, r in enumerate(rows):
        maps[0, len(LEVELS), r, 30] = 0.9  # the sharp disc map
        maps[0, ch, r - 4 : r + 5, 25:36] = 0.5  # a broad bump per level
    maps[0, len(LEVELS), 2, 30] = 0.9  # one more disc above L1/L2 (T12/L1)
    maps[0, 1, 36:41, 25:36] = 0.6  # level 2's map also (more strongly) likes level 3's disc
    centres = _level_centres(maps, geom, scale=(1.0, 1.0))
    assert [int(r) for r, _ in centres] == rows


def test_heatmap_loss_ignores_masked_channels() -> None:
    logits = torch.zeros(1, 2, 4, 4)
    maps = torch.zeros(1, 2, 4, 4)
    full = loc.heatmap_loss(logits, maps, torch.tensor([[1.0, 1.0]]), pos_weight=5.0)
    logits[0, 1] = 50.0  # wildly wrong, but on a channel without an annotation
    assert loc.heatmap_loss(logits, maps, torch.tensor([[1.0, 0.0]]), pos_weight=5.0) == pytest.approx(
        float(full)
    )


def _logits_for(severe: float) -> torch.Tensor:
    """Logits of 25 slots whose Severe probability is ``severe`` and the rest split."""
    p = torch.tensor([(1 - severe) / 2, (1 - severe) / 2, severe])
    return torch.log(p).repeat(len(LABEL_COLUMNS), 1)


def test_any_severe_term_punishes_a_missed_severe_study() -> None:
    labels = torch.zeros(len(LABEL_COLUMNS), dtype=torch.long)
    labels[gr.SPINAL_SLOTS[2]] = 2
    flat = torch.arange(len(LABEL_COLUMNS))
    low, high = _logits_for(0.01), _logits_for(0.9)
    ce_only = gr.grading_loss(low, labels, flat, 1, any_weight=0.0)
    assert float(ce_only) == pytest.approx(
        float(torch.nn.functional.cross_entropy(low, labels, weight=torch.tensor([1.0, 2.0, 4.0])))
    )
    extra_low = gr.grading_loss(low, labels, flat, 1, any_weight=1.0) - ce_only
    extra_high = gr.grading_loss(high, labels, flat, 1, any_weight=1.0) - gr.grading_loss(
        high, labels, flat, 1, 0.0
    )
    assert float(extra_low) == pytest.approx(-np.log(0.01), rel=1e-4)
    assert float(extra_high) == pytest.approx(-np.log(0.9), rel=1e-4)


def _crop_set(n: int = 6, variants: int = 2) -> gr.CropSet:
    rng = np.random.default_rng(0)
    crops = rng.random((variants, n, len(LABEL_COLUMNS), 3, 16, 16)).astype(np.float16)
    valid = np.ones((n, len(LABEL_COLUMNS)), dtype=bool)
    valid[0, :3] = False
    labels = rng.integers(0, 3, (n, len(LABEL_COLUMNS)))
    return gr.CropSet(crops, valid, labels)


def test_crop_set_batches_only_valid_crops_in_slot_order() -> None:
    data = _crop_set()
    crops, group, level, labels, flat = data.batch(np.array([0, 1]), np.array([1, 0]))
    assert len(crops) == 2 * len(LABEL_COLUMNS) - 3
    assert flat[0] == 3 and flat[len(LABEL_COLUMNS) - 3] == len(LABEL_COLUMNS)
    np.testing.assert_array_equal(crops[0].numpy(), data.crops[1, 0, 3].astype(np.float32))
    assert group.max() == 2 and level.max() == len(LEVELS) - 1
    assert labels[0] == data.labels[0, 3]


def test_noise_filter_blanks_unlikely_labels_only() -> None:
    data = _crop_set()
    probs = np.full((6, len(LABEL_COLUMNS), 3), 1 / 3)
    probs[1, 4] = [0.98, 0.01, 0.01]
    data.labels[1, 4] = 2
    kept, dropped = sets.drop_unlikely(data, probs, threshold=0.05)
    assert kept.labels[1, 4] == -1
    assert (kept.labels != data.labels).sum() == 1
    assert dropped == pytest.approx(1 / data.valid.sum())


@pytest.mark.slow
def test_grader_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    data = _crop_set(n=4, variants=1)
    epochs: list[int] = []
    hooks = gr.EpochHooks(lambda e, loss, s: epochs.append(e), lambda: False, lambda: None, lambda done: None)
    schedule = gr.Schedule(epochs=1, lr=1e-3, studies_per_batch=2, any_weight=1.0, patience=5)
    ckpt = tmp_path / "grader.pt"
    torch.manual_seed(0)
    gr.train_grader(
        gr.Grader("mobilenet_v3_small"), data, schedule, lambda m: (1.0, 1.0), ckpt, 0, "cpu", hooks
    )
    longer = gr.Schedule(epochs=2, lr=1e-3, studies_per_batch=2, any_weight=1.0, patience=5)
    state = gr.train_grader(
        gr.Grader("mobilenet_v3_small"), data, longer, lambda m: (0.5, 2.0), ckpt, 0, "cpu", hooks
    )
    assert epochs == [0, 1]  # the second call went on from epoch 1
    assert state["best"] == 0.5 and state["best_epoch"] == 1 and state["temperature"] == 2.0


@pytest.mark.slow
def test_grader_keeps_and_resumes_its_moving_average(tmp_path: Path) -> None:
    data = _crop_set(n=4, variants=1)
    hooks = gr.EpochHooks(lambda e, loss, s: None, lambda: False, lambda: None, lambda done: None)
    seen: list[dict] = []

    def validate(model: torch.nn.Module) -> tuple[float, float]:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return 1.0 - 0.1 * len(seen), 1.0

    ckpt, model = tmp_path / "grader.pt", gr.Grader("mobilenet_v3_small")
    schedule = gr.Schedule(epochs=1, lr=1e-2, studies_per_batch=2, any_weight=1.0, patience=5, ema=0.5)
    torch.manual_seed(0)
    state = gr.train_grader(model, data, schedule, validate, ckpt, 0, "cpu", hooks)
    weights = "head.3.weight"
    assert not torch.equal(seen[0][weights], model.state_dict()[weights])  # the average was validated
    assert torch.equal(state["best_state"][weights], seen[0][weights])  # and kept
    assert torch.equal(state["final_state"][weights], seen[-1][weights])
    saved = torch.load(ckpt, weights_only=True)
    assert int(saved["ema"]["n_averaged"]) == 2  # one step per batch of 2 studies
    longer = gr.Schedule(epochs=2, lr=1e-2, studies_per_batch=2, any_weight=1.0, patience=5, ema=0.5)
    gr.train_grader(gr.Grader("mobilenet_v3_small"), data, longer, validate, ckpt, 0, "cpu", hooks)
    assert int(torch.load(ckpt, weights_only=True)["ema"]["n_averaged"]) == 4  # resumed, not restarted


def test_localizer_epochs_are_per_series_type() -> None:
    cfg = Lsdc25dConfig(loc_epochs=(4, 9, 2))
    assert [cfg.localizer(d).epochs for d in SERIES_TYPES] == [4, 9, 2]
    with pytest.raises(ConfigError, match="loc_epochs needs 3 values"):
        Lsdc25dConfig(loc_epochs=(4, 9)).localizer(SERIES_TYPES[0])
