"""Each method's config section: its defaults, the meaning of each field and
its checks, in one place that imports neither JAX nor Flax.

:func:`clj.config.validate` calls :func:`check` before any work (and before
JAX is imported when the config file itself does not import it); the method
modules read their sections through the same functions (``get_section``), so
a value is checked by exactly one piece of code.

A :class:`Section` is one ``config.<name>`` block.  ``METHOD_SECTIONS`` says
which blocks a method reads; ``METHOD_CHECKS`` adds checks across blocks
(e.g. NISPA needs Adam).  A method not declared here falls back to its
module's optional ``validate_config(config)`` hook (which may import JAX).

Raises (every function here): :class:`clj.errors.ConfigError` naming the
field, the value and what is valid.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from clj.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Section:
    """One ``config.<name>`` block.

    Attributes:
      name: the block's key in the config (``"nispa"``).
      defaults: field -> default value (a missing field takes it).
      docs: field -> one-line meaning (``--describe`` prints it).
      check: ``check(values: dict, config) -> None``; ``values`` is the block
        merged over ``defaults``.
    """

    name: str
    defaults: dict
    docs: dict
    check: Callable[[dict, object], None]


def _choice(section: str, key: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{section}.{key}={value!r} is unknown; valid: {', '.join(map(str, valid))}.")


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def merged(section: Section, config) -> dict:
    """``config.<section>`` over the section's defaults, as a plain dict.

    Raises:
      ConfigError: a field the section does not have (naming the valid ones).
    """
    values = dict(section.defaults)
    block = config.get(section.name, None) if hasattr(config, "get") else None
    if block is not None:
        given = block.to_dict() if hasattr(block, "to_dict") else dict(block)
        unknown = sorted(set(given) - set(section.defaults))
        if unknown:
            raise ConfigError(f"{section.name}.{unknown[0]} is not a field; valid fields: "
                              f"{', '.join(sorted(section.defaults))}.")
        values.update(given)
    return values


def get_section(name: str, config) -> dict:
    """The checked values of block ``name`` (defaults filled in)."""
    s = SECTIONS[name]
    values = merged(s, config)
    s.check(values, config)
    return values


# ------------------------------------------------------------------ replay
def _check_replay(v, config) -> None:
    _need(int(v["buffer_size"]) >= 1, f"replay.buffer_size={v['buffer_size']} is invalid: it must be >= 1.")
    _need(int(v["minibatch_size"]) >= 1,
          f"replay.minibatch_size={v['minibatch_size']} is invalid: it must be >= 1.")
    _need(float(v["alpha"]) >= 0, f"replay.alpha={v['alpha']} is invalid: it must be >= 0.")
    _need(float(v["beta"]) >= 0, f"replay.beta={v['beta']} is invalid: it must be >= 0.")


REPLAY = Section(
    "replay",
    dict(buffer_size=200, minibatch_size=32, alpha=0.3, beta=0.5),
    dict(buffer_size="examples the reservoir buffer holds (all tasks together)",
         minibatch_size="replayed examples drawn from the buffer per step",
         alpha="DER/DER++ weight of the logit-matching (MSE) term on replayed examples",
         beta="DER++ weight of the cross-entropy term on replayed examples"),
    _check_replay)

# ------------------------------------------------------------------- NISPA
NISPA_MASK_INITS = ("exact", "bernoulli")
NISPA_TASK_IL_RULES = ("multiply", "restrict")


def _check_nispa(v, config) -> None:
    _need(0.0 < float(v["density"]) <= 1.0, f"nispa.density={v['density']} is invalid: it must be in (0, 1].")
    _choice("nispa", "mask_init", v["mask_init"], NISPA_MASK_INITS)
    e = int(v["phase_epochs"])
    _need(e >= 1, f"nispa.phase_epochs={e} is invalid: it must be >= 1.")
    _need(float(config.train.epochs) >= e, f"train.epochs={config.train.epochs} is less than one phase "
          f"(nispa.phase_epochs={e}); set train.epochs = max_phases * phase_epochs.")
    _need(0.0 < float(v["val_fraction"]) < 1.0,
          f"nispa.val_fraction={v['val_fraction']} is invalid: it must be in (0, 1).")
    _need(int(v["eval_chunk"]) >= 1, f"nispa.eval_chunk={v['eval_chunk']} is invalid: it must be >= 1.")
    _need(float(v["k"]) > 0, f"nispa.k={v['k']} is invalid: it must be > 0.")
    _need(int(v["min_phases"]) >= 1, f"nispa.min_phases={v['min_phases']} is invalid: it must be >= 1.")
    _need(int(v["select_samples"]) >= 0,
          f"nispa.select_samples={v['select_samples']} is invalid: 0 (all) or > 0.")
    _need(config.optim.name == "adam",
          f"optim.name={config.optim.name!r} is not supported by nispa; valid: 'adam'.")
    _need(config.scenario.kind in ("task_il", "class_il"),
          f"scenario.kind={config.scenario.kind!r} is not supported by nispa; valid: 'task_il' "
          "(or 'class_il' data evaluated task-incrementally).")
    _choice("nispa", "task_il_rule", v["task_il_rule"], NISPA_TASK_IL_RULES)


NISPA = Section(
    "nispa",
    dict(density=0.2, a_f=0.75, k=30.0, phase_epochs=5, max_phases=26, min_phases=3, tau_stop=5.0,
         val_fraction=0.1, select_samples=0, mask_init="exact", dense_first_conv=True, eval_chunk=512,
         task_il_rule="multiply"),
    dict(density="fraction of connections present in each sparse layer (first conv dense unless "
                 "dense_first_conv=False)",
         a_f="accuracy drop (points) below the best earlier phase that stops a task",
         k="cosine schedule constant of p_t = 100 (1 + cos(pi t / k)) / 2 (Eq. 3)",
         phase_epochs="epochs per phase (Adam re-created every phase)",
         max_phases="phases per task at most (train.epochs = max_phases * phase_epochs)",
         min_phases="phases before the a_f stopping rule may fire",
         tau_stop="p_t (percent) at or below which a task stops",
         val_fraction="fraction of each task's training examples held out for validation (by content hash)",
         select_samples="training examples the unit selection averages over (0 = all)",
         mask_init="initial masks: 'exact' (exact counts) or 'bernoulli' (official draw)",
         dense_first_conv="keep the first conv layer dense",
         eval_chunk="examples per vectorised forward when scoring validation/selection data",
         task_il_rule="task-IL test rule: 'multiply' (the official code: logits x 0/1 task mask, argmax over all "
                      "classes) or 'restrict' (argmax over the task's classes)"),
    _check_nispa)

# ------------------------------------------------------ EWC / SI / MAS
def _check_reg(v, config) -> None:
    _need(float(v["lam"]) >= 0, f"reg.lam={v['lam']} is invalid: it must be >= 0.")
    _need(int(v["n_fisher"]) >= 1, f"reg.n_fisher={v['n_fisher']} is invalid: it must be >= 1.")
    _need(float(v["xi"]) > 0, f"reg.xi={v['xi']} is invalid: it must be > 0.")
    _need(int(v["chunk"]) >= 1, f"reg.chunk={v['chunk']} is invalid: it must be >= 1.")
    _need(v["multi_head"] in (None, True, False),
          f"reg.multi_head={v['multi_head']!r} is invalid; valid: True, False, None (task-IL scenarios).")
    _choice("reg", "ewc_mode", v["ewc_mode"], ("per_task", "online"))
    _choice("reg", "mas_scale", v["mas_scale"], ("mean", "sum"))
    _need(0.0 <= float(v["val_fraction"]) < 1.0,
          f"reg.val_fraction={v['val_fraction']} is invalid: it must be in [0, 1).")
    _need(int(v["patience"]) >= 0, f"reg.patience={v['patience']} is invalid: it must be >= 0.")
    _need(int(v["patience"]) == 0 or float(v["val_fraction"]) > 0,
          f"reg.patience={v['patience']} needs a hold-out: set reg.val_fraction > 0.")
    _need(int(v["importance_samples"]) >= 0 and int(v["importance_batch"]) >= 0,
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

# --------------------------------------------------- class-IL with exemplars
CIL_PREDICT_RULES = ("cnn", "nme")
CIL_BUDGETS = ("fixed", "fair")
CIL_BATCHING = ("concat", "pycil")
CIL_WA_LOSSES = ("kd2", "lambda")
CIL_SCHEDULERS = ("", "steplr", "cosine")
CIL_GROWTH = ("loop", "vmap")
SCHEDULES = ("constant", "cosine", "multistep")


def _check_cil(v, config) -> None:
    _choice("cil", "predict", v["predict"], CIL_PREDICT_RULES)
    _choice("cil", "budget", v["budget"], CIL_BUDGETS)
    _need(int(v["memory_size"]) >= 1 or bool(v["fixed_memory"]),
          f"cil.memory_size={v['memory_size']} is invalid: it must be >= 1.")
    _need(not v["fixed_memory"] or int(v["memory_per_class"]) >= 1,
          f"cil.memory_per_class={v['memory_per_class']} is invalid: it must be >= 1.")
    _need(int(v["replay_batch_size"]) >= -1,
          f"cil.replay_batch_size={v['replay_batch_size']} is invalid: -1 (auto), 0 or > 0.")
    _need(float(v["kd_T"]) > 0, f"cil.kd_T={v['kd_T']} is invalid: the temperature must be > 0.")
    _need(float(v["update_lr"]) > 0, f"cil.update_lr={v['update_lr']} is invalid: it must be > 0.")
    _choice("cil", "update_schedule", v["update_schedule"], SCHEDULES)
    for key, valid in (("batching", CIL_BATCHING), ("wa_loss", CIL_WA_LOSSES), ("scheduler", CIL_SCHEDULERS),
                       ("growth", CIL_GROWTH)):
        _choice("cil", key, v[key], valid)
    _need(int(v["t_max"]) >= 0, f"cil.t_max={v['t_max']} is invalid: 0 (the phase's epochs) or > 0.")


CIL = Section(
    "cil",
    dict(memory_size=2000, fixed_memory=False, memory_per_class=20, budget="fixed", base_exemplars=2000,
         replay_batch_size=-1, max_replay_batch=512, predict="cnn", kd_T=2.0, kd_weight=-1.0,
         update_lr=0.1, update_weight_decay=2e-4, update_milestones=(80, 120), update_schedule="multistep",
         train_base=True, alpha_aux=1.0, feature_batch_size=256, batching="concat", wa_loss="kd2",
         scheduler="", t_max=0, growth="loop"),
    dict(memory_size="exemplars kept in total (budget='fixed', fixed_memory=False)",
         fixed_memory="keep memory_per_class exemplars per class instead of a total",
         memory_per_class="exemplars per class when fixed_memory=True",
         budget="'fixed' (memory_size) or 'fair' (MEMO's byte-matched budget from base_exemplars)",
         base_exemplars="DER's exemplar count the fair budget is computed from",
         replay_batch_size="exemplars per step (-1 = proportional to the memory share, 0 = mixed in the data)",
         max_replay_batch="upper bound of the automatic replay batch",
         predict="'cnn' (classifier logits) or 'nme' (nearest exemplar mean)",
         kd_T="distillation temperature",
         kd_weight="weight of the distillation term (<0 = the method's default)",
         update_lr="learning rate of tasks >= 1",
         update_weight_decay="weight decay of tasks >= 1",
         update_milestones="epochs at which the lr of tasks >= 1 is multiplied by optim.gamma",
         update_schedule="lr schedule of tasks >= 1: constant, cosine or multistep",
         train_base="MEMO/DER: keep training the shared (generalized) blocks after task 0",
         alpha_aux="MEMO/DER: weight of the auxiliary (new-vs-old) classifier loss",
         feature_batch_size="examples per forward when computing exemplar features",
         batching="'concat' (each step: B new images plus the replay batch) or 'pycil' (new data and "
                  "exemplars shuffled together into batches of B, PyCIL's loader)",
         wa_loss="WA's loss: 'kd2' (CE + 2 KD, the MEMO paper's and CIL survey's numbers) or 'lambda' "
                 "((1 - l) CE + l KD, l = known/total, PyCIL since Feb. 2023)",
         scheduler="'' (optim.schedule / cil.update_schedule), 'steplr', or 'cosine' (MEMO's --scheduler "
                   "cosine: every phase, stepped per epoch)",
         t_max="cosine period of the phases >= 1 in epochs (0 = the phase's epochs)",
         growth="old blocks of a grown network: 'loop' over the live blocks or 'vmap' over the stacked axis"),
    _check_cil)

# -------------------------------------------------------------------- AKR
AKR_REPLAYS = ("attentive", "mixup", "none")
AKR_TARGET_MODES = ("mixed_ce_kd", "icarl_bce")
AKR_BCE_OVER = ("seen", "all")
AKR_PAIR_MODES = ("union_perm", "exemplar_new")
AKR_ATTN_ARCHS = ("trunk_copy", "feature_mlp")
AKR_ATTN_NORMS = ("softmax", "ratio")
AKR_ATTN_OBJECTIVES = ("importance", "max_drift")
AKR_DRIFT_METRICS = ("l2", "cosine")
AKR_IMPORTANCE_NORMS = ("zscore", "softmax", "ratio")
AKR_ATTN_TRAINS = ("head", "all")
AKR_PHASE0_MIX = ("random", "none")


def _check_akr(v, config) -> None:
    for key, valid in (("replay", AKR_REPLAYS), ("target_mode", AKR_TARGET_MODES),
                       ("bce_over", AKR_BCE_OVER), ("pair_mode", AKR_PAIR_MODES),
                       ("attn_arch", AKR_ATTN_ARCHS), ("attn_norm", AKR_ATTN_NORMS),
                       ("attn_objective", AKR_ATTN_OBJECTIVES), ("drift_metric", AKR_DRIFT_METRICS),
                       ("importance_norm", AKR_IMPORTANCE_NORMS), ("phase0_mix", AKR_PHASE0_MIX),
                       ("attn_train", AKR_ATTN_TRAINS)):
        _choice("akr", key, v[key], valid)
    _need(0.0 <= float(v["mix_fraction"]) <= 1.0,
          f"akr.mix_fraction={v['mix_fraction']} is invalid: valid is 0 <= mix_fraction <= 1.")
    ba = tuple(v["beta_alpha"]) if isinstance(v["beta_alpha"], (tuple, list)) else (v["beta_alpha"],)
    _need(len(ba) == 2 and min(float(b) for b in ba) > 0,
          f"akr.beta_alpha={v['beta_alpha']} is invalid: two Beta shape parameters, both > 0.")
    _need(int(v["warmup_epochs"]) >= 0, f"akr.warmup_epochs={v['warmup_epochs']} is invalid: it must be >= 0.")
    for k in ("attn_tau", "importance_tau"):
        _need(float(v[k]) > 0, f"akr.{k}={v[k]} is invalid: the temperature must be > 0.")
    _need(float(v["attn_lr"]) >= 0, f"akr.attn_lr={v['attn_lr']} is invalid: it must be >= 0.")
    _need(int(v["attn_hidden"]) >= 1, f"akr.attn_hidden={v['attn_hidden']} is invalid: it must be >= 1.")
    _need(int(v["importance_sign"]) in (1, -1),
          f"akr.importance_sign={v['importance_sign']} is invalid: valid: 1, -1.")


AKR = Section(
    "akr",
    dict(replay="attentive", target_mode="mixed_ce_kd", bce_over="seen", pair_mode="union_perm",
         mix_fraction=1.0, beta_alpha=(1.0, 1.0), warmup_epochs=20, phase0_mix="random",
         attn_arch="trunk_copy", attn_train="head", attn_hidden=64, attn_norm="softmax", attn_tau=1.0,
         attn_lr=2e-6, attn_lr_decay=False, attn_objective="importance", attn_reg=0.0, drift_metric="l2",
         feat_norm=True, importance_norm="zscore", importance_tau=1.0, importance_sign=1),
    dict(replay="'attentive' (AKR), 'mixup' (Beta weights) or 'none' (no blending: the Base row)",
         target_mode="'mixed_ce_kd' (mixed CE + KD) or 'icarl_bce' (official iCaRL sigmoid BCE)",
         bce_over="icarl_bce: outputs the BCE covers, 'seen' classes or 'all'",
         pair_mode="how blend pairs are drawn: 'union_perm' or 'exemplar_new'",
         mix_fraction="fraction of each batch that is blended",
         beta_alpha="Beta(a, b) of the mixup weights (warm-up and mixup replay)",
         warmup_epochs="epochs per phase >= 1 that blend with Beta weights while S trains",
         phase0_mix="'random' (Beta mixup in phase 0) or 'none'",
         attn_arch="attention net S: 'trunk_copy' or 'feature_mlp'",
         attn_train="what of S trains: 'head' (the score layer; a trunk copy stays the frozen old model, "
                    "whose BN statistics match it) or 'all' (the whole trunk copy, BN statistics kept old)",
         attn_hidden="hidden width of the feature_mlp attention net",
         attn_norm="pair weight from scores: 'softmax' or 'ratio'",
         attn_tau="temperature of the pair weight",
         attn_lr="Adam learning rate of S",
         attn_lr_decay="S's lr follows the classifier's schedule",
         attn_objective="'importance' (predict the normalised drift) or 'max_drift'",
         attn_reg="weight of the regulariser on S's scores",
         drift_metric="feature drift between old and current model: 'l2' or 'cosine'",
         feat_norm="L2-normalise features before the drift",
         importance_norm="drift to pair importance: 'zscore' (drifts standardised over the batch, then "
                         "the pair's softmax), 'softmax' (pair softmax of raw drifts) or 'ratio' "
                         "(d_i / (d_i + d_j); stays near 0.5)",
         importance_tau="temperature of the zscore / softmax importance",
         importance_sign="+1: more drift, more weight; -1: inverted"),
    _check_akr)

# -------------------------------------------------------------------- SER
SER_MNP_MODES = ("multiply",)
SER_NUM_POINTS = 5                      # stem + four stages (clj.models.saliency.NUM_POINTS)
SER_POOL_MODES = ("mammoth_square", "global")
SER_TARGETS = ("spectral_residual", "center", "center_sr", "teacher")
SER_CLS_INITS = ("random", "sal_encoder")


def _check_ser(v, config) -> None:
    _choice("ser", "mnp", v["mnp"], SER_MNP_MODES)
    blocks = tuple(v["mnp_blocks"])
    _need(len(blocks) == SER_NUM_POINTS and all(b in (0, 1, True, False) for b in blocks),
          f"ser.mnp_blocks={blocks!r} is invalid: five 0/1 flags (stem, stage 1..4).")
    _choice("ser", "pool_mode", v["pool_mode"], SER_POOL_MODES)
    _choice("ser", "sal_target", v["sal_target"], SER_TARGETS)
    si = str(v["sal_init"])
    ok = si == "scratch" or (si.startswith("ckpt:") and len(si) > 5)
    if si.startswith("pretrain:"):
        try:
            ok = int(si.split(":", 1)[1]) >= 0
        except ValueError:
            ok = False
    _need(ok, f"ser.sal_init={si!r} is invalid; valid: 'scratch', 'pretrain:<steps>=0..', 'ckpt:<path.npz>'.")
    _need(float(v["sal_lr"]) > 0, f"ser.sal_lr={v['sal_lr']} is invalid: it must be > 0.")
    _need(float(v["sal_coeff"]) >= 0, f"ser.sal_coeff={v['sal_coeff']} is invalid: it must be >= 0.")
    _need(int(v["sal_n_gaussians"]) >= 0,
          f"ser.sal_n_gaussians={v['sal_n_gaussians']} is invalid: it must be >= 0.")
    _choice("ser", "cls_init", v["cls_init"], SER_CLS_INITS)


SER = Section(
    "ser",
    dict(mnp="multiply", mnp_blocks=(1, 1, 1, 1, 1), pool_mode="mammoth_square", sal_target="spectral_residual",
         sal_init="pretrain:300", sal_lr=0.005, sal_cnn_lr_factor=0.1, sal_momentum=0.9, sal_weight_decay=1e-4,
         sal_cnn_weight_decay=1e-5, sal_coeff=1.0, sal_n_gaussians=0, pretrain_lr_mult=4.0, sr_work_size=64,
         sr_blur_sigma=3.0, center_sigma=0.25, cls_init="random"),
    dict(mnp="how saliency modulates the classifier's features: 'multiply'",
         mnp_blocks="five 0/1 flags: modulate the stem and stages 1..4",
         pool_mode="pooling of the saliency map to each stage: 'mammoth_square' or 'global'",
         sal_target="saliency training target: spectral_residual, center, center_sr or teacher",
         sal_init="saliency net start: 'scratch', 'pretrain:<steps>' or 'ckpt:<path.npz>'",
         sal_lr="SGD learning rate of the saliency decoder",
         sal_cnn_lr_factor="the saliency encoder's lr is sal_lr times this",
         sal_momentum="SGD momentum of the saliency net",
         sal_weight_decay="weight decay of the saliency decoder",
         sal_cnn_weight_decay="weight decay of the saliency encoder",
         sal_coeff="weight of the saliency loss",
         sal_n_gaussians="Gaussian blobs added to the center prior (0 = none)",
         pretrain_lr_mult="lr multiplier of the saliency pretraining steps",
         sr_work_size="side (pixels) the spectral residual is computed at",
         sr_blur_sigma="Gaussian blur sigma of the spectral-residual map",
         center_sigma="width of the center prior (fraction of the image side)",
         cls_init="classifier backbone start: 'random' or 'sal_encoder' (a copy of the saliency encoder "
                  "after sal_init: the transfer control)"),
    _check_ser)

# ------------------------------------------------------------------ SERENA
SERENA_PROTOCOLS = ("task_free", "official")
SERENA_FREEZE_MODES = ("exact", "faithful")
SERENA_MASK_DRAWS = ("exact_count", "bernoulli")
SERENA_DETECTORS = ("ema_acc", "running_since_task_start", "running_since_detection", "batch_acc")
SERENA_VOTES = ("max_confidence", "max_logit", "recency_vote", "mean_prob", "nearest_class_mean",
                "nearest_class_mean_union", "nearest_class_mean_cell0", "official_task_indexed")
# class-mean routing rule -> the space its means live in (clj.methods.serena_route)
SERENA_ROUTE_SPACES = {"nearest_class_mean": "pixels", "nearest_class_mean_union": "union",
                       "nearest_class_mean_cell0": "cell0"}
SERENA_ROUTE_STATS = ("", "all")
SERENA_NEW_CELL_INITS = ("zeros", "reinit_random")
SERENA_OPTIMS = ("sgd", "adam")
SERENA_MODELS = ("serena_mlp", "serena_resnet18", "serena_resnet18_reduced")  # clj.models.serena_nets
# protocol -> the value every "" knob takes.
SERENA_PROTOCOL_DEFAULTS = {
    "official": dict(freeze="faithful", mask_draw="bernoulli", detector="running_since_task_start",
                     vote="official_task_indexed", new_cell_init="zeros", min_window_mean=0.0),
    "task_free": dict(freeze="exact", mask_draw="exact_count", detector="ema_acc",
                      vote="nearest_class_mean", new_cell_init="reinit_random", min_window_mean=20.0),
}


def serena_resolved(v: dict) -> dict:
    """The effective protocol knobs of a ``config.serena`` block (merged over
    the defaults): ``""`` knobs take the protocol's value.

    Raises:
      ConfigError: an unknown protocol or knob value, a knob that contradicts
        ``protocol='official'``, or a task-free protocol with a knob that
        needs the true task boundaries or ids.
    """
    _choice("serena", "protocol", v["protocol"], SERENA_PROTOCOLS)
    out = dict(SERENA_PROTOCOL_DEFAULTS[v["protocol"]])
    valid = dict(freeze=SERENA_FREEZE_MODES, mask_draw=SERENA_MASK_DRAWS, detector=SERENA_DETECTORS,
                 vote=SERENA_VOTES, new_cell_init=SERENA_NEW_CELL_INITS)
    for k, opts in valid.items():
        x = v[k]
        if x == "":
            continue
        _choice("serena", k, x, opts)
        if v["protocol"] == "official" and x != out[k] and k != "new_cell_init":
            raise ConfigError(f"serena.{k}={x!r} contradicts serena.protocol='official' (which uses {out[k]!r}); "
                              f"use protocol='task_free' to change it.")
        out[k] = x
    if v["min_window_mean"] >= 0:
        out["min_window_mean"] = float(v["min_window_mean"])
    if v["protocol"] == "task_free" and out["vote"] == "official_task_indexed":
        raise ConfigError("serena.vote='official_task_indexed' needs the true task id at test time; valid with "
                          f"protocol='task_free': {', '.join(x for x in SERENA_VOTES if x != 'official_task_indexed')}.")
    if v["protocol"] == "task_free" and out["detector"] == "running_since_task_start":
        raise ConfigError("serena.detector='running_since_task_start' needs the true task boundaries; valid with "
                          "protocol='task_free': ema_acc, running_since_detection, batch_acc.")
    return out


def _check_serena(v, config) -> None:
    serena_resolved(v)
    kind = config.scenario.kind
    _need(kind == "data_incremental", f"scenario.kind={kind!r} is invalid for method='serena': SERENA learns "
          "an online stream; valid: 'data_incremental'.")
    _need(v["protocol"] != "official" or bool(config.scenario.get("reveal_boundaries", False)),
          "serena.protocol='official' resets its statistic at every true task boundary: set "
          "scenario.reveal_boundaries=True (or use protocol='task_free').")
    _need(config.model.name in SERENA_MODELS, f"model.name={config.model.name!r} is not a SERENA backbone "
          f"(bias-free, stateless BN); valid: {', '.join(SERENA_MODELS)}.")
    _need(config.optim.name in SERENA_OPTIMS,
          f"optim.name={config.optim.name!r} is invalid for SERENA; valid: {', '.join(SERENA_OPTIMS)}.")
    _need(config.optim.get("schedule", "constant") == "constant",
          f"optim.schedule={config.optim.get('schedule')!r} is invalid for SERENA (constant lr, one optimizer per "
          "cell); valid: 'constant'.")
    _need(0.0 < float(v["density"]) <= 1.0, f"serena.density={v['density']} is invalid: it must be in (0, 1].")
    _need(int(v["window"]) >= 1, f"serena.window={v['window']} is invalid: it must be >= 1.")
    _need(0.0 < float(v["threshold"]) <= 1.0,
          f"serena.threshold={v['threshold']} is invalid: it must be in (0, 1].")
    _need(0.0 <= float(v["ema_decay"]) < 1.0,
          f"serena.ema_decay={v['ema_decay']} is invalid: it must be in [0, 1).")
    _need(v["route_stats"] in SERENA_ROUTE_STATS, f"serena.route_stats={v['route_stats']!r} is unknown; valid: "
          "'' (the class means the vote reads) or 'all' (pixel, union and cell-0 means).")
    _need(int(v["max_cells"]) >= 0 and int(v["eval_cell_batch"]) >= 0,
          f"serena.max_cells={v['max_cells']} / eval_cell_batch={v['eval_cell_batch']} are invalid: they must be "
          ">= 0 (0 = automatic).")


SERENA = Section(
    "serena",
    dict(protocol="task_free", density=0.05, window=10, threshold=0.5, ema_decay=0.5, min_window_mean=-1.0,
         max_cells=0, nesterov=True, freeze="", mask_draw="", detector="", vote="", new_cell_init="",
         eval_cell_batch=0, route_stats=""),
    dict(protocol="'task_free' (detected concepts) or 'official' (the official code's task-indexed protocol)",
         density="1 - sparsity of each cell's masks (--sparsity 0.95 = 0.05)",
         window="W, batches in the drift detector's window (--window_size)",
         threshold="theta, drift threshold on the detector's statistic (--drift_threshold)",
         ema_decay="ema_acc detector: stat = d * stat + (1 - d) * batch accuracy",
         min_window_mean="fire only when the window mean (percent) is >= this (< 0: the protocol's value)",
         max_cells="cells preallocated (0 = num_tasks + 8; static shapes)",
         nesterov="Nesterov momentum in each cell's SGD",
         freeze="frozen-weight rule: exact | faithful ('' = the protocol's)",
         mask_draw="new cell masks: exact_count | bernoulli ('' = the protocol's)",
         detector="drift statistic: ema_acc | running_since_task_start | running_since_detection | batch_acc "
                  "('' = the protocol's)",
         vote="cell choice at test time ('' = the protocol's; see the VOTES of clj.methods.serena)",
         new_cell_init="a new cell's weights: zeros | reinit_random ('' = the protocol's)",
         eval_cell_batch="cells per vectorised forward at test time (0 = all at once)",
         route_stats="class means kept during training: '' = those the vote reads; 'all' = pixel, union and "
                     "cell-0 means (to compare the nearest_class_mean* rules on one trained model)"),
    _check_serena)

SECTIONS = {s.name: s for s in (REPLAY, NISPA, REG, CIL, AKR, SER, SERENA)}

# ----------------------------------------------------- methods and checks
EXPAND_MODELS = ("resnet32",)


def _check_expand_model(config) -> None:
    _need(config.model.name in EXPAND_MODELS,
          f"model.name={config.model.name!r} is not supported by {config.method}; valid: "
          f"{', '.join(EXPAND_MODELS)} (model.num_blocks sets the depth: 5 = ResNet-32, 1 = ResNet-8).")
    nb = int(config.model.get("num_blocks", 5))
    _need(nb >= 1, f"model.num_blocks={nb} is invalid: it must be >= 1.")


SER_CLASSIFIERS = ("resnet18", "resnet18_reduced")


def _check_ser_model(config) -> None:
    _need(config.model.name in SER_CLASSIFIERS,
          f"model.name={config.model.name!r} is not supported by SER; valid: {', '.join(SER_CLASSIFIERS)}.")
    a = config.augment
    _need(int(a.get("crop_pad", 0)) == 0 and not a.get("flip", False),
          f"augment.crop_pad={a.get('crop_pad', 0)}, augment.flip={a.get('flip', False)}: SER trains without "
          "augmentation (ser.md section 2); set crop_pad=0, flip=False.")


# method -> blocks it reads (checked when present or when required).
METHOD_SECTIONS = {
    "finetune": (), "joint": (),
    "er": ("replay",), "der": ("replay",), "derpp": ("replay",), "er_ace": ("replay",),
    "icarl": ("cil",), "wa": ("cil",), "replay": ("cil",), "memo": ("cil",), "dynamic_er": ("cil",),
    "akr": ("cil", "akr"),
    "nispa": ("nispa",),
    "ewc": ("reg",), "si": ("reg",), "mas": ("reg",),
    "ser_derpp": ("replay", "ser"), "ser_er_ace": ("replay", "ser"), "ser_er": ("replay", "ser"),
    "serena": ("serena",),
}

METHOD_CHECKS = {"memo": (_check_expand_model,), "dynamic_er": (_check_expand_model,),
                 "ser_derpp": (_check_ser_model,), "ser_er_ace": (_check_ser_model,),
                 "ser_er": (_check_ser_model,)}


def method_sections(method: str) -> tuple:
    """The :class:`Section` s ``method`` reads: those declared here, else the
    ones its :class:`~clj.methods.api.MethodSpec` declares (importing the
    method's module, and so JAX)."""
    if method in METHOD_SECTIONS:
        return tuple(SECTIONS[n] for n in METHOD_SECTIONS[method])
    from clj.methods import METHODS, get_spec

    return tuple(get_spec(method).sections) if method in METHODS else ()


def declared(method: str) -> bool:
    """Whether ``method``'s checks live here (else its module's hook runs)."""
    return method in METHOD_SECTIONS


def check(config) -> None:
    """Runs every check of ``config.method``'s blocks and cross-block rules.

    Raises:
      ConfigError: the first bad value, naming it and what is valid.
    """
    for name in METHOD_SECTIONS.get(config.method, ()):
        get_section(name, config)
    for fn in METHOD_CHECKS.get(config.method, ()):
        fn(config)


def field_docs(config) -> dict:
    """``"<block>.<field>" -> meaning`` for the blocks ``config.method`` reads
    and any declared block present in ``config``."""
    out = {}
    blocks = {s.name: s for s in method_sections(config.method)}
    blocks.update({n: SECTIONS[n] for n in SECTIONS if n in config and n not in blocks})
    for n, sec in blocks.items():
        for k, d in sec.docs.items():
            out[f"{n}.{k}"] = d
    return out


def section_config(name: str, **overrides):
    """A ``config.<name>`` block (``ml_collections.ConfigDict``) with the
    section's defaults updated by ``overrides``; JAX-free, so a config file
    that builds its blocks with it loads without importing JAX.

    Raises:
      ConfigError: an unknown section or field.
    """
    import ml_collections

    if name not in SECTIONS:
        raise ConfigError(f"section {name!r} is unknown; valid: {', '.join(sorted(SECTIONS))}.")
    d = dict(SECTIONS[name].defaults)
    unknown = sorted(set(overrides) - set(d))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]} is not a field; valid fields: {', '.join(sorted(d))}.")
    d.update(overrides)
    return ml_collections.ConfigDict(d)


def akr_config(**overrides):
    """``config.akr`` block (JAX-free twin of ``clj.methods.akr.akr_config``)."""
    return section_config("akr", **overrides)


def cil_config(**overrides):
    """``config.cil`` block (JAX-free twin of ``clj.methods.cil_common.cil_config``)."""
    return section_config("cil", **overrides)


def ser_config(**overrides):
    """``config.ser`` block (JAX-free twin of ``clj.methods.ser.ser_config``)."""
    return section_config("ser", **overrides)
