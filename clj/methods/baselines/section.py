"""The baselines' config blocks: ``config.replay`` (ER, DER, DER++, ER-ACE,
A-GEM, GEM, MIR, CoPE, GDumb, GSS, and SER over them), ``config.reg`` (EWC, SI,
MAS), ``config.lwf`` (LwF), ``config.online`` (MIR, CoPE), ``config.gdumb`` (GDumb),
``config.gss`` (GSS) and ``config.gem`` (GEM).  JAX-free."""
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


# ------------------------------------------------------------ MIR / CoPE
def _check_online(v, config) -> None:
    at_least("online", v, 1, "mir_subsample", "cope_dim", "cope_iters")
    positive("online", v, "cope_temperature")
    in_interval("online", v, "cope_momentum", "[0, 1]")
    for k in ("mir_compare_to_old_logits", "mir_exclude_current_task", "cope_renormalize"):
        need(v[k] in (True, False), f"online.{k}={v[k]!r} is invalid; valid: True, False.")
    kind = config.scenario.kind
    need(not v["mir_exclude_current_task"] or kind != "data_incremental",
         f"online.mir_exclude_current_task=True needs the task id of each example, which "
         f"scenario.kind={kind!r} hides; valid: False, or a class_il / task_il / domain_il scenario.")


ONLINE = Section(
    "online",
    dict(mir_subsample=50, mir_compare_to_old_logits=False, mir_exclude_current_task=False,
         cope_dim=100, cope_temperature=0.1, cope_momentum=0.99, cope_iters=1, cope_renormalize=False),
    dict(mir_subsample="MIR: candidates drawn from the buffer each step, scored by their loss increase "
                       "(official --subsample 50)",
         mir_compare_to_old_logits="MIR: score against the lowest loss each candidate has had "
                                   "(official --compare_to_old_logits, its Split-MNIST runs)",
         mir_exclude_current_task="MIR: draw candidates only from earlier tasks, none in task 0 (the official "
                                  "code; needs task ids, so not in a data-incremental stream)",
         cope_dim="CoPE: width of the L2-normalised embedding (official --n_outputs)",
         cope_temperature="CoPE: temperature T of the PPP loss (official --loss_T)",
         cope_momentum="CoPE: prototype momentum, p <- m p + (1 - m) batch mean (official --p_momentum)",
         cope_iters="CoPE: updates per incoming batch, each with a new replay draw (official --n_iter)",
         cope_renormalize="CoPE: L2-normalise each prototype after its momentum update (a line the official "
                          "code leaves commented out; off there)"),
    _check_online)


# ------------------------------------------------------------------ GDumb
GDUMB_SAMPLERS = ("balanced", "reservoir")
GDUMB_RETRAIN = ("last_task", "every_task")


def _check_gdumb(v, config) -> None:
    choices("gdumb", v, sampler=GDUMB_SAMPLERS, retrain=GDUMB_RETRAIN)
    at_least("gdumb", v, 0, "fitting_epochs", "fit_batch_size")
    positive("gdumb", v, "maxlr")
    at_least("gdumb", v, 0, "minlr")
    need(float(v["minlr"]) <= float(v["maxlr"]),
         f"gdumb.minlr={v['minlr']} is invalid: it must be <= gdumb.maxlr={v['maxlr']}.")
    need(v["cutmix"] in (True, False), f"gdumb.cutmix={v['cutmix']!r} is invalid; valid: True, False.")
    positive("gdumb", v, "cutmix_alpha")
    in_interval("gdumb", v, "cutmix_prob", "[0, 1]")
    epochs = config.train.get("epochs", 1) if "train" in config else 1
    need(int(epochs) == 1, f"train.epochs={epochs} is invalid for gdumb: the stream is only offered to the memory, "
                           "once (Mammoth forces 1); valid: 1 (gdumb.fitting_epochs sets the retraining's epochs).")


GDUMB = Section(
    "gdumb",
    dict(sampler="balanced", retrain="last_task", fitting_epochs=256, fit_batch_size=0, maxlr=0.05, minlr=0.0005,
         cutmix=True, cutmix_alpha=1.0, cutmix_prob=0.5),
    dict(sampler="memory fill: 'balanced' (the paper's greedy class-balanced sampler) or 'reservoir' (what "
                 "Mammoth's gdumb runs)",
         retrain="when the network is retrained from scratch on the memory: 'last_task' (Mammoth: after the "
                 "stream) or 'every_task' (the paper: before every evaluation)",
         fitting_epochs="epochs over the memory of each retraining (Mammoth: 256)",
         fit_batch_size="batch of the retraining (0 = train.batch_size, as Mammoth)",
         maxlr="retraining lr: epoch 0 at maxlr/10 (warm-up), then cosine warm restarts (T_0=1, T_mult=2) "
               "from maxlr",
         minlr="floor of the cosine warm restarts",
         cutmix="CutMix on the retraining batches (Mammoth: on, cutmix_alpha=1)",
         cutmix_alpha="Beta(alpha, alpha) of the CutMix area ratio",
         cutmix_prob="probability that a retraining batch is CutMixed (Mammoth: 0.5)"),
    _check_gdumb)


# -------------------------------------------------------------------- GSS
GSS_SCORING = ("batch", "example")


def _check_gss(v, config) -> None:
    at_least("gss", v, 0, "gss_minibatch_size")
    at_least("gss", v, 1, "batch_num")
    choices("gss", v, scoring=GSS_SCORING)


GSS = Section(
    "gss",
    dict(gss_minibatch_size=0, batch_num=1, scoring="batch"),
    dict(gss_minibatch_size="memory examples whose gradients score a candidate (0 = replay.minibatch_size, "
                            "as Mammoth)",
         batch_num="optimizer steps per stream batch, each with its own memory draw (Mammoth's batch_num)",
         scoring="'batch' (Mammoth: the stream batch's gradient score gates replacement and is stored while "
                 "the memory fills) or 'example' (the paper's GSS-greedy: each example's own score does both)"),
    _check_gss)


# -------------------------------------------------------------------- GEM
GEM_LOGIT_MASKS = ("none", "task")
GEM_MEMORIES = ("per_task", "class_balanced")


def _check_gem(v, config) -> None:
    at_least("gem", v, 0, "margin", "eps")
    at_least("gem", v, 0, "qp_iters")
    choices("gem", v, logit_mask=GEM_LOGIT_MASKS, memory=GEM_MEMORIES)


GEM = Section(
    "gem",
    dict(margin=0.5, eps=1e-3, logit_mask="none", qp_iters=0, memory="per_task"),
    dict(margin="gamma, lower bound of every dual variable (Mammoth / the GEM code: 0.5; the paper's QP: 0)",
         eps="added to the diagonal of the tasks' gradient Gram matrix (Mammoth: 1e-3; PyCIL: 0)",
         logit_mask="'none' (Mammoth: every loss over all classes) or 'task' (PyCIL's class-IL GEM: the "
                    "stream loss over the current task's classes, task k's memory loss over task k's)",
         qp_iters="outer iterations of the active-set dual solver (0 = 3 x num_tasks, enough to converge)",
         memory="'per_task' (the paper's fixed buffer_size // num_tasks slots per task) or 'class_balanced' "
                "(Mammoth's fill_buffer: buffer_size // seen_classes slots per seen class, the old classes "
                "cut to that share at every task's end)"),
    _check_gem)
