"""ImageTextTask with tiny CLIP and BLIP models: tokenizer, losses, evaluation, prediction."""

from __future__ import annotations

import torch
from PIL import Image
from torch.utils.data import DataLoader

import visionzoo as vz
from visionzoo.engine.config import RunConfig
from visionzoo.losses.contrastive import clip_loss
from visionzoo.tasks.image_text import ImageTextTask

TINY_CLIP = dict(
    embed_dim=16, vision_width=32, vision_layers=1, text_width=32, text_layers=1, text_heads=2
)


def _cfg(model: str) -> RunConfig:
    cfg = RunConfig()
    cfg.task = "image-text"
    cfg.model.name = model
    cfg.data.name = "shapes"
    cfg.data.image_size = 32
    cfg.data.train_size = 12
    cfg.data.val_size = 6
    cfg.data.batch_size = 6
    cfg.data.vocab_size = 200
    cfg.data.context_length = 16
    return cfg


def _clip(task: ImageTextTask, bundle):
    kw = task.model_kwargs(bundle)
    return vz.create_model("clip_tiny", image_size=32, **kw)


def test_clip_step_eval_predict_and_state():
    task = ImageTextTask(_cfg("clip_tiny"))
    bundle = task.build_data()
    kw = task.model_kwargs(bundle)
    assert kw["vocab_size"] == task.tokenizer.vocab_size <= 200
    assert kw["eot_token_id"] == task.tokenizer.eot_token_id and kw["context_length"] == 16
    model = _clip(task, bundle)
    images, captions = next(iter(DataLoader(bundle.train, 6, collate_fn=bundle.collate_fn)))
    out = task.training_step(model.train(), (images, captions))
    # The loss is the CLIP loss of the model's own features for these pairs.
    from visionzoo.data.transforms import normalize

    x = normalize(images, bundle.mean, bundle.std)
    tokens = task.tokenizer.batch(captions, 16).input_ids
    f_img, f_txt, scale = model(x, tokens)
    assert torch.allclose(out["loss"], clip_loss(f_img, f_txt, scale), atol=1e-5)
    out["loss"].backward()

    model.eval()
    m = task.evaluate(model, DataLoader(bundle.val, 6, collate_fn=bundle.collate_fn))
    for key in ("val/i2t_r1", "val/t2i_r5", "val/mean_recall", "val/zeroshot_acc1"):
        assert 0.0 <= m[key] <= 1.0
    # Six images, six captions: recall@10 covers everything.
    assert m["val/i2t_r10"] == 1.0

    # A fresh task rebuilds the tokenizer from the checkpoint's task state.
    state = task.state_dict()
    other = ImageTextTask(_cfg("clip_tiny"))
    other.load_state_dict(state)
    assert other.tokenizer.encode("a red circle") == task.tokenizer.encode("a red circle")
    preds = other.predict(
        model, [Image.new("RGB", (40, 30), (200, 0, 0))], topk=2, class_names=["circle", "star"]
    )
    assert [e["label"] for e in preds[0]["topk"]] in (["circle", "star"], ["star", "circle"])
    assert abs(sum(e["prob"] for e in preds[0]["topk"]) - 1) < 1e-5
    assert other.render(Image.new("RGB", (40, 30)), preds[0]).size[0] >= 256


def test_blip_step_and_eval_with_captions():
    cfg = _cfg("blip_tiny")
    task = ImageTextTask(cfg)
    bundle = task.build_data()
    kw = task.model_kwargs(bundle)
    model = vz.create_model(
        "blip_tiny",
        img_size=32,
        **kw,
    )
    images, captions = next(iter(DataLoader(bundle.train, 4, collate_fn=bundle.collate_fn)))
    out = task.training_step(model.train(), (images, captions))
    assert {"loss_itc", "loss_itm", "loss_lm"} <= set(out)
    parts = out["loss_itc"] + out["loss_itm"] + out["loss_lm"]
    assert torch.allclose(out["loss"].detach(), parts, atol=1e-5)
    model.eval()
    val = torch.utils.data.Subset(bundle.val, range(3))
    m = task.evaluate(model, DataLoader(val, 3, collate_fn=bundle.collate_fn))
    assert m["val/CIDEr"] >= 0 and 0 <= m["val/BLEU-4"] <= 1 and "val/i2t_r1" in m
    assert task.report().startswith("| generated | reference |")
    (pred,) = task.predict(model, [Image.new("RGB", (32, 32))])
    assert isinstance(pred["caption"], str)


