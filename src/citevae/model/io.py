"""Safe model files: weights in safetensors, everything else in JSON; written atomically.

A model directory holds ``model.safetensors`` (module weights and the gene descriptor table) and
``model.json`` (format version, hyperparameters, data registry, descriptor genes). Loading never
unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from anndata import AnnData
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from citevae._atomic import atomic_directory
from citevae.data.descriptors import GeneDescriptors
from citevae.data.registry import DataRegistry
from citevae.errors import CiteVAEError, ModelFileError
from citevae.module.citevae import CiteVAEModule
from citevae.module.config import ModuleConfig
from citevae.train.plan import TrainingConfig
from citevae.train.staged import StagedConfig

if TYPE_CHECKING:
    from citevae.model.citevae import CiteVAE

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
DESCRIPTOR_KEY = "descriptors.values"


def save_model(model: CiteVAE, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` to directory ``path`` (complete or absent: written beside, then renamed)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ModelFileError(f"{path} exists; pass overwrite=True to replace it")
    d = model.descriptors
    metadata = {
        "format_version": FORMAT_VERSION,
        "module_config": model.config.to_dict(),
        "training_config": model.training_config.to_dict() if model.is_trained else None,
        "staged_config": model.staged_config.to_dict() if model.staged_config else None,
        "registry": model.registry.to_dict(),
        "descriptors": {"genes": list(d.genes), "block_sizes": list(d.block_sizes),
                        "block_names": list(d.block_names)},
        "is_trained": model.is_trained,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    tensors[DESCRIPTOR_KEY] = torch.from_numpy(np.ascontiguousarray(d.values))
    with atomic_directory(path, overwrite=overwrite) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return path


def load_model(cls: type[CiteVAE], path: str | Path, adata: AnnData | None = None) -> CiteVAE:
    """Rebuild a model from ``path``; refuses missing, corrupt, tampered or newer-format files."""
    path = Path(path)
    meta_path, weights_path = path / METADATA_FILE, path / WEIGHTS_FILE
    for file in (meta_path, weights_path):
        if not file.is_file():
            raise ModelFileError(f"{path} is not a citevae model directory: {file.name} is missing")
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{meta_path} is not readable JSON: {err}") from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{meta_path} has format version {version!r}; this citevae reads versions up to "
            f"{FORMAT_VERSION}; upgrade citevae to load it"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{weights_path} is truncated or not a safetensors file: {err}") from None
    try:
        config = ModuleConfig.from_dict(metadata["module_config"])
        registry = DataRegistry.from_dict(metadata["registry"])
        info = metadata["descriptors"]
        values = tensors.pop(DESCRIPTOR_KEY).numpy()
        descriptors = GeneDescriptors(tuple(info["genes"]), values, tuple(info["block_sizes"]),
                                      tuple(info["block_names"]))
        module = CiteVAEModule(config, tensors["embedding.descriptors"],
                               tensors["embedding.has_descriptor"])
        module.load_state_dict(tensors, strict=True)
        staged = metadata.get("staged_config")
        staged_config = StagedConfig.from_dict(staged) if staged else None
    except (KeyError, TypeError, RuntimeError, ValueError, CiteVAEError) as err:
        raise ModelFileError(f"{path} does not hold a consistent citevae model: {err}") from None
    model = cls.__new__(cls)
    model.registry, model.descriptors, model.module = registry, descriptors, module
    model.adata, model._encoded = adata, None  # train() encodes the cells when it needs them
    model.training_result = None
    model.staged_config = staged_config
    model.is_trained = bool(metadata.get("is_trained", False))
    training = metadata.get("training_config")
    model.training_config = TrainingConfig.from_dict(training) if training else TrainingConfig()
    module.eval()
    if adata is not None:
        registry.check_genes(adata)
    return model
