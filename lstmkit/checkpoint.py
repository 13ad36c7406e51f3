"""Saving and loading models: one safetensors file of arrays with JSON metadata. Never pickle.

File layout (format version 1): tensors "weights/<layer>/<param>" and, with the training state,
"optimizer/<slot>/<layer>/<param>"; the safetensors header's metadata holds one JSON document
under "lstmkit":

    {"format": "lstmkit", "format_version": 1,
     "architecture": {"class_name": "Sequential", "name", "seed", "input_shape",
                      "layers": [{"class_name": "LSTM", "config": {...}}, ...]},
     "weights": ["lstm/kernel", ...], "extra": {...} or null,
     "compile": {"optimizer", "loss", "metrics"},                        if compiled
     "training": {"epoch", "rng", "optimizer": {"iterations"}},          if include_optimizer
     "checksum": sha256 of everything above and of every tensor}

`path` is a file, or a directory that gets "model.safetensors". Writes are atomic (a temporary
file in the same directory, then os.replace), and an existing file that is not an lstmkit model
is never overwritten. Loading reads JSON only, rebuilds layers from the known layer classes,
and checks the format version, checksum, parameter names, shapes and dtypes; anything amiss is a
ValueError saying what.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "lstmkit"
FORMAT_VERSION = 1
DEFAULT_FILENAME = "model.safetensors"


def model_file(path):
    """The file a path names: path itself, or path/model.safetensors for a directory."""
    p = Path(path)
    return p / DEFAULT_FILENAME if p.is_dir() else p


def save_model(model, path, extra=None, include_optimizer=True):
    """Write model (built) to path; extra is any JSON-able dict (vocabulary, scaler...).
    include_optimizer adds the training state (optimizer moments and step, the random generator's
    state, the epoch) so that training resumes exactly where it stopped."""
    from . import losses
    model._require_built()
    file = model_file(path)
    tensors = {f"weights/{k}": np.ascontiguousarray(v) for k, v in model.trainable_params().items()}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "architecture": {
            "class_name": "Sequential", "name": model.name, "seed": model.seed,
            "input_shape": list(model.input_shape[1:]),
            "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in model.layers],
        },
        "weights": list(model.trainable_params()),
        "extra": extra,
    }
    if model.optimizer is not None and model.loss is not None:
        meta["compile"] = {"optimizer": model.optimizer.get_config(), "loss": losses.serialize(model.loss),
                           "metrics": [m if isinstance(m, str) else m.name for m in model.metrics]}
        if include_optimizer:
            arrays, state = model.optimizer.get_state()
            tensors.update({f"optimizer/{k}": np.ascontiguousarray(v) for k, v in arrays.items()})
            meta["training"] = {"epoch": model.epoch, "rng": model.rng.bit_generator.state, "optimizer": state}
    try:
        meta["checksum"] = _checksum(meta, tensors)
        text = json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot save: the metadata must be JSON (numbers, strings, lists, dicts): {err}") from None
    if file.exists() and not _is_lstmkit_file(file):
        raise ValueError(f"{file} exists and is not an lstmkit model; refusing to overwrite it")
    from safetensors.numpy import save
    _atomic_write(file, save(tensors, metadata={FORMAT: text}))
    return file


def load_model(path, compile=True):
    """Read a model written by save_model: returns (model, extra). The model is compiled (and
    carries its training state, model.epoch included) if it was saved compiled."""
    from . import losses, optim
    file = model_file(path)
    if not file.is_file():
        raise ValueError(f"no lstmkit model at {path}: the file does not exist")
    data = file.read_bytes()
    meta = _read_metadata(data, file)
    from safetensors.numpy import load
    try:
        tensors = load(data)
    except Exception as err:   # safetensors raises its own error types for malformed files
        raise ValueError(f"{file} is corrupted: its arrays cannot be read ({err})") from None
    if meta.get("checksum") != _checksum({k: v for k, v in meta.items() if k != "checksum"}, tensors):
        raise ValueError(f"{file} is corrupted: its checksum does not match its contents")

    model = _build(meta, file)
    _restore_weights(model, tensors, meta, file)
    if compile and "compile" in meta:
        c = meta["compile"]
        try:
            model.compile(optim.get(c["optimizer"]), losses.get(c["loss"]), c.get("metrics"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{file} has an invalid compile configuration: {err}") from None
        if "training" in meta:
            _restore_training(model, tensors, meta["training"], file)
    model.extra = meta.get("extra")
    return model, model.extra


def load(path):
    """The model saved at path (use load_model for its extra metadata too)."""
    return load_model(path)[0]


# ----------------------------------------------------------------------------- internals

def _checksum(meta, tensors):
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _atomic_write(file, data):
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _header(data, file):
    """The safetensors JSON header of data, checking that the file is complete."""
    if len(data) < 8:
        raise ValueError(f"{file} is empty or truncated ({len(data)} bytes): not an lstmkit model")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"{file} is truncated or not a safetensors file: its header claims {n} bytes "
                         f"but the file has {len(data) - 8}")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{file} is corrupted or not a safetensors file: unreadable header") from None
    if not isinstance(header, dict):
        raise ValueError(f"{file} is corrupted: its header is not a JSON object")
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if max(ends, default=0) != len(data) - 8 - n:
        raise ValueError(f"{file} is truncated or corrupted: the arrays should take "
                         f"{max(ends, default=0)} bytes, the file holds {len(data) - 8 - n}")
    return header


def _read_metadata(data, file):
    header = _header(data, file)
    text = (header.get("__metadata__") or {}).get(FORMAT)
    if text is None:
        raise ValueError(f"{file} is a safetensors file but not an lstmkit model (no lstmkit metadata)")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{file} is corrupted: its lstmkit metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{file} is not an lstmkit model (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ValueError(f"{file} has format version {version!r}; this lstmkit reads version {FORMAT_VERSION}"
                         + (" (it was written by a newer lstmkit: upgrade)" if newer else ""))
    return meta


def _is_lstmkit_file(file):
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n < 100_000_000:
                return False
            header = json.loads(f.read(n))
        return FORMAT in (header.get("__metadata__") or {})
    except (OSError, ValueError, AttributeError):
        return False


def _build(meta, file):
    from .layers import LAYERS
    from .model import Sequential
    arch = meta.get("architecture")
    if not isinstance(arch, dict) or arch.get("class_name") != "Sequential" or not isinstance(arch.get("layers"), list):
        raise ValueError(f"{file} has no valid architecture (expected a Sequential with a list of layers)")
    layers = []
    for k, spec in enumerate(arch["layers"]):
        name = spec.get("class_name") if isinstance(spec, dict) else None
        if name not in LAYERS:
            raise ValueError(f"{file}: layer {k} has unknown class {name!r}; known layers: {', '.join(sorted(LAYERS))}")
        config = spec.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"{file}: layer {k} ({name}) has an invalid config")
        try:
            cls = LAYERS[name]
            layers.append(cls.from_config(config) if hasattr(cls, "from_config") else cls(**config))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{file}: layer {k} ({name}) cannot be rebuilt from its config: {err}") from None
    seed = arch.get("seed")
    model = Sequential(layers, seed=seed if isinstance(seed, int) else None, name=str(arch.get("name", "sequential")))
    shape = arch.get("input_shape")
    if not isinstance(shape, list) or not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
        raise ValueError(f"{file} has an invalid input_shape {shape!r}")
    model.build(tuple(shape))
    return model


def _restore_weights(model, tensors, meta, file):
    params = model.trainable_params()
    saved = {k[len("weights/"):]: v for k, v in tensors.items() if k.startswith("weights/")}
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(f"{file} does not match its architecture: missing weights {missing}, "
                         f"unexpected weights {unexpected}")
    for name, p in params.items():
        a = saved[name]
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError(f"{file}: weight {name} is {a.dtype}{list(a.shape)} but the layer "
                             f"needs {p.dtype}{list(p.shape)}")
    for name, p in params.items():
        p[...] = saved[name]


def _restore_training(model, tensors, training, file):
    params = model.trainable_params()
    arrays = {k[len("optimizer/"):]: v for k, v in tensors.items() if k.startswith("optimizer/")}
    for name, a in arrays.items():
        key = name.partition("/")[2]
        if key not in params or params[key].shape != a.shape or params[key].dtype != a.dtype:
            raise ValueError(f"{file}: optimizer state {name} does not match any weight of the model")
    try:
        model.optimizer.set_state(arrays, training["optimizer"])
        model.epoch = int(training["epoch"])
        rng = training["rng"]
        if rng.get("bit_generator") != type(model.rng.bit_generator).__name__:
            raise ValueError(f"random generator {rng.get('bit_generator')!r} is not "
                             f"{type(model.rng.bit_generator).__name__}")
        model.rng.bit_generator.state = rng
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"{file} has an invalid training state: {err}") from None
