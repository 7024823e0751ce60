"""Real inputs for hf: directories, made by the model's own tokenizer or image processor.

Text comes from two disjoint pools of English sentences written for this suite and shipped as
package data: ``models/data/sentences.txt`` for the equivalence check and the timing, and
``models/data/calibration_sentences.txt`` for static int8 calibration (the seeds from
``CALIBRATION_SEED`` on), so a quantized model is never judged on the text it was calibrated on.
Images are generated from a seed (gradients, shapes and noise: no image is downloaded or
shipped); calibration seeds give other images. A batch for seed ``s`` is always the same batch.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decoder import EXAMPLE_PAST, EXAMPLE_TOKENS
from .registry import CALIBRATION_SEED

SENTENCES = Path(__file__).with_name("data") / "sentences.txt"
CALIBRATION_SENTENCES = Path(__file__).with_name("data") / "calibration_sentences.txt"


def _lines(path: Path) -> tuple[str, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


@functools.lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """The evaluation sentences (equivalence and timing), one a line (blank lines skipped)."""
    return _lines(SENTENCES)


@functools.lru_cache(maxsize=1)
def calibration_sentences() -> tuple[str, ...]:
    """The calibration sentences: none of them is an evaluation sentence."""
    return _lines(CALIBRATION_SENTENCES)


def is_calibration(seed: int) -> bool:
    """Seeds from CALIBRATION_SEED on draw from the calibration pool (ModelSpec.calibration)."""
    return seed >= CALIBRATION_SEED


def pool(seed: int) -> tuple[str, ...]:
    """The sentences a batch for ``seed`` is drawn from."""
    return calibration_sentences() if is_calibration(seed) else sentences()


def pick(count: int, batch: int, seed: int) -> list[int]:
    """``batch`` row indices into ``count`` rows, chosen by ``seed``: distinct while
    ``batch <= count``, then the same seeded order again."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i % count] for i in range(batch)]


