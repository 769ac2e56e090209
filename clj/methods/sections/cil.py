"""The class-IL blocks: ``config.cil`` (iCaRL, WA, Replay, MEMO, DER (Yan),
AKR), ``config.akr`` (AKR) and the model rule of the growing networks.
JAX-free."""
from __future__ import annotations

from clj.methods.sections.base import Section, at_least, choices, need, positive

# --------------------------------------------------- class-IL with exemplars
CIL_PREDICT_RULES = ("cnn", "nme")
CIL_BUDGETS = ("fixed", "fair")
CIL_BATCHING = ("concat", "pycil")
CIL_WA_LOSSES = ("kd2", "lambda")
CIL_SCHEDULERS = ("", "steplr", "cosine")
CIL_GROWTH = ("loop", "vmap")
SCHEDULES = ("constant", "cosine", "multistep")


def _check_cil(v, config) -> None:
    choices("cil", v, predict=CIL_PREDICT_RULES, budget=CIL_BUDGETS)
    need(int(v["memory_size"]) >= 1 or bool(v["fixed_memory"]),
         f"cil.memory_size={v['memory_size']} is invalid: it must be >= 1.")
    need(not v["fixed_memory"] or int(v["memory_per_class"]) >= 1,
         f"cil.memory_per_class={v['memory_per_class']} is invalid: it must be >= 1.")
    need(int(v["replay_batch_size"]) >= -1,
         f"cil.replay_batch_size={v['replay_batch_size']} is invalid: -1 (auto), 0 or > 0.")
    need(float(v["kd_T"]) > 0, f"cil.kd_T={v['kd_T']} is invalid: the temperature must be > 0.")
    positive("cil", v, "update_lr")
    choices("cil", v, update_schedule=SCHEDULES, batching=CIL_BATCHING, wa_loss=CIL_WA_LOSSES,
            scheduler=CIL_SCHEDULERS, growth=CIL_GROWTH)
    need(int(v["t_max"]) >= 0, f"cil.t_max={v['t_max']} is invalid: 0 (the phase's epochs) or > 0.")


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
    choices("akr", v, replay=AKR_REPLAYS, target_mode=AKR_TARGET_MODES, bce_over=AKR_BCE_OVER,
            pair_mode=AKR_PAIR_MODES, attn_arch=AKR_ATTN_ARCHS, attn_norm=AKR_ATTN_NORMS,
            attn_objective=AKR_ATTN_OBJECTIVES, drift_metric=AKR_DRIFT_METRICS,
            importance_norm=AKR_IMPORTANCE_NORMS, phase0_mix=AKR_PHASE0_MIX, attn_train=AKR_ATTN_TRAINS)
    need(0.0 <= float(v["mix_fraction"]) <= 1.0,
         f"akr.mix_fraction={v['mix_fraction']} is invalid: valid is 0 <= mix_fraction <= 1.")
    ba = tuple(v["beta_alpha"]) if isinstance(v["beta_alpha"], (tuple, list)) else (v["beta_alpha"],)
    need(len(ba) == 2 and min(float(b) for b in ba) > 0,
         f"akr.beta_alpha={v['beta_alpha']} is invalid: two Beta shape parameters, both > 0.")
    at_least("akr", v, 0, "warmup_epochs")
    for k in ("attn_tau", "importance_tau"):
        need(float(v[k]) > 0, f"akr.{k}={v[k]} is invalid: the temperature must be > 0.")
    at_least("akr", v, 0, "attn_lr")
    at_least("akr", v, 1, "attn_hidden")
    need(int(v["importance_sign"]) in (1, -1),
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


# ------------------------------------------ MEMO / DER (Yan): the backbone
EXPAND_MODELS = ("resnet32",)  # clj.models.registry.model_names(growing=True)


def check_expand_model(config) -> None:
    """``config.model`` must be a backbone the growing network can cut."""
    need(config.model.name in EXPAND_MODELS,
         f"model.name={config.model.name!r} is not supported by {config.method}; valid: "
         f"{', '.join(EXPAND_MODELS)} (model.num_blocks sets the depth: 5 = ResNet-32, 1 = ResNet-8).")
    nb = int(config.model.get("num_blocks", 5))
    need(nb >= 1, f"model.num_blocks={nb} is invalid: it must be >= 1.")
