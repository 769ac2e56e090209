"""The ``augment`` block's defaults and presets (one per reference transform)
and their resolution.  JAX-free: the config checks and the method families'
config sections read it without importing JAX (the transform itself is
:mod:`clj.data.augment`)."""
from __future__ import annotations

from clj.errors import ConfigError


# The augment block (clj.data.augment.Augment): its defaults (no augmentation but
# normalisation with the dataset's own statistics) and the presets, one per
# reference's transform; a preset sets the fields it names, the others keep
# their defaults (resolve_augment).
AUGMENT_DEFAULTS = dict(preset="", crop_pad=0, flip=False, normalize=True, resized_crop=0,
                        crop_scale=(0.08, 1.0), crop_ratio=(3.0 / 4.0, 4.0 / 3.0), brightness=0.0,
                        eval_resize=0, eval_crop=0, normalization="dataset")
AUGMENT_NORMALIZATIONS = ("dataset", "cifar100", "imagenet")  # clj.data.augment.NORMALIZATION_STATS (+ dataset)
AUGMENT_PRESETS = {
    # PyCIL utils/data.py iCIFAR100: RandomCrop(32, padding=4), flip, ColorJitter(brightness=63/255)
    "pycil_cifar": dict(crop_pad=4, flip=True, brightness=63.0 / 255.0, normalization="cifar100"),
    # Mammoth datasets/seq_cifar100.py: RandomCrop(32, padding=4), flip (no jitter)
    "mammoth_cifar": dict(crop_pad=4, flip=True, normalization="cifar100"),
    # PyCIL iImageNet100: RandomResizedCrop(224), flip; eval Resize(256), CenterCrop(224)
    "pycil_imagenet": dict(resized_crop=224, flip=True, eval_resize=256, eval_crop=224, normalization="imagenet"),
    # PyCIL iImageNet1000 (MEMO's ImageNet-1k): the same + ColorJitter(brightness=63/255)
    "memo_imagenet1k": dict(resized_crop=224, flip=True, brightness=63.0 / 255.0, eval_resize=256, eval_crop=224,
                            normalization="imagenet"),
}


def resolve_augment(cfg) -> dict:
    """Every field of an ``augment`` block, its ``preset`` applied: the
    defaults (:data:`AUGMENT_DEFAULTS`) overridden by the block's fields,
    then by the preset's (:data:`AUGMENT_PRESETS`).  JAX-free.

    Args:
      cfg: the ``config.augment`` block (a ConfigDict or dict; missing fields
        take their defaults).

    Returns:
      dict of every field of :data:`AUGMENT_DEFAULTS` (``crop_scale`` /
      ``crop_ratio`` as float tuples).

    Raises:
      ConfigError: an unknown preset, or a preset together with a field
        changed from its default to another value than the preset's (the
        message names both).
    """
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: d)
    out = {k: get(k, v) for k, v in AUGMENT_DEFAULTS.items()}
    preset = out["preset"]
    if preset:
        if preset not in AUGMENT_PRESETS:
            raise ConfigError(f"augment.preset={preset!r} is unknown; valid: '', {', '.join(AUGMENT_PRESETS)}.")
        fixed = {**AUGMENT_DEFAULTS, **AUGMENT_PRESETS[preset]}
        for k in AUGMENT_DEFAULTS:
            if k == "preset":
                continue
            v = tuple(out[k]) if isinstance(out[k], (list, tuple)) else out[k]
            if v != AUGMENT_DEFAULTS[k] and v != fixed[k]:
                raise ConfigError(f"augment.{k}={out[k]!r} is set together with augment.preset={preset!r}, which "
                                  f"fixes the whole transform (augment.{k}={fixed[k]!r}); leave augment.{k} at its "
                                  "default or set augment.preset=''.")
        out.update(AUGMENT_PRESETS[preset])
    out["crop_scale"] = tuple(float(v) for v in out["crop_scale"])
    out["crop_ratio"] = tuple(float(v) for v in out["crop_ratio"])
    return out


