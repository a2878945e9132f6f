"""Synthetic HPA-like immunofluorescence images with ground truth (``hpa synth``).

:func:`generate_sample` draws one 4-channel image with its cell and nucleus masks and the
classes each cell expresses; :func:`write_dataset` writes a Kaggle-2018-style dataset
with the truth beside it.
"""

from hpa.synthetic.dataset import write_dataset
from hpa.synthetic.sample import SyntheticSample, generate_sample

__all__ = ["SyntheticSample", "generate_sample", "write_dataset"]
