"""SERENA's config plumbing: the ``config.serena`` section (defaults and
checks live in the JAX-free :mod:`clj.methods.serena.section`), the protocol knobs
resolved, the static :class:`Static` of a run (with its optimizer), the
backbone and the loop hooks that depend on the config.

Source: ``docs/serena.md``, "Official defaults" and "Protocols".
"""
from __future__ import annotations

import dataclasses

import ml_collections
import optax

from clj.methods import sections
from clj.methods.serena import section as serena_section
from clj.models.common import compute_dtype
from clj.models.registry import get_family_model
from clj.sparse import layer_densities, masked_optimizer

# The valid values, defaults and checks of config.serena live in the JAX-free clj.methods.serena.section.
PROTOCOLS = serena_section.SERENA_PROTOCOLS
FREEZE_MODES = serena_section.SERENA_FREEZE_MODES
MASK_DRAWS = serena_section.SERENA_MASK_DRAWS
DETECTORS = serena_section.SERENA_DETECTORS
VOTES = serena_section.SERENA_VOTES
NEW_CELL_INITS = serena_section.SERENA_NEW_CELL_INITS
OPTIMS = serena_section.SERENA_OPTIMS
ROUTE_SPACES = serena_section.SERENA_ROUTE_SPACES  # class-mean rule -> "pixels" | "union" | "cell0"


PROTOCOL_DEFAULTS = serena_section.SERENA_PROTOCOL_DEFAULTS  # protocol -> the value every "" knob takes


def default_config() -> ml_collections.ConfigDict:
    """The ``config.serena`` block with the official code's defaults
    (``docs/serena.md``, "Official defaults").

    ``""`` / negative values mean "the protocol's choice" (``PROTOCOL_DEFAULTS``).
    """
    return ml_collections.ConfigDict(serena_section.SERENA.defaults)


def resolved(config) -> dict:
    """The effective protocol knobs of a config (protocol defaults filled in).

    Raises:
      ConfigError: an unknown protocol or knob value, or an ``official``
        protocol with a knob set to something else than the official value
        (:func:`clj.methods.serena.section.serena_resolved`).
    """
    return serena_section.serena_resolved(sections.merged(serena_section.SERENA, config))


@dataclasses.dataclass(frozen=True)
class Static:
    """Static (hashable) settings; see :func:`default_config` and the module doc."""

    protocol: str
    freeze: str
    mask_draw: str
    detector: str
    vote: str
    new_cell_init: str
    density: float
    densities: tuple[tuple[str, float], ...]
    window: int
    threshold: float
    ema_decay: float
    min_window_mean: float
    max_cells: int
    optim: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    eval_cell_batch: int
    image_shape: tuple[int, ...]
    class_means: tuple[str, ...] = ()  # spaces whose class means train_step keeps (subset of ROUTE_SPACES values)

    def tx(self) -> optax.GradientTransformationExtraArgs:
        """PyTorch's SGD (coupled weight decay, Nesterov momentum) or Adam, as
        an optax chain (``docs/serena.md``, "Freezing and the optimizer"),
        through the masked update (its masks are passed by
        :func:`masked_step`)."""
        parts = []
        if self.weight_decay > 0:
            parts.append(optax.add_decayed_weights(self.weight_decay))
        if self.optim == "sgd":
            if self.momentum > 0:
                parts.append(optax.trace(decay=self.momentum, nesterov=self.nesterov))
        else:
            parts.append(optax.scale_by_adam())
        parts.append(optax.scale(-self.lr))
        return masked_optimizer(optax.chain(*parts))


def static_from_config(config, scenario, params) -> Static:
    """The static settings of a run: ``config.serena`` resolved for its
    protocol, ERK densities of ``params``, the optimizer of ``config.optim``."""
    s = sections.block(config, serena_section.SERENA)
    r = resolved(config)
    dens = layer_densities(params, float(s.density), "erk")
    max_cells = int(s.max_cells) or scenario.num_tasks + 8
    return Static(protocol=s.protocol, freeze=r["freeze"], mask_draw=r["mask_draw"], detector=r["detector"],
                  vote=r["vote"], new_cell_init=r["new_cell_init"], density=float(s.density),
                  densities=tuple(sorted((k, float(v)) for k, v in dens.items())), window=int(s.window),
                  threshold=float(s.threshold), ema_decay=float(s.ema_decay),
                  min_window_mean=float(r["min_window_mean"]), max_cells=max_cells,
                  optim=config.optim.name, lr=float(config.optim.lr),
                  momentum=float(config.optim.get("momentum", 0.0)), nesterov=bool(s.nesterov),
                  weight_decay=float(config.optim.get("weight_decay", 0.0)),
                  eval_cell_batch=int(s.eval_cell_batch), image_shape=tuple(scenario.image_shape),
                  class_means=class_mean_spaces(r["vote"], str(s.get("route_stats", ""))))


def class_mean_spaces(vote: str, route_stats: str) -> tuple[str, ...]:
    """The spaces whose running class means ``train_step`` keeps: every one
    (``route_stats='all'``), else the one the vote reads (none for the
    other rules).  Order: pixels, union, cell0."""
    if route_stats == "all":
        return tuple(dict.fromkeys(ROUTE_SPACES.values()))
    return (ROUTE_SPACES[vote],) if vote in ROUTE_SPACES else ()


def model_from_config(config, num_classes: int):
    """The backbone of ``config.model`` (:mod:`clj.models.serena_nets`)."""
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.items() if k != "name"}
    kw["dtype"] = compute_dtype(config.model)
    return get_family_model(config.model.name, num_classes, "serena", **kw)


def capabilities(config):
    """SERENA's capabilities for ``config``: the official protocol sees task
    boundaries (its statistic resets per task, ``docs/serena.md``, "The drift
    detector") and evaluates with the true task id; the task-free protocol
    sees neither."""
    from clj.methods.api import Capabilities

    off = sections.block(config, serena_section.SERENA).protocol == "official"
    # predict(valid=) keeps padding rows out of the stateless BN statistics.
    return Capabilities(task_id_at_test=off, task_id_class_il=off, sees_boundaries=off, predict_uses_valid=True)
