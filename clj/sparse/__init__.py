"""The shared sparse piece: masks, the one masked update, random regrowth
(see :mod:`clj.sparse.masks`)."""
from clj.sparse.masks import (
    apply_masks,
    check_density,
    count_for,
    default_maskable,
    density,
    erk_densities,
    init_masks,
    layer_densities,
    masked_optimizer,
    masks_nbytes,
    pack_mask,
    path_name,
    random_mask,
    random_regrow_count,
    trainable_mask,
    unpack_mask,
)

__all__ = [n for n in dir() if not n.startswith("_")]
