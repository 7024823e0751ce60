"""A model fed the user's own inputs instead of generated ones.

Generated inputs (random normal images, English sentences) make a detector, a protein or a code
model meaningless (an amino-acid vocabulary turns every English word into ``[UNK]``) and
calibrate static int8 on the wrong distribution. Three forms are read:

- an ``.npz`` (input name -> array, samples on the first axis), for any model: every input the
  model takes, each with the dtype and the shape after the batch axis it takes;
- a ``.txt`` file, one sample a line (blank lines skipped), for ``hf:`` text models: through the
  directory's own tokenizer at the model's ``seq_len`` (a causal LM's prompts are cut from them);
- a folder of images, for ``hf:`` image models (through the directory's own image processor)
  and for models with one image input (``[N, C, H, W]`` or ``[N, H, W, C]``, C = 1 or 3): through
  ``preprocessor_config.json`` beside an ``onnx:`` file where there is one, else resized to H x W,
  scaled to [0, 1] and, with 3 channels, normalised by the ImageNet mean and std.

The data is fixed. Its samples split once: the last ``min(32, N // 2)`` calibrate int8, the
others evaluate, never the same sample in both. A batch of B for any other seed is the first B
evaluation samples (repeated in order when there are fewer; the model's note and a warning say
so); calibration seed ``CALIBRATION_SEED + i`` takes the i-th consecutive chunk of the calibration
part. Only static int8 depends on the values, and its ONNX stage keys the calibration batches'
bytes, so a new input file rebuilds exactly the calibrated artifacts.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .hf_inputs import ProcessedImages, SentencePrompts, TokenizedSentences
from .registry import CALIBRATION_SEED, ModelSpec, get_model, update_model

CALIBRATION_SAMPLES = 32          # ModelSpec.calibration's 8 batches of 4
CALIBRATION_SEEDS = 1000          # seeds CALIBRATION_SEED .. +999 are calibration batches; others evaluate
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
TEXT_SUFFIXES = frozenset({".txt"})
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FORMS = "an .npz (input name -> array), a .txt file (one sample a line) or a folder of images"

Sample = Callable[[int], dict[str, torch.Tensor]]   # sample index -> each input with a batch axis of 1


def split(count: int, source: Path) -> tuple[int, int]:
    """(evaluation samples, calibration samples) of ``count``; a ValueError when too few to split."""
    if count < 2:
        raise ValueError(f"inputs {source}: {count} sample(s); at least 2 are needed: the first part is evaluated "
                         "on and the last calibrates int8, never the same sample")
    calibration = min(CALIBRATION_SAMPLES, count // 2)
    return count - calibration, calibration


def calibrating(seed: int) -> bool:
    """Whether ``seed`` asks for a calibration batch (ModelSpec.calibration's seeds)."""
    return CALIBRATION_SEED <= seed < CALIBRATION_SEED + CALIBRATION_SEEDS


def rows(evaluation: int, calibration: int, batch: int, seed: int) -> list[int]:
    """The sample indices of a batch for ``seed``: calibration chunks, else the first ``batch``."""
    if calibrating(seed):
        first = (seed - CALIBRATION_SEED) * batch
        return [evaluation + (first + j) % calibration for j in range(batch)]
    return [j % evaluation for j in range(batch)]


class UserInputs:
    """(batch, seed) -> the user's samples (see the module docstring); each sample made once."""

    def __init__(self, source: Path, count: int, sample: Sample, names: Sequence[str]) -> None:
        self.source, self.names = source, tuple(names)
        self.evaluation, self.calibration = split(count, source)
        self._sample, self._made, self._warned = sample, {}, set()

    def __call__(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        picked = rows(self.evaluation, self.calibration, batch, seed)
        if batch > self.evaluation and not calibrating(seed) and batch not in self._warned:
            self._warned.add(batch)
            warnings.warn(f"inputs {self.source}: a batch of {batch} repeats its {self.evaluation} evaluation "
                          "samples in order", UserWarning, stacklevel=2)
        for i in picked:
            if i not in self._made:
                self._made[i] = self._sample(i)
        return {n: torch.cat([self._made[i][n] for i in picked]).contiguous() for n in self.names}

    def describe(self, what: str) -> str:
        return (f"the user's {what} from {self.source.name}: a batch of B is the first B of {self.evaluation} "
                f"(repeated in order when B > {self.evaluation}); the last {self.calibration} calibrate int8")


def attach_inputs(name: str, path: str | Path) -> ModelSpec:
    """Feed model ``name`` from ``path`` (re-registers it); ValueError/FileNotFoundError naming
    the file, the input and what the model takes when they do not fit."""
    spec = get_model(name)
    path = Path(path).expanduser().resolve()
    if spec.inputs_file is not None:
        if spec.inputs_file == path:
            return spec
        raise ValueError(f"model {name!r} is given two input sets, {spec.inputs_file} and {path}; give it one")
    if not path.exists():
        raise FileNotFoundError(f"inputs {path} not found; expected {FORMS}")
    if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        return _texts(spec, path)
    if spec.task == "generation":
        raise ValueError(f"inputs {path}: {name!r} generates tokens from prompts; its inputs can only be a .txt file "
                         "of prompt text (for an hf: causal LM)")
    if path.is_dir():
        inputs, note = _images(spec, path)
    elif path.suffix.lower() == ".npz":
        inputs, note = _arrays(spec, path)
    else:
        raise ValueError(f"inputs {path}: suffix {path.suffix!r}; expected {FORMS}")
    _check_fits(spec, inputs, path)
    if spec.task == "embedding":
        note += "; embeddings: mean-pooled last hidden state over the attention mask"
    return update_model(name, make_inputs=inputs, inputs_file=path, note=note)


def _check_fits(spec: ModelSpec, inputs: UserInputs, path: Path) -> None:
    """One sample made the way the benchmark makes it: each input's dtype and shape after the
    batch axis are the model's (a processor or a default resize that disagrees is named here)."""
    want, got = spec.inputs(1, seed=0), inputs(1, 0)
    for n, t in want.items():
        g = got[n]
        if g.dtype != t.dtype or tuple(g.shape[1:]) != tuple(t.shape[1:]):
            raise ValueError(f"inputs {path}: input {n!r} is made as {g.dtype} {list(g.shape[1:])} per sample; "
                             f"{spec.name!r} takes {t.dtype} {list(t.shape[1:])}")


def _arrays(spec: ModelSpec, path: Path) -> tuple[UserInputs, str]:
    import zipfile
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"inputs {path} is not a readable .npz of arrays: {exc}") from exc
    example = spec.inputs(1, seed=0)
    missing = [n for n in spec.input_names if n not in arrays]
    extra = sorted(set(arrays) - set(spec.input_names))
    if missing or extra:
        raise ValueError(f"inputs {path}: {spec.name!r} takes the inputs {list(spec.input_names)}; "
                         + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                 f"not inputs of it: {extra}" if extra else "") if p))
    for n in spec.input_names:
        a, want = arrays[n], example[n].numpy()
        if a.dtype != want.dtype or a.shape[1:] != want.shape[1:] or a.ndim != want.ndim:
            raise ValueError(f"inputs {path}: input {n!r} is {a.dtype} {list(a.shape)}; {spec.name!r} takes "
                             f"{want.dtype} [N, {', '.join(map(str, want.shape[1:]))}] (N samples on the first axis)")
    counts = {n: arrays[n].shape[0] for n in spec.input_names}
    if len(set(counts.values())) != 1:
        raise ValueError(f"inputs {path}: the inputs hold different numbers of samples {counts}; each needs the same N")
    tensors = {n: torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in spec.input_names}
    inputs = UserInputs(path, next(iter(counts.values())), lambda i: {n: t[i:i + 1] for n, t in tensors.items()},
                        spec.input_names)
    return inputs, inputs.describe("arrays")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"inputs {path} is not UTF-8 text (one sample a line): {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def _texts(spec: ModelSpec, path: Path) -> ModelSpec:
    lines = _lines(path)
    prompts = getattr(spec.make_prompt, "__self__", None)
    if isinstance(prompts, SentencePrompts):  # an hf: causal LM: prompts cut from the user's text
        evaluation, _ = split(len(lines), path)
        mine = SentencePrompts(prompts.tokenizer, prompts.max_positions, len(prompts.past_names) // 2,
                               *prompts.kv_shape, prompts.past_names, pools=(lines[:evaluation], lines[evaluation:]))
        note = (f"greedy decoding; prompts are the user's text from {path.name} (its first {evaluation} lines as "
                "running text) through its tokenizer")
        return update_model(spec.name, make_inputs=mine.step_inputs, make_prompt=mine.prompt, inputs_file=path,
                            note=note)
    if not isinstance(spec.make_inputs, TokenizedSentences):
        raise ValueError(f"inputs {path}: a text file feeds hf: text models (their tokenizer makes the inputs); "
                         f"{spec.name!r} takes {list(spec.input_names)}: give an .npz of them"
                         + (" or a folder of images" if _image_input(spec) else ""))
    inputs = UserSentences(spec.make_inputs, lines, path)
    note = inputs.samples.describe("lines") + f", through its tokenizer at {inputs.seq_len} tokens"
    if spec.task == "embedding":
        note += "; embeddings: mean-pooled last hidden state over the attention mask"
    return update_model(spec.name, make_inputs=inputs, inputs_file=path, note=note)


