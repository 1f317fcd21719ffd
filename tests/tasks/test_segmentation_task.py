"""SegmentationTask: losses (with auxiliary heads and ignore pixels), evaluation, prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from visionzoo.data.transforms import normalize
from visionzoo.engine.config import RunConfig
from visionzoo.errors import ConfigError, DataError
from visionzoo.models.outputs import AuxOutput
from visionzoo.tasks.segmentation import SegmentationTask, colorize, palette

K = 4


def _cfg(**loss) -> RunConfig:
    cfg = RunConfig()
    cfg.task = "segmentation"
    cfg.model.name = "unet"
    cfg.data.name = "shapes"
    cfg.data.image_size = 16
    cfg.data.batch_size = 4
    cfg.data.train_size = 8
    cfg.data.val_size = 6
    cfg.data.num_classes = K - 1
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    return cfg


class Fixed(nn.Module):
    """Returns stored logits (and aux logits in training mode) whatever the input."""

    def __init__(self, logits, aux=()):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.logits, self.aux = logits, aux

    def forward(self, x):
        out = self.logits * self.w
        if self.training and self.aux:
            return AuxOutput(out, tuple(a * self.w for a in self.aux))
        return out


def _batch(n=2, h=8, w=8):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, K, (n, h, w), generator=g)
    masks[0, 0, :3] = 255
    return images, masks


def _ce(logits, target):
    # Independent: mean of -log softmax at the target over non-ignored pixels.
    logp = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    keep = t != 255
    return -logp[keep, t[keep]].mean()


def test_loss_is_ce_plus_weighted_aux_and_dice():
    images, masks = _batch()
    logits, aux = torch.randn(2, K, 8, 8), torch.randn(2, K, 8, 8)
    task = SegmentationTask(_cfg(aux_weight=0.4))
    out = task.training_step(Fixed(logits, (aux,)).train(), (images, masks))
    expected = _ce(logits, masks) + 0.4 * _ce(aux, masks)
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert torch.allclose(out["loss_aux1"], _ce(aux, masks), atol=1e-5)
    out["loss"].backward()

    task = SegmentationTask(_cfg(ce_weight=0.0, dice_weight=1.0))
    out = task.training_step(Fixed(logits).train(), (images, masks))
    p = logits.softmax(1)
    valid = (masks != 255).unsqueeze(1)
    onehot = F.one_hot(masks.where(masks != 255, 0), K).permute(0, 3, 1, 2) * valid
    p = p * valid
    dice = (2 * (p * onehot).sum((0, 2, 3)) + 1) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    assert torch.allclose(out["loss"], 1 - dice.mean(), atol=1e-5)


def test_smaller_output_uses_centre_crop_of_mask():
    # The paper's U-Net predicts the centre (H - 2m) x (W - 2m) of its input.
    images, masks = _batch(h=12, w=12)
    logits = torch.randn(2, K, 8, 8)
    out = SegmentationTask(_cfg()).training_step(Fixed(logits).train(), (images, masks))
    assert torch.allclose(out["loss"], _ce(logits, masks[:, 2:10, 2:10]), atol=1e-5)


def test_bad_mask_values_are_named():
    images, masks = _batch()
    masks[1, 2, 2] = 9
    with pytest.raises(DataError, match=r"mask values \[9\] are not classes.*0\.\.3"):
        SegmentationTask(_cfg()).training_step(Fixed(torch.randn(2, K, 8, 8)), (images, masks))


def test_config_errors():
    with pytest.raises(ConfigError, match="both 0"):
        SegmentationTask(_cfg(ce_weight=0.0, dice_weight=0.0))
    with pytest.raises(ConfigError, match="loss.aux_weight must be >= 0"):
        SegmentationTask(_cfg(aux_weight=-1.0))
    task = SegmentationTask(_cfg(ignore_index=2))
    with pytest.raises(ConfigError, match="ignore_index=2 is one of the data's 4 classes"):
        task.build_data()


class Oracle(nn.Module):
    """Predicts the shapes generator's own mask for each validation image it is given."""

    def __init__(self, dataset, mean, std, k):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.lookup = {}
        for i in range(len(dataset)):
            image, mask = dataset[i]
            self.lookup[normalize(image[None], mean, std).sum().item()] = mask
        self.k = k

    def forward(self, x):
        masks = torch.stack([self.lookup[xi[None].sum().item()] for xi in x])
        return F.one_hot(masks, self.k).permute(0, 3, 1, 2).float() * 10 * self.w


def test_evaluate_perfect_model_and_report():
    task = SegmentationTask(_cfg())
    bundle = task.build_data()
    model = Oracle(bundle.val, bundle.mean, bundle.std, bundle.num_classes).eval()
    loader = torch.utils.data.DataLoader(bundle.val, batch_size=4)
    m = task.evaluate(model, loader)
    assert m["val/mIoU"] == 1.0 and m["val/pixel_acc"] == 1.0 and m["val/mDice"] == 1.0
    table = task.report()
    assert table.splitlines()[0].startswith("| class | IoU")
    assert "| background | 1.0000 | 1.0000 |" in table


def test_predict_and_render_at_image_size():
    task = SegmentationTask(_cfg())
    task.build_data()
    logits = torch.zeros(1, K, 16, 16)
    logits[:, 2, :, 8:] = 5  # right half class 2, left half class 0
    images = [Image.new("RGB", (30, 20), (10, 20, 30)), Image.new("L", (16, 16))]
    preds = task.predict(Fixed(logits.expand(2, -1, -1, -1)), images)
    mask = preds[0]["_mask"]
    assert mask.shape == (20, 30)
    assert (mask[:, :14] == 0).all() and (mask[:, 16:] == 2).all()
    assert {c["label"] for c in preds[0]["classes"]} == {"background", "square"}
    assert abs(sum(c["fraction"] for c in preds[0]["classes"]) - 1) < 1e-6
    pic = task.render(images[0], preds[0])
    assert pic.size[0] >= 256 and pic.mode == "RGB"


def test_palette_and_colorize():
    pal = palette(21)
    assert tuple(pal[0]) == (0, 0, 0) and tuple(pal[1]) == (128, 0, 0)
    assert tuple(pal[15]) == (192, 128, 128)  # VOC's "person" colour
    assert len({tuple(c) for c in pal}) == 21
    rgb = colorize(np.array([[0, 1], [255, 2]]), 3)
    assert tuple(rgb[1, 0]) == (255, 255, 255)