def test_clip_text_negatives_switch():

    from visionzoo.data.image_text import swap_word_negatives
    from visionzoo.data.transforms import normalize

    cfg = _cfg("clip_tiny")
    cfg.loss.text_negatives = 2
    task = ImageTextTask(cfg)
    bundle = task.build_data()
    model = _clip(task, bundle).train()
    images, captions = next(iter(DataLoader(bundle.train, 6, collate_fn=bundle.collate_fn)))
    out = task.training_step(model, (images, captions))
    # The same negatives, drawn from a generator in the state the task's started in.
    negs = swap_word_negatives(
        captions, bundle.class_names, 2, torch.Generator().manual_seed(cfg.trainer.seed)
    )
    x = normalize(images, bundle.mean, bundle.std)
    f_img, f_txt, scale = model(x, task.tokenizer.batch(captions + negs, 16).input_ids)
    want = clip_loss(f_img, f_txt[:6], scale, negative_text_features=f_txt[6:])
    assert torch.allclose(out["loss"], want, atol=1e-5)
    assert out["loss"] > clip_loss(f_img, f_txt[:6], scale)

    for bad in (-1, 1.5, True):
        _config_error(
            "clip_tiny", "loss.text_negatives must be an integer >= 0", text_negatives=bad
        )
    _config_error("blip_tiny", "CLIP loss switch", text_negatives=1)
    _config_error("clip_tiny", "loss.negatives_swap must be 'any' or 'first'", negatives_swap="x")


def _config_error(model: str, match: str, data_name: str | None = None, **loss: object) -> None:
    """ImageTextTask refuses ``model`` with these ``loss.*`` values, saying ``match``."""
    import pytest

    from visionzoo.errors import ConfigError

    cfg = _cfg(model)
    if data_name is not None:
        cfg.data.name = data_name
    for key, value in loss.items():
        setattr(cfg.loss, key, value)
    with pytest.raises(ConfigError, match=match):
        ImageTextTask(cfg)


def test_clip_exchange_negatives_switch():

    from visionzoo.data.image_text import exchange_word_negatives, swap_word_negatives
    from visionzoo.data.shapes import COLOURS
    from visionzoo.data.transforms import normalize

    cfg = _cfg("clip_tiny")
    cfg.loss.text_negatives = 1
    cfg.loss.exchange_negatives = "phrases"
    task = ImageTextTask(cfg)
    bundle = task.build_data()
    model = _clip(task, bundle).train()
    images, captions = next(iter(DataLoader(bundle.train, 6, collate_fn=bundle.collate_fn)))
    out = task.training_step(model, (images, captions))
    # The swapped negatives first, then the exchanged ones, from one generator in sequence.
    g = torch.Generator().manual_seed(cfg.trainer.seed)
    negs = swap_word_negatives(captions, bundle.class_names, 1, g)
    negs += exchange_word_negatives(captions, bundle.class_names, g, also=list(COLOURS))
    x = normalize(images, bundle.mean, bundle.std)
    f_img, f_txt, scale = model(x, task.tokenizer.batch(captions + negs, 16).input_ids)
    want = clip_loss(f_img, f_txt[:6], scale, negative_text_features=f_txt[6:])
    assert torch.allclose(out["loss"], want, atol=1e-5)
    assert f_txt.shape[0] == 18

    _config_error("clip_tiny", "'none', 'classes' or 'phrases', got True", exchange_negatives=True)
    _config_error(
        "blip_tiny", "loss.exchange_negatives is a CLIP loss switch", exchange_negatives="classes"
    )
    _config_error(
        "clip_tiny",
        "needs data.name=shapes, not 'captions'",
        data_name="captions",
        exchange_negatives="phrases",
    )
