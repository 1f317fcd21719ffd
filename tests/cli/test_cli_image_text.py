"""`visionzoo train clip_tiny data=shapes task=image-text`, then eval and predict (zero-shot)."""

from __future__ import annotations

import json

from PIL import Image

from visionzoo.cli.main import main

TINY = [
    "data.image_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=8",
    "data.vocab_size=120",
    "data.context_length=16",
    "model.args.image_size=32",
    "model.args.text_layers=1",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.plots=false",
]


def test_clip_train_eval_predict(tmp_path, capsys):
    argv = ["train", "clip_tiny", "data=shapes", "task=image-text", *TINY]
    assert main([*argv, f"trainer.output_dir={tmp_path}", "trainer.run_name=clip"]) == 0
    run = tmp_path / "clip"
    assert (run / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["val/zeroshot_acc1"] <= 1 and "val/t2i_r1" in metrics
    Image.new("RGB", (40, 40), (0, 200, 0)).save(tmp_path / "g.png")
    argv = ["predict", str(run), str(tmp_path / "g.png"), "--classes", "circle,star,square"]
    assert main([*argv, "--out", str(tmp_path / "p"), "--topk", "3"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert sorted(e["label"] for e in res["topk"]) == ["circle", "square", "star"]


def test_classes_flag_refused_for_classifiers(tmp_path, capsys):
    argv = ["train", "resnet20", "data.image_size=32", "data.train_size=8", "data.val_size=8"]
    argv += ["data.batch_size=8"]
    argv += ["trainer.epochs=1", "trainer.progress=false", "trainer.plots=false"]
    assert main([*argv, f"trainer.output_dir={tmp_path}", "trainer.run_name=r"]) == 0
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "a.png"), "--classes", "x"]) == 2
    assert "--classes" in capsys.readouterr().err
