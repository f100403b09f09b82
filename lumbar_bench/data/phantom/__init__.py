"""The synthetic lumbar phantom: an analytic 3D spine drawn into RSNA and SPIDER layouts.

Entry point: :func:`lumbar_bench.data.phantom.synth.synthesize` with a
:class:`~lumbar_bench.data.phantom.config.PhantomConfig`.
"""
