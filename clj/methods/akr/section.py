"""AKR's config block ``config.akr`` (attentive knowledge replay over
iCaRL; the ``cil`` block is the class-IL family's).  JAX-free."""
from __future__ import annotations

from clj.methods.sections import Section, at_least, choices, need

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