class UserSentences(TokenizedSentences):
    """The user's lines through the model's tokenizer. Still a TokenizedSentences, so a source
    named again with another seq_len is refused as before (models/sources.py)."""

    def __init__(self, base: TokenizedSentences, lines: Sequence[str], source: Path) -> None:
        # no super().__init__: it would tokenize the sample sentences, which this never serves
        self.names, self.seq_len, self.tokenizer = base.names, base.seq_len, base.tokenizer
        self.lines = list(lines)
        self.samples = UserInputs(source, len(self.lines), self._one, self.names)

    def _one(self, i: int) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer([self.lines[i]], padding="max_length", truncation=True, max_length=self.seq_len,
                                 return_tensors="pt")
        return {n: encoded[n].to(torch.int64) for n in self.names}

    def __call__(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        return self.samples(batch, seed)


def _image_input(spec: ModelSpec) -> tuple[str, str, int, int, int, Any] | None:
    """(name, layout, channels, height, width, dtype) of a model's one image input, else None."""
    if len(spec.input_names) != 1:
        return None
    name = spec.input_names[0]
    t = spec.inputs(1, seed=0)[name]
    if t.ndim != 4 or not t.is_floating_point():
        return None
    if t.shape[1] in (1, 3):
        return name, "NCHW", t.shape[1], t.shape[2], t.shape[3], t.dtype
    if t.shape[3] in (1, 3):
        return name, "NHWC", t.shape[3], t.shape[1], t.shape[2], t.dtype
    return None


def image_files(folder: Path) -> list[Path]:
    """The folder's images by name, each checked to open; a ValueError naming a bad one."""
    from PIL import Image
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"inputs {folder}: no images in the folder (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    for f in files:
        try:
            with Image.open(f) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"inputs {folder}: {f.name} is not a readable image: {exc}") from exc
    return files


