"""`embed --runtime onnx` / `onnx-int8`: the image and text towers run with ONNX Runtime's CPU provider.

Each tower is exported to ONNX once per checkpoint (torch's TorchScript exporter, batch and token axes
dynamic) into `onnx_home()/<key>/`, where the key hashes the checkpoint (its hub commit, a local
folder's file digest, or for a built-in model its weights) with the torch and transformers versions
that traced it. `onnx-int8` adds onnxruntime's dynamic quantisation of those files (int8 weights,
activations quantised per batch). A later run with the same key loads the files instead of exporting.

The hook is `attach`: it puts an `OnnxDualEncoder` where `backbone.model` was, with the two methods
`tagcons.embed.features` calls, so the image and text passes do not know which runtime runs. The
runtime is part of the cache fingerprint (`runtime_settings`): its features differ from torch's in
the last digits (fp32) or more (int8), so a cache never mixes runtimes.

This module imports only the standard library at load time (torch and onnxruntime inside functions).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from tagcons.errors import BadInputError, first_line

if TYPE_CHECKING:
    from tagcons.embed.backbones import Backbone

log = logging.getLogger(__name__)

TORCH = "torch"
RUNTIMES = (TORCH, "onnx", "onnx-int8")
INSTALL_HINT = "pip install tagcons[onnx]"
NEEDED_MODULES = ("onnxruntime", "onnx")
EXPORT_FORMAT = 1  # bump when the exported graphs change, so old exports are not reused
OPSET = 17
HOME_ENV = "TAGCONS_ONNX_HOME"
TOWERS = ("image", "text")
# fp32 ONNX agrees with torch eager to this cosine distance per row (tests/test_onnx_runtime.py, docs/onnx.md).
FP32_COSINE_TOLERANCE = 1e-4


def is_onnx(runtime: str) -> bool:
    return runtime != TORCH


def runtime_settings(runtime: str) -> dict:
    """The cache settings the runtime adds: none for torch (older caches keep their fingerprint)."""
    return {} if runtime == TORCH else {"runtime": runtime}


def check_runtime(runtime: str, device: str, dtype: str, compile_model: bool) -> None:
    """Refuse, before any work, a runtime tagcons does not have or cannot run here."""
    if runtime not in RUNTIMES:
        raise BadInputError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
    if not is_onnx(runtime):
        return
    missing = [name for name in NEEDED_MODULES if not _importable(name)]
    if missing:
        raise BadInputError(f"--runtime {runtime} needs {' and '.join(missing)}, not installed: {INSTALL_HINT}")
    if device not in ("auto", "cpu"):
        raise BadInputError(f"--runtime {runtime} runs on the CPU: drop --device {device} or use --runtime torch")
    if dtype not in ("auto", "fp32"):
        raise BadInputError(f"--runtime {runtime} computes in float32 (int8 weights for onnx-int8): drop --dtype")
    if compile_model:
        raise BadInputError("--compile is for --runtime torch; an ONNX Runtime session is already optimised")


def device_name(runtime: str, device: str) -> str:
    """The torch device the model is loaded on: the CPU for the ONNX runtimes (ONNX Runtime's provider)."""
    return "cpu" if is_onnx(runtime) else device


def _importable(name: str) -> bool:
    """Installed, found without importing it (a no-op rerun stays light)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def attach(backbone: Backbone, runtime: str) -> None:
    """Replace `backbone.model` by the ONNX towers of the runtime (exported first if not yet); torch: nothing."""
    if not is_onnx(runtime):
        return
    files = ensure_exported(backbone, runtime)
    backbone.model = OnnxDualEncoder(files, backbone.model.config)


# --- where the exports live -----------------------------------------------------------------------------


def onnx_home() -> Path:
    """$TAGCONS_ONNX_HOME, else `tagcons/onnx` in the Hugging Face cache folder (HF_HOME)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "tagcons" / "onnx"


def export_dir(backbone: Backbone) -> Path:
    return onnx_home() / checkpoint_key(backbone)


def checkpoint_key(backbone: Backbone) -> str:
    """Hash of what the exported graphs depend on: the checkpoint's content and the tracing code's versions."""
    import torch
    import transformers

    material = {
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "model_id": backbone.model_id,
        "checkpoint": _checkpoint_hash(backbone),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "text_inputs": sorted(backbone.tokenize(["a"])),
    }
    blob = json.dumps(material, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def _checkpoint_hash(backbone: Backbone) -> str:
    """The revision where it names content (a hub commit, a local folder's sha256), else the weights' hash."""
    revision = backbone.revision or ""
    if revision.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return "weights:" + weights_hash(backbone.model)


def weights_hash(model) -> str:
    """sha256 of the config and every parameter and buffer, in name order."""
    import torch

    digest = hashlib.sha256(model.config.to_json_string().encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


# --- export ---------------------------------------------------------------------------------------------


def tower_files(directory: Path, runtime: str) -> dict[str, Path]:
    suffix = ".int8.onnx" if runtime == "onnx-int8" else ".onnx"
    return {tower: directory / f"{tower}{suffix}" for tower in TOWERS}


def ensure_exported(backbone: Backbone, runtime: str) -> dict[str, Path]:
    """{tower: file} for the runtime, exporting (and quantising) only the files not there yet."""
    directory = export_dir(backbone)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(
            f"cannot keep the ONNX export in {directory} ({type(e).__name__}: {e}); set {HOME_ENV} to a writable folder"
        ) from e
    fp32 = tower_files(directory, "onnx")
    wanted = tower_files(directory, runtime)
    if all(path.is_file() for path in wanted.values()):
        log.info("ONNX towers of %s loaded from %s", backbone.model_id, directory)
        return wanted
    for tower, path in fp32.items():
        if not path.is_file():
            _atomic(path, lambda tmp, tower=tower: export_tower(backbone, tower, tmp))
    if runtime == "onnx-int8":
        for tower, path in wanted.items():
            if not path.is_file():
                _atomic(path, lambda tmp, tower=tower: quantise(fp32[tower], tmp))
    _write_manifest(directory, backbone)
    log.info("ONNX towers of %s exported to %s", backbone.model_id, directory)
    return wanted


def _atomic(path: Path, write) -> None:
    """Write to a temporary name beside `path`, then rename: a killed export leaves no half file to load."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_manifest(directory: Path, backbone: Backbone) -> None:
    facts = {"model_id": backbone.model_id, "revision": backbone.revision, "format": EXPORT_FORMAT, "opset": OPSET}
    (directory / "manifest.json").write_text(json.dumps(facts, indent=2))


def export_tower(backbone: Backbone, tower: str, path: Path) -> None:
    """One tower to an ONNX file (TorchScript exporter: works offline, needs no onnxscript)."""
    import torch

    module, inputs = _image_tower(backbone) if tower == "image" else _text_tower(backbone)
    names = list(inputs)
    axes = {name: ({0: "batch"} if name == "pixel_values" else {0: "batch", 1: "tokens"}) for name in names}
    # The tracer warns about Python conditions it freezes (image size checks, the causal-mask branch, whose
    # inputs are fixed for a checkpoint) and about the deprecated exporter: not the user's concern.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=names,
            output_names=["features"],
            dynamic_axes={**axes, "features": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _image_tower(backbone: Backbone):
    import torch

    from tagcons.embed.features import image_features

    class ImageTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return image_features(self.model, pixel_values)

    size = backbone.model.config.vision_config.image_size
    parameter = next(backbone.model.parameters())
    pixels = torch.zeros(2, 3, size, size, device=parameter.device, dtype=parameter.dtype)
    return ImageTower(backbone.model).eval(), {"pixel_values": pixels}


def _text_tower(backbone: Backbone):
    import torch

    from tagcons.embed.features import text_features

    class TextTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask=None):
            return text_features(self.model, input_ids, attention_mask)

    # Two texts of different lengths: the traced graph keeps the padding path (a mask with zeros).
    tokens = backbone.tokenize(["a", "a longer text than the first one"])
    device = next(backbone.model.parameters()).device
    return TextTower(backbone.model).eval(), {name: tensor.to(device) for name, tensor in tokens.items()}


def quantise(source: Path, path: Path) -> None:
    """onnxruntime's dynamic quantisation: int8 weights, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropAdvice()  # its shape-inference pre-pass fails on these graphs ("incomplete"): not offered
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(advice)


class _DropAdvice(logging.Filter):
    """Drops onnxruntime's root-logger advice to run its quantisation pre-processing first."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


# --- running --------------------------------------------------------------------------------------------


class OnnxDualEncoder:
    """The two feature methods of a transformers dual encoder, run by ONNX Runtime sessions on the CPU.

    `config` is the torch model's, so the backbone's feature width, token limit and family stay as they were.
    """

    def __init__(self, files: dict[str, Path], config, threads: int | None = None):
        self.config = config
        self.files = files
        self.sessions = {tower: _session(path, threads) for tower, path in files.items()}
        self.text_inputs = [i.name for i in self.sessions["text"].get_inputs()]

    def get_image_features(self, pixel_values):
        return self._run("image", {"pixel_values": _numpy(pixel_values, "float32")})

    def get_text_features(self, input_ids, attention_mask=None):
        feed = {"input_ids": _numpy(input_ids, "int64")}
        if "attention_mask" in self.text_inputs:
            mask = attention_mask if attention_mask is not None else _ones_like(input_ids)
            feed["attention_mask"] = _numpy(mask, "int64")
        return self._run("text", feed)

    def _run(self, tower: str, feed: dict):
        import torch

        return torch.from_numpy(self.sessions[tower].run(["features"], feed)[0])


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else _torch_threads()
    options.log_severity_level = 3  # errors only: the exporter's graphs make the optimiser chatty
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except _load_errors() as e:
        raise BadInputError(
            f"{path}: not a loadable ONNX file ({first_line(e)}); delete {path.parent} and rerun to export it again"
        ) from e


def _load_errors() -> tuple[type[Exception], ...]:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

    return Fail, InvalidGraph, InvalidProtobuf


def _torch_threads() -> int:
    """The same intra-op thread count torch eager would use, so the runtimes compete on equal terms."""
    import torch

    return torch.get_num_threads()


def _numpy(tensor, dtype: str):
    return tensor.detach().cpu().numpy().astype(dtype, copy=False)


def _ones_like(tensor):
    import torch

    return torch.ones_like(tensor)
