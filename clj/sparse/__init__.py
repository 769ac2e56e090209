"""The shared sparse piece: masks, the masked update, prune/regrow
(see :mod:`clj.sparse.masks`)."""
from clj.sparse.masks import (
    RewireResult,
    apply_masks,
    check_density,
    cosine_drop_fraction,
    count_for,
    default_maskable,
    density,
    erk_densities,
    gradient_regrow,
    init_masks,
    init_ownership,
    layer_densities,
    magnitude_prune,
    mask_updates,
    masked_updates,
    maskable_names,
    masks_nbytes,
    pack_mask,
    path_name,
    prune_and_regrow,
    random_mask,
    random_regrow,
    random_regrow_count,
    reset_moments,
    trainable_mask,
    unpack_mask,
    update_ownership,
)

__all__ = [n for n in dir() if not n.startswith("_")]
