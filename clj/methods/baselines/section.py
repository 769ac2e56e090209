"""The baselines' config blocks: ``config.replay`` (ER, DER, DER++, ER-ACE,
A-GEM, GEM, and SER over them), ``config.reg`` (EWC, SI, MAS), ``config.lwf``
(LwF) and ``config.gem`` (GEM).  JAX-free."""
from __future__ import annotations

from clj.errors import ConfigError
from clj.methods.sections import Section, at_least, choices, in_interval, need, positive


# ------------------------------------------------------------------ replay
def _check_replay(v, config) -> None:
    at_least("replay", v, 1, "buffer_size", "minibatch_size")
    at_least("replay", v, 0, "alpha", "beta")


def _check_replay_with_data(v, config, scenario) -> None:
    n = int(scenario.x_train.shape[0])
    need(int(v["buffer_size"]) <= n,
         f"replay.buffer_size={v['buffer_size']} is larger than the {n} training examples of "
         f"{scenario.dataset_name}; valid: 1..{n}.")


REPLAY = Section(
    "replay",
    dict(buffer_size=200, minibatch_size=32, alpha=0.3, beta=0.5),
    dict(buffer_size="examples the reservoir buffer holds (all tasks together)",
         minibatch_size="replayed examples drawn from the buffer per step",
         alpha="DER/DER++ weight of the logit-matching (MSE) term on replayed examples",
         beta="DER++ weight of the cross-entropy term on replayed examples"),
    _check_replay, _check_replay_with_data)


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


# -------------------------------------------------------------------- LwF
LWF_KINDS = ("class_il", "task_il")


def _check_lwf(v, config) -> None:
    if not float(v["alpha"]) >= 0:
        raise ConfigError(f"lwf.alpha={v['alpha']} is invalid: it must be >= 0.")
    if not float(v["softmax_temp"]) > 0:
        raise ConfigError(f"lwf.softmax_temp={v['softmax_temp']} is invalid: the temperature must be > 0.")
    if v["warmup"] not in (True, False):
        raise ConfigError(f"lwf.warmup={v['warmup']!r} is invalid; valid: True, False.")
    kind = config.scenario.kind
    if kind not in LWF_KINDS:
        raise ConfigError(f"scenario.kind={kind!r} is not supported by lwf (distillation on the old classes); "
                          f"valid: {', '.join(LWF_KINDS)}.")


LWF = Section(
    "lwf",
    dict(alpha=1.0, softmax_temp=2.0, warmup=True),
    dict(alpha="lambda_o, weight of the distillation term on the old classes (paper: 1)",
         softmax_temp="T, temperature of the distillation softmaxes (paper: 2)",
         warmup="train the new classes' head outputs alone for train.epochs epochs before each task >= 1"),
    _check_lwf)


# -------------------------------------------------------------------- GEM
GEM_LOGIT_MASKS = ("none", "task")


def _check_gem(v, config) -> None:
    at_least("gem", v, 0, "margin", "eps")
    at_least("gem", v, 0, "qp_iters")
    choices("gem", v, logit_mask=GEM_LOGIT_MASKS)


GEM = Section(
    "gem",
    dict(margin=0.5, eps=1e-3, logit_mask="none", qp_iters=0),
    dict(margin="gamma, lower bound of every dual variable (Mammoth / the GEM code: 0.5; the paper's QP: 0)",
         eps="added to the diagonal of the tasks' gradient Gram matrix (Mammoth: 1e-3; PyCIL: 0)",
         logit_mask="'none' (Mammoth: every loss over all classes) or 'task' (PyCIL's class-IL GEM: the "
                    "stream loss over the current task's classes, task k's memory loss over task k's)",
         qp_iters="outer iterations of the active-set dual solver (0 = 3 x num_tasks, enough to converge)"),
    _check_gem)
