"""Where a candidate's accuracy comes from: OFA's accuracy predictor, or a measurement on labelled images.

The predictor (an MLP over a one-hot encoding of kernel, expand, depth and resolution, MIT Han Lab) is
the only accuracy ruler available without the supernet's weights and ImageNet. It was trained on OFA's
held-out split and reads about 4-6 points above ImageNet validation top-1, and it cannot tell apart
resolutions within one 16-pixel bucket (its encoding is ``(r - 112) // 16``). So its numbers rank
candidates and are always labelled ``predicted``; a number is ``measured`` only when a checkpoint and
labelled validation images were given and the level was run on them.

OFA pairs this predictor with the width-1.2 supernet in its tutorial; the data file name says w1.0
(see ``data/dynamic_ofa/PROVENANCE.md``). The one-hot encoding does not depend on width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .latency_model import DATA_DIR, Arch, ofa_spec

PREDICTOR_FILE = DATA_DIR / "ofa_mbv3_w10_acc_predictor.pth"


class PredictorError(ValueError):
    """An accuracy predictor file that cannot be used; the message names the file."""


class AccuracyPredictor:
    """OFA's tutorial predictor (``ofa.tutorial.accuracy_predictor``) loaded from a local, safe file.

    OFA's class is reused for its network and its ``spec2feats`` encoding; only its loading is bypassed
    (``pretrained=True`` downloads, and loads with a full unpickler). Returns top-1 in percent.
    """

    name = "OFA accuracy predictor (predicted, OFA held-out split)"

    def __init__(self, path: str | os.PathLike[str] = PREDICTOR_FILE):
        from ofa.tutorial.accuracy_predictor import AccuracyPredictor as OfaPredictor

        self.path = Path(path)
        if not self.path.is_file():
            raise PredictorError(f"{self.path}: accuracy predictor file not found")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file; one line naming it is what helps
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise PredictorError(f"{self.path}: not a readable PyTorch state dict ({type(exc).__name__}: "
                                 f"{first[:200]})") from None
        self._ofa = OfaPredictor(pretrained=False, device="cpu")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise PredictorError(f"{self.path}: expected a state dict of tensors (keys 0.weight .. 6.bias)")
        try:
            self._ofa.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise PredictorError(f"{self.path}: does not fit OFA's predictor MLP 128-400-400-400-1: "
                                 f"{str(exc).splitlines()[0]}") from None
        self._ofa.model.eval()

    def predict(self, archs: Sequence[Arch]) -> list[float]:
        """Predicted top-1 (%) for each architecture, in one batch."""
        if not archs:
            return []
        with torch.inference_mode():
            out = self._ofa.predict_accuracy([ofa_spec(a) for a in archs])
        return [float(v) * 100.0 for v in out.reshape(-1)]


# ---------------------------------------------------------------------- measured accuracy
def labelled_images(folder: str | os.PathLike[str], limit: int | None = None) -> list[tuple[Path, int]]:
    """(image path, class index) from an ImageFolder layout: one sub-folder per class, sorted by name.

    With ImageNet's validation set in synset folders (n01440764, ...), sorted order is the class index
    OFA's classifier uses.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: validation image folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected ImageFolder layout: <class>/<image>.jpg)")
    items = [(f, i) for i, c in enumerate(classes) for f in sorted(c.iterdir())
             if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}]
    items.sort(key=lambda t: (t[0].name, t[1]))  # interleave classes so a limit keeps them balanced
    return items[:limit] if limit else items


def measure_top1(supernet: str, weights: str | os.PathLike[str], archs: Sequence[Arch],
                 val_dir: str | os.PathLike[str], *, limit: int | None = None, calib_images: int = 64,
                 batch_size: int = 16) -> list[tuple[float, str]]:
    """Top-1 (%) of each architecture on labelled images, with OFA's per-sub-network BN re-estimation.

    Returns (top1, note) per architecture. BatchNorm statistics are re-estimated per sub-network on the
    first ``calib_images`` images (as OFA does before evaluating a sub-network).
    """
    import cv2
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from ..inference import supernet as sn
    from ..inference.preprocess import preprocess
    from .device_latency import level_of

    items = labelled_images(val_dir, limit)
    if not items:
        raise ValueError(f"{val_dir}: no images found")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for path, label in items:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        labels.append(label)
    net = sn.build_supernet(supernet)
    sn.load_weights(net, weights)
    out: list[tuple[float, str]] = []
    for arch in archs:
        sub = sn.extract_static(net, level_of(arch))
        data = np.concatenate([preprocess(img, int(arch["r"])) for img in images])
        calib = [(torch.from_numpy(data[i:i + batch_size]), None)
                 for i in range(0, min(len(data), calib_images), batch_size)]
        set_running_statistics(sub, calib)
        sub.eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, len(data), batch_size):
                pred = sub(torch.from_numpy(data[i:i + batch_size])).argmax(1).numpy()
                correct += int((pred == np.asarray(labels[i:i + batch_size])).sum())
        note = (f"top-1 on {len(images)} images of {Path(val_dir).name} with checkpoint {Path(weights).name}, "
                f"BN re-estimated on {min(len(images), calib_images)} of them")
        out.append((100.0 * correct / len(images), note))
    return out

