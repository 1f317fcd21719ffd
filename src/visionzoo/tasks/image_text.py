"""Image-text learning: CLIP (contrastive) and BLIP (contrastive + matching + captioning).

Batches: train ``(images uint8 Tensor[N, 3, S, S], captions list[str])``; validation
``(images, [[reference captions] per image], labels int64 Tensor[N])`` (labels: the shape class
for zero-shot on ``shapes``, -1 elsewhere). See :mod:`visionzoo.data.image_text`.

The tokenizer. With ``data.tokenizer`` unset, a vocabulary of up to ``data.vocab_size`` entries
is learned from the training captions when the data is built (``tokenizers`` library: BPE in
CLIP's style, WordPiece with BERT's special tokens in BLIP's), written to the run folder as
``tokenizer.json`` and stored in every checkpoint (``task_state``), so ``vz.load``,
``visionzoo eval`` and ``visionzoo predict`` tokenise exactly as training did. ``data.tokenizer``
names a saved tokenizer file instead, or CLIP's ``bpe_simple_vocab_16e6.txt.gz`` merges file (the
full-size CLIP models' tokenizer). The model is built with the tokenizer's ``vocab_size`` and
its end-of-text / special-token ids, and ``data.context_length`` tokens per caption.

CLIP (``family="clip"``): loss = symmetric cross-entropy over the batch's image-text
similarities (:func:`visionzoo.losses.contrastive.clip_loss`, gathered across DDP ranks).
Evaluation: image<->text retrieval recall@1/5/10 over the validation set (every reference
caption of an image counts as a match) and, on ``shapes``, zero-shot top-1 over the shape
names with prompts :data:`SHAPES_TEMPLATES` (averaged, re-normalised text embeddings).
``predict`` gives zero-shot labels for ``class_names`` (the training classes by default;
``visionzoo predict --classes a,b,c``).

BLIP (``family="blip"``): loss = ITC + ITM + LM as the model returns them (the model computes
its own losses, including hard negatives and the momentum encoder; this task sums them).
Evaluation adds captioning BLEU-4 and CIDEr (greedy captions,
:mod:`visionzoo.metrics.captioning`) and ITC retrieval recall. ``predict`` writes a caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.bundle import DataBundle
from ..data.shapes import COLOURS
from ..data.transforms import normalize
from ..engine.config import RunConfig
from ..errors import ConfigError, DataError
from ..registry import get_model_entry
from .base import model_device, to_device, unwrap
from .classification import render_topk

__all__ = ["ImageTextTask", "SHAPES_TEMPLATES"]

# Prompts for zero-shot classification of the largest shape: the label is the class of the
# largest shape, and captions name it first ("a large red circle ..."). Every caption names a
# colour, so a colourless prompt is unlike anything the text tower saw: the prompts are an
# ensemble over the generator's colours (CLIP §3.1.4), averaged and re-normalised per class.
SHAPES_TEMPLATES = tuple(f"a large {colour} {{}}" for colour in COLOURS)
_RECALL_KS = (1, 5, 10)
_FAMILIES = ("clip", "blip")


def _family(cfg: RunConfig) -> str:
    family = get_model_entry(cfg.model.name).family
    if family not in _FAMILIES:
        raise ConfigError(
            f"model {cfg.model.name!r} (family {family}) is not an image-text model; "
            f"task=image-text trains the {', '.join(_FAMILIES)} families"
        )
    return family


class ImageTextTask:
    """Contrastive (CLIP) or contrastive + matching + captioning (BLIP) training on image-caption
    pairs, with retrieval, zero-shot and captioning evaluation."""

    name = "image-text"
    monitor_mode = "max"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.family = _family(cfg)
        self.bundle: DataBundle | None = None
        self.tokenizer: Any = None
        self.last_eval: dict[str, Any] = {}
        self._classifier: tuple[tuple[str, ...], Tensor] | None = None
        d = cfg.data
        for key in ("vocab_size", "context_length"):
            v = getattr(d, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ConfigError(f"data.{key} must be an integer >= 2, got {v!r}")
        k = cfg.loss.text_negatives
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"loss.text_negatives must be an integer >= 0, got {k!r}")
        exchange = cfg.loss.exchange_negatives
        if exchange not in ("none", "classes", "phrases"):
            raise ConfigError(
                f"loss.exchange_negatives must be 'none', 'classes' or 'phrases', got {exchange!r}"
            )
        if exchange == "phrases" and cfg.data.name != "shapes":
            raise ConfigError(
                "loss.exchange_negatives='phrases' exchanges shapes' colours and needs "
                f"data.name=shapes, not {cfg.data.name!r}; use 'classes'"
            )
        if (k or exchange != "none") and self.family != "clip":
            name = "text_negatives" if k else "exchange_negatives"
            raise ConfigError(
                f"loss.{name} is a CLIP loss switch; BLIP draws its own hard negatives for ITM"
            )
        if cfg.loss.negatives_swap not in ("any", "first"):
            raise ConfigError(
                f"loss.negatives_swap must be 'any' or 'first', got {cfg.loss.negatives_swap!r}"
            )
        self._negatives_rng = torch.Generator().manual_seed(int(cfg.trainer.seed))
        # Zero-shot accuracy picks best.pt when the data has classes (shapes); else the mean
        # retrieval recall (CLIP) or CIDEr (BLIP).
        if d.name == "shapes" and self.family == "clip":
            self.monitor = "val/zeroshot_acc1"
        elif self.family == "blip":
            self.monitor = "val/CIDEr"
        else:
            self.monitor = "val/mean_recall"

    # -- tokenizer ------------------------------------------------------------------------

    @property
    def style(self) -> str:
        return "clip" if self.family == "clip" else "blip"

    def _load_tokenizer_file(self, spec: str) -> Any:
        from ..data import tokenizers as tk

        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"data.tokenizer={spec!r} is not a file")
        if p.name.endswith((".txt", ".txt.gz")):
            return tk.clip_bpe_tokenizer(p, context_length=self.cfg.data.context_length)
        return tk.load_tokenizer(p)

    def _train_tokenizer(self, bundle: DataBundle) -> Any:
        from ..data import tokenizers as tk

        texts = _train_captions(bundle.train)
        return tk.train_tokenizer(
            texts,
            vocab_size=self.cfg.data.vocab_size,
            style=self.style,
            context_length=self.cfg.data.context_length,
        )

    def _tokenizer_for(self, model: nn.Module | None = None) -> Any:
        if self.tokenizer is None and model is not None:
            state = getattr(unwrap(model), "visionzoo_task_state", None) or {}
            self.load_state_dict(state)
        if self.tokenizer is None and self.cfg.data.tokenizer:
            self.tokenizer = self._load_tokenizer_file(self.cfg.data.tokenizer)
        if self.tokenizer is None:
            raise ConfigError(
                "no tokenizer: build_data() learns one from the captions, a checkpoint carries "
                "its own, or set data.tokenizer=FILE"
            )
        return self.tokenizer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a resumed run keeps its tokenizer)."""
        if state.get("tokenizer"):
            from ..data.tokenizers import TextTokenizer

            self.tokenizer = TextTokenizer.from_dict(state["tokenizer"])

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints (plain values): the tokenizer."""
        return {"tokenizer": self.tokenizer.to_dict() if self.tokenizer is not None else None}

    # -- data -----------------------------------------------------------------------------

    def build_data(self) -> DataBundle:
        from ..data.image_text import build_image_text_data

        self.bundle = build_image_text_data(self.cfg.data)
        if self.tokenizer is None and not self.cfg.data.tokenizer:
            self.tokenizer = self._train_tokenizer(self.bundle)
        self._tokenizer_for()  # loads data.tokenizer, if that is how it comes
        return self.bundle

    def model_kwargs(self, bundle: DataBundle) -> dict[str, Any]:
        tok = self._tokenizer_for()
        length = self.cfg.data.context_length
        if self.family == "clip":
            return {
                "vocab_size": tok.vocab_size,
                "context_length": length,
                "eot_token_id": tok.eot_token_id,
            }
        from ..models.multimodal.blip import blip_token_ids

        # vocab_size and the [PAD] [CLS] [SEP] [DEC] [ENC] ids; one position per token.
        return {**blip_token_ids(tok), "max_position_embeddings": length}

    def _generate(self, net: nn.Module, x: Tensor, num_beams: int) -> list[str]:
        # Lengths count the whole sequence ([DEC] + caption), as the model's generate does.
        return net.generate(
            x,
            self._tokenizer_for(net),
            num_beams=num_beams,
            min_length=3,
            max_length=self.cfg.data.context_length,
        )

    def save_artifacts(self, run_dir: Path) -> None:
        """Write ``tokenizer.json`` into the run folder (the trainer calls this once)."""
        if self.tokenizer is not None:
            self.tokenizer.save(Path(run_dir) / "tokenizer.json")

    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.bundle is not None:
            return tuple(self.bundle.mean), tuple(self.bundle.std)
        return tuple(self.cfg.data.mean), tuple(self.cfg.data.std)

    def _tokens(self, texts: Sequence[str], model: nn.Module | None = None) -> Any:
        """Token ids and attention mask ``[N, data.context_length]`` of ``texts``."""
        return self._tokenizer_for(model).batch(list(texts), self.cfg.data.context_length)

    # -- training -------------------------------------------------------------------------

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        images, captions = batch[0], batch[1]
        x = normalize(images, *self._normalization())
        if self.family == "clip":
            from ..losses.contrastive import clip_loss

            n = len(captions)
            texts = list(captions)
            texts += self._negative_captions(captions)
            # One forward over the captions and their negatives (one DDP forward per step).
            ids = self._tokens(texts).input_ids.to(x.device)
            image_f, all_text_f, scale = model(x, ids)
            text_f, negatives = all_text_f[:n], all_text_f[n:]
            loss = clip_loss(
                image_f, text_f, scale, negative_text_features=negatives if len(negatives) else None
            )
            with torch.no_grad():
                sim = image_f @ text_f.t()
                target = torch.arange(sim.shape[0], device=sim.device)
                acc = (sim.argmax(dim=1) == target).float().mean()
            return {"loss": loss, "acc_i2t": acc, "logit_scale": scale.detach()}
        tb = self._tokens(captions)
        losses = model(x, tb.input_ids.to(x.device), attention_mask=tb.attention_mask.to(x.device))
        parts = {k: v for k, v in losses.items() if k.startswith("loss_")}
        if not parts:
            raise ConfigError(f"model {self.cfg.model.name!r} returned no losses in training")
        total = torch.stack([v for v in parts.values()]).sum()
        return {"loss": total, **{k: v.detach() for k, v in parts.items()}}

    def _negative_captions(self, captions: Sequence[str]) -> list[str]:
        """``loss.text_negatives`` hard negatives per caption, a class name swapped (NegCLIP),
        then one with two class names (and colours) exchanged per ``loss.exchange_negatives``."""
        from ..data.image_text import exchange_word_negatives, swap_word_negatives

        words = self.bundle.class_names if self.bundle is not None else []
        loss = self.cfg.loss
        out: list[str] = []
        if loss.text_negatives:
            out += swap_word_negatives(
                captions, words, loss.text_negatives, self._negatives_rng, which=loss.negatives_swap
            )
        if loss.exchange_negatives != "none":
            also = list(COLOURS) if loss.exchange_negatives == "phrases" else ()
            out += exchange_word_negatives(captions, words, self._negatives_rng, also=also)
        return out

    # -- evaluation -----------------------------------------------------------------------

    def _classifier_for(self, model: nn.Module, class_names: Sequence[str]) -> Tensor:
        from ..models.multimodal.clip import zero_shot_classifier

        templates = SHAPES_TEMPLATES if self.cfg.data.name == "shapes" else ("a photo of a {}.",)

        def tokenize(texts: list[str]) -> Tensor:
            return self._tokens(texts, model).input_ids

        return zero_shot_classifier(unwrap(model), tokenize, list(class_names), templates)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        from ..metrics.retrieval import retrieval_recall

        device = model_device(model)
        net = unwrap(model)
        image_feats, text_feats, owners, labels = [], [], [], []
        references: list[list[str]] = []
        captions_pred: list[str] = []
        n_images = 0
        for batch in loader:
            batch = to_device(batch, device)
            images, refs, lab = batch[0], batch[1], batch[2]
            x = normalize(images, *self._normalization())
            tb = self._tokens([c for r in refs for c in r], model)
            image_feats.append(net.encode_image(x, normalize=True).float())
            if self.family == "clip":
                text_feats.append(net.encode_text(tb.input_ids.to(device), normalize=True).float())
            else:
                text_feats.append(
                    net.encode_text(
                        tb.input_ids.to(device),
                        attention_mask=tb.attention_mask.to(device),
                        normalize=True,
                    ).float()
                )
                captions_pred += self._generate(net, x, num_beams=1)
            for i, r in enumerate(refs):
                owners += [n_images + i] * len(r)
            references += [list(r) for r in refs]
            labels.append(lab.cpu())
            n_images += images.shape[0]
        if n_images == 0:
            raise DataError(
                f"the validation set of data {self.cfg.data.name!r} is empty: nothing to evaluate"
            )
        img = torch.cat(image_feats)  # (N_img, E)
        txt = torch.cat(text_feats)  # (N_txt, E)
        rec = retrieval_recall(img @ txt.t(), torch.tensor(owners), ks=_RECALL_KS)
        out = {f"val/{k}": float(v) for k, v in rec.items()}
        y = torch.cat(labels)
        classes = self.bundle.class_names if self.bundle is not None else None
        classes = classes or getattr(net, "class_names", None)
        if self.family == "clip" and classes and bool((y >= 0).all()):
            cls = self._classifier_for(model, classes).to(img)  # (K, E)
            pred = (img @ cls.t()).argmax(dim=1).cpu()
            out["val/zeroshot_acc1"] = float((pred == y).float().mean())
        if captions_pred:
            from ..metrics.captioning import caption_scores

            scores = caption_scores(captions_pred, references)
            out["val/BLEU-4"] = scores["BLEU-4"]
            out["val/CIDEr"] = scores["CIDEr"]
            self.last_eval = {"examples": list(zip(captions_pred[:8], references[:8], strict=True))}
        return out

    def report(self) -> str:
        """Example captions of the last evaluation (BLIP), as a Markdown table."""
        ex = self.last_eval.get("examples")
        if not ex:
            return ""
        rows = ["| generated | reference |", "|---|---|"]
        rows += [f"| {g} | {r[0]} |" for g, r in ex]
        return "\n".join(rows)

    # -- prediction -----------------------------------------------------------------------

    def predict(
        self,
        model: nn.Module,
        images: Sequence[Image.Image],
        topk: int = 5,
        class_names: Sequence[str] | None = None,
        **_: Any,
    ) -> list[dict[str, Any]]:
        """CLIP: ``{"topk": [{"label", "index", "prob"}, ...]}`` zero-shot over
        ``class_names`` (default: the classes the model was trained with). BLIP:
        ``{"caption": str}``."""
        if len(images) == 0:
            return []
        from ..data.transforms import eval_transform

        tf = (
            self.bundle.eval_transform if self.bundle is not None else eval_transform(self.cfg.data)
        )
        device = model_device(model)
        net = unwrap(model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                x = torch.stack([tf(im) for im in images]).to(device)
                x = normalize(x, *self._normalization())
                if self.family == "blip":
                    caps = self._generate(net, x, num_beams=3)
                    return [{"caption": c} for c in caps]
                names = list(class_names or getattr(net, "class_names", None) or [])
                if not names:
                    raise ConfigError(
                        "zero-shot prediction needs class names: pass --classes a,b,c"
                    )
                cls = self._classifier_for(model, names)
                feats = net.encode_image(x, normalize=True).float()
                probs = (net.scale().float() * feats @ cls.to(feats).t()).softmax(dim=1).cpu()
        finally:
            model.train(was_training)
        k = min(int(topk), len(names))
        top_p, top_i = probs.topk(k, dim=1)
        return [
            {
                "topk": [
                    {"label": names[i], "index": i, "prob": p} for p, i in zip(ps, ix, strict=True)
                ]
            }
            for ps, ix in zip(top_p.tolist(), top_i.tolist(), strict=True)
        ]

    def render(self, image: Image.Image, prediction: dict[str, Any]) -> Image.Image:
        """The image above its caption (BLIP) or zero-shot labels (CLIP)."""
        return render_topk(image, prediction)


def _train_captions(dataset: Any) -> list[str]:
    """Every caption of the training set, for learning the vocabulary."""
    entries = getattr(dataset, "entries", None)
    if entries is not None:  # caption files: (image, [captions]) without decoding images
        return [c for _, caps in entries for c in caps]
    ds = getattr(dataset, "ds", None)
    if ds is not None:  # shapes: rendered once here, then served from the dataset's cache
        return [ds.caption(i) for i in range(len(ds))]
    return [dataset[i][1] for i in range(len(dataset))]
