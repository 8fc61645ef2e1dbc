"""Representation analyses of text-speech LMs (paper Section 5.2, Appendix C).

:mod:`~smoltolk.analysis.segmentation` (word boundaries from the dynamic layer weights, R-value),
:mod:`~smoltolk.analysis.intrinsic_dim` (GRIDE), :mod:`~smoltolk.analysis.overlap` (subspace
overlap between modalities), :mod:`~smoltolk.analysis.representations` (what is read from the
model), :mod:`~smoltolk.analysis.plots` (figures) and :mod:`~smoltolk.analysis.run` (``smoltolk analyze``).
"""