def _images(spec: ModelSpec, folder: Path) -> tuple[UserInputs, str]:
    from PIL import Image
    files = image_files(folder)
    if isinstance(spec.make_inputs, ProcessedImages):
        processor, applied = spec.make_inputs.processor, "its image processor (preprocessor_config.json)"
        name, layout = "pixel_values", "NCHW"
    else:
        found = _image_input(spec)
        if found is None:
            raise ValueError(f"inputs {folder}: a folder of images feeds hf: image models and models with one image "
                             f"input ([N, 3 or 1, H, W] or [N, H, W, 3 or 1]); {spec.name!r} takes "
                             f"{list(spec.input_names)}: give an .npz of them")
        name, layout, channels, height, width, dtype = found
        beside = spec.onnx_file.parent if spec.onnx_file is not None else None
        if beside is not None and (beside / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor
            processor = AutoImageProcessor.from_pretrained(str(beside), local_files_only=True)
            applied = f"the image processor of {beside / 'preprocessor_config.json'}"
        else:
            processor = None
            applied = (f"resized to {height}x{width}, scaled to [0, 1]"
                       + (", normalised by the ImageNet mean and std" if channels == 3 else ""))

    def sample(i: int) -> dict[str, torch.Tensor]:
        with Image.open(files[i]) as image:
            if processor is not None:
                pixels = torch.as_tensor(processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"])
                pixels = pixels.to(torch.float32 if isinstance(spec.make_inputs, ProcessedImages) else dtype)
            else:
                pixels = default_pixels(image, channels, height, width).to(dtype)
        return {name: pixels.permute(0, 2, 3, 1).contiguous() if layout == "NHWC" else pixels}
    inputs = UserInputs(folder, len(files), sample, (name,))
    return inputs, inputs.describe("images") + f"; {applied}"


def default_pixels(image: Any, channels: int, height: int, width: int) -> torch.Tensor:
    """[1, C, H, W] float32: resized (bilinear), scaled to [0, 1], ImageNet-normalised with 3 channels."""
    from PIL import Image
    resized = image.convert("RGB" if channels == 3 else "L").resize((width, height), Image.BILINEAR)
    a = np.asarray(resized, dtype=np.float32) / 255.0
    if channels == 3:
        a = ((a - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)).transpose(2, 0, 1)
    else:
        a = a[None]
    return torch.from_numpy(np.ascontiguousarray(a))[None]
