"""``lsdc-2.5d``: the competition winners' route. Localise each level, crop around it, grade in 2.5D.

Stages, one module each:

- :mod:`.localize`: heatmap U-Nets find the label points on sagittal T2/STIR (5 spinal),
  sagittal T1 (10 foraminal) and axial T2 (left and right subarticular) slices;
- :mod:`.levels`: sagittal points to axial slices through each axial slice's own plane;
- :mod:`.crops`: ``z +/- crop_depth`` slices around each point, a window sized in millimetres from the
  level spacing, right-side crops flipped onto the left;
- :mod:`.grader`: a torchvision CNN per slice, attention over the slices, a head per condition;
- :mod:`.config`: :class:`~.config.Lsdc25dConfig`, the settings of every stage;
- :mod:`.approach`: the :class:`~lumbar_bench.approaches.base.Approach` that runs them.
"""
