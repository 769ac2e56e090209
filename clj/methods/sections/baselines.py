"""The blocks of the baselines: ``config.replay`` (ER, DER, DER++, ER-ACE,
A-GEM, SER) and ``config.reg`` (EWC, SI, MAS).  JAX-free."""
from __future__ import annotations

from clj.methods.sections.base import Section, at_least, choices, in_interval, need, positive


# ------------------------------------------------------------------ replay
def _check_replay(v, config) -> None:
    at_least("replay", v, 1, "buffer_size", "minibatch_size")
    at_least("replay", v, 0, "alpha", "beta")


REPLAY = Section(
    "replay",
    dict(buffer_size=200, minibatch_size=32, alpha=0.3, beta=0.5),
    dict(buffer_size="examples the reservoir buffer holds (all tasks together)",
         minibatch_size="replayed examples drawn from the buffer per step",
         alpha="DER/DER++ weight of the logit-matching (MSE) term on replayed examples",
         beta="DER++ weight of the cross-entropy term on replayed examples"),
    _check_replay)


# ------------------------------------------------------ EWC / SI / MAS
REG_EWC_MODES = ("per_task", "online")
REG_MAS_SCALES = ("mean", "sum")


def _check_reg(v, config) -> None:
    at_least("reg", v, 0, "lam")
    at_least("reg", v, 1, "n_fisher")
    positive("reg", v, "xi")
    at_least("reg", v, 1, "chunk")
    need(v["multi_head"] in (None, True, False),
         f"reg.multi_head={v['multi_head']!r} is invalid; valid: True, False, None (task-IL scenarios).")
    choices("reg", v, ewc_mode=REG_EWC_MODES, mas_scale=REG_MAS_SCALES)
    in_interval("reg", v, "val_fraction", "[0, 1)")
    at_least("reg", v, 0, "patience")
    need(int(v["patience"]) == 0 or float(v["val_fraction"]) > 0,
         f"reg.patience={v['patience']} needs a hold-out: set reg.val_fraction > 0.")
    need(int(v["importance_samples"]) >= 0 and int(v["importance_batch"]) >= 0,
         f"reg.importance_samples={v['importance_samples']} / reg.importance_batch={v['importance_batch']} are "
         "invalid: they must be >= 0.")


REG = Section(
    "reg",
    dict(lam=1.0, n_fisher=1000, xi=0.1, multi_head=None, chunk=64, ewc_mode="per_task", mas_scale="mean",
         si_clip=False, val_fraction=0.0, patience=0, importance_samples=0, importance_batch=0),
    dict(lam="lambda, weight of the quadratic penalty",
         n_fisher="training examples the EWC Fisher / MAS importance averages over",
         xi="SI damping added to the squared parameter change",
         multi_head="train with a head per task (None = when scenario.kind is task_il)",
         chunk="examples per vectorised per-example-gradient call",
         ewc_mode="'per_task' (a Fisher and anchor per task, as GT-RIPL) or 'online' (one summed Fisher, one anchor)",
         mas_scale="MAS importance: 'mean' over examples and outputs (GT-RIPL) or 'sum' over outputs",
         si_clip="clip negative SI path integrals at 0",
         val_fraction="fraction of each task held out for early stopping (0 = none)",
         patience="epochs without hold-out improvement before a task stops (0 = no early stopping)",
         importance_samples="examples the importance is computed on (0 = the method's default)",
         importance_batch="batch of the importance pass (0 = the method's default)"),
    _check_reg)