class TokenizedSentences:
    """(batch, seed) -> the tokenizer's tensors for ``batch`` seeded sentences at ``seq_len``, from
    the evaluation pool, or the calibration pool for calibration seeds.

    Every sentence is tokenized once (padding to ``seq_len``, truncating longer ones); a batch
    is a selection of those rows, so making inputs inside a benchmark loop costs no tokenizing.
    """

    def __init__(self, tokenizer: Any, seq_len: int, names: Sequence[str]) -> None:
        if tokenizer.pad_token is None:
            raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) has no pad token; padding the sample "
                             f"sentences to seq_len={seq_len} needs one")
        self.names, self.seq_len, self.tokenizer = tuple(names), seq_len, tokenizer
        self.rows: dict[bool, dict[str, torch.Tensor]] = {}  # is_calibration -> name -> [sentences, seq_len]
        for calibrating, texts in ((False, sentences()), (True, calibration_sentences())):
            encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len,
                                return_tensors="pt")
            missing = [n for n in names if n not in encoded]
            if missing:
                raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) makes {sorted(encoded)}, not {missing}")
            self.rows[calibrating] = {n: encoded[n].to(torch.int64) for n in self.names}

    def __call__(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        index = torch.tensor(pick(len(pool(seed)), batch, seed))
        return {n: t[index].clone() for n, t in self.rows[is_calibration(seed)].items()}


def processor_size(processor: Any) -> tuple[int, int]:
    """(height, width) the image processor resizes to: ``size`` as height/width, or a square
    of its shortest edge (then a centre crop, where it has one, decides the final size)."""
    size = dict(getattr(processor, "size", None) or {})
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ValueError(f"image processor {type(processor).__name__} has size={size}; expected height/width "
                     "or shortest_edge")


def synthetic_image(seed: int, index: int, height: int, width: int) -> Any:
    """A seeded RGB picture: a two-colour gradient at a random angle, a few filled shapes and
    sensor-like noise -- varied enough that calibration sees a spread of activations, and a
    pure function of (seed, index)."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng([seed, index])
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(angle) * xx / max(width - 1, 1) + np.sin(angle) * yy / max(height - 1, 1)) / 2 + 0.25
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1 + 1, y1 + 1], fill=colour)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "RGB")


class ProcessedImages:
    """(batch, seed) -> ``pixel_values`` of seeded synthetic images through the image processor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.height, self.width = processor_size(processor)

    def __call__(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        images = [synthetic_image(seed, i, self.height, self.width) for i in range(batch)]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": torch.as_tensor(pixels).to(torch.float32).contiguous()}


def leading_special_tokens(tokenizer: Any) -> list[int]:
    """What the tokenizer puts before a text's own tokens (a BOS for Llama-style models,
    nothing for GPT-2), so a prompt starts the way the model saw text in training."""
    text = sentences()[0]
    full = tokenizer(text)["input_ids"]
    bare = tokenizer(text, add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return list(full[:start])
    return []


class SentencePrompts:
    """Prompts and decoder-step inputs cut from the sample sentences as running text.

    Row ``r`` of a prompt for seed ``s`` starts at a seeded sentence of the seed's pool and runs on
    through the following ones (wrapping around, repeating the text when a prompt is longer than all of it).
    """

    def __init__(self, tokenizer: Any, max_positions: int | None, layers: int, kv_heads: int,
                 head_dim: int, past_names: Sequence[str],
                 pools: tuple[Sequence[str], Sequence[str]] | None = None) -> None:
        self.tokenizer = tokenizer
        #: (evaluation, calibration) texts: the user's own lines (models/user_inputs.py), else the sample sentences
        self.pools = None if pools is None else (tuple(pools[0]), tuple(pools[1]))
        self.lead = leading_special_tokens(tokenizer)
        self.max_positions = max_positions
        self.kv_shape = (kv_heads, head_dim)
        self.past_names = tuple(past_names)
        self._texts: dict[tuple[bool, int], list[int]] = {}  # (is_calibration, first sentence) -> running text's ids
        if len(self.past_names) != 2 * layers:
            raise ValueError(f"{len(self.past_names)} past names for {layers} layers")

    def pool(self, seed: int) -> tuple[str, ...]:
        """The texts a prompt for ``seed`` is cut from."""
        return pool(seed) if self.pools is None else self.pools[is_calibration(seed)]

    def _running_text(self, first: int, length: int, seed: int) -> list[int]:
        """At least ``length`` token ids of the seed's pool's sentences from ``first`` on, as one text."""
        key = (is_calibration(seed), first)
        if len(self._texts.get(key, ())) < length:
            rows = self.pool(seed)
            text = " ".join(rows[first:] + rows[:first])
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError("the tokenizer makes no tokens from the sample sentences")
            if len(ids) < length:  # longer than every sentence together: the text again, running on
                ids = self.tokenizer(" ".join([text] * (length // len(ids) + 2)), add_special_tokens=False)["input_ids"]
            self._texts[key] = list(ids)
        return self._texts[key][:length]

    def prompt(self, batch: int, length: int, seed: int) -> torch.Tensor:
        """(batch, length, seed) -> [batch, length] int64 token ids of real text."""
        limit = None if self.max_positions is None else self.max_positions - EXAMPLE_TOKENS
        if length < 1 or length <= len(self.lead) or (limit is not None and length > limit):
            raise ValueError(f"prompt length {length}; expected {len(self.lead) + 1}..{limit or 'any'}")
        firsts = pick(len(self.pool(seed)), batch, seed)
        body = length - len(self.lead)
        return torch.tensor([self.lead + self._running_text(f, body, seed) for f in firsts], dtype=torch.int64)

    def step_inputs(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        """A decode step's inputs: EXAMPLE_TOKENS real tokens on a seeded random EXAMPLE_PAST cache."""
        rows = [self._running_text(first, EXAMPLE_TOKENS, seed) for first in pick(len(self.pool(seed)), batch, seed)]
        out = {"input_ids": torch.tensor(rows, dtype=torch.int64)}
        g = torch.Generator().manual_seed(seed)
        for name in self.past_names:
            out[name] = torch.randn(batch, self.kv_shape[0], EXAMPLE_PAST, self.kv_shape[1], generator=g)
        return out
