"""The class-IL family's config: ``config.cil`` (iCaRL, WA, Replay, MEMO,
DER (Yan), and AKR on top of iCaRL) and the model rule of the growing
networks.  JAX-free."""
from __future__ import annotations

from clj.methods.sections import Section, choices, need, positive

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


# ------------------------------------------ MEMO / DER (Yan): the backbone
EXPAND_MODELS = ("resnet32",)  # clj.models.registry.model_names(growing=True)


def check_expand_model(config) -> None:
    """``config.model`` must be a backbone the growing network can cut."""
    need(config.model.name in EXPAND_MODELS,
         f"model.name={config.model.name!r} is not supported by {config.method}; valid: "
         f"{', '.join(EXPAND_MODELS)} (model.num_blocks sets the depth: 5 = ResNet-32, 1 = ResNet-8).")
    nb = int(config.model.get("num_blocks", 5))
    need(nb >= 1, f"model.num_blocks={nb} is invalid: it must be >= 1.")


# ----------------------------------------------------------------- PODNet
def _check_podnet(v, config) -> None:
    from clj.methods.sections import at_least

    at_least("podnet", v, 1, "nb_proxy")
    at_least("podnet", v, 0, "lambda_c", "lambda_f", "nca_margin", "ft_epochs")
    positive("podnet", v, "nca_scale", "ft_lr")
    need(v["nca_hinge"] in (True, False), f"podnet.nca_hinge={v['nca_hinge']!r} is invalid; valid: True, False.")


PODNET = Section(
    "podnet",
    dict(nb_proxy=10, lambda_c=5.0, lambda_f=1.0, nca_margin=0.0, nca_scale=1.0, nca_hinge=False,
         ft_epochs=20, ft_lr=0.005),
    dict(nb_proxy="K, proxies per class of the local similarity classifier (PyCIL: 10)",
         lambda_c="weight of POD-spatial on the intermediate feature maps (PyCIL: 5)",
         lambda_f="weight of POD-flat on the final embedding (PyCIL: 1)",
         nca_margin="delta, NCA margin on the target's similarity (PyCIL's code: 0, its 0.6 cancels; paper: 0.6)",
         nca_scale="eta, scale of the similarities in the NCA loss (PyCIL: 1; the LSC's learned sigma also scales)",
         nca_hinge="clip the NCA loss at 0 (paper: True; PyCIL: False)",
         ft_epochs="epochs of the class-balanced finetuning after each task >= 1 (PyCIL: 20; 0 = none)",
         ft_lr="learning rate of the class-balanced finetuning (PyCIL: 0.005, cosine over ft_epochs)"),
    _check_podnet)
