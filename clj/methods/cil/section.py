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
EXPAND_MODELS = ("resnet18_imagenet", "resnet32")  # clj.models.registry.model_names(growing=True)


def check_expand_model(config) -> None:
    """``config.model`` must be a backbone the growing network can cut."""
    need(config.model.name in EXPAND_MODELS,
         f"model.name={config.model.name!r} is not supported by {config.method}; valid: "
         f"{', '.join(EXPAND_MODELS)} (model.num_blocks sets the depth: 5 = ResNet-32, 1 = ResNet-8).")
    if config.model.name == "resnet32":
        nb = int(config.model.get("num_blocks", 5))
        need(nb >= 1, f"model.num_blocks={nb} is invalid: it must be >= 1.")
    else:
        need("num_blocks" not in config.model, f"model.num_blocks does not apply to model.name="
             f"{config.model.name!r} (ResNet-18: two blocks per stage); remove it.")


# ----------------------------------------------------------- Coil (co-transport)
def _check_coil(v, config) -> None:
    positive("coil", v, "sinkhorn_reg", "norm_p")
    need(float(v["reg_term"]) >= 0, f"coil.reg_term={v['reg_term']} is invalid: it must be >= 0.")
    need(float(v["prospective_weight"]) >= 0,
         f"coil.prospective_weight={v['prospective_weight']} is invalid: it must be >= 0.")
    need(int(v["ot_every"]) >= 1, f"coil.ot_every={v['ot_every']} is invalid: it must be >= 1.")
    need(int(v["sinkhorn_iters"]) >= 1, f"coil.sinkhorn_iters={v['sinkhorn_iters']} is invalid: it must be >= 1.")


COIL = Section(
    "coil",
    dict(sinkhorn_reg=0.464, norm_p=3.0, reg_term=1e-3, prospective_weight=1e-3, ot_every=30, sinkhorn_iters=1000),
    dict(sinkhorn_reg="entropic regularisation of the Sinkhorn transport (PyCIL's 'sinkhorn')",
         norm_p="p of the Minkowski distance between class means, the transport cost (PyCIL's 'norm_term')",
         reg_term="weight of the retrospective (new -> old) transport loss, times (epoch / epochs)^2",
         prospective_weight="weight of the prospective (old -> new) transport loss of the first epoch",
         ot_every="steps between two retrospective transport plans (PyCIL: every 30 batches)",
         sinkhorn_iters="Sinkhorn iterations (fixed count; POT's default maximum)"),
    _check_coil)


# --------------------------------------------------- FOSTER (boosting + compression)
FOSTER_OOFC = ("ft", "az")
FOSTER_BOOST_LOSSES = ("divide", "logit_adjust", "ce")
FOSTER_PREDICT_NETS = ("teacher", "student")


def _check_foster(v, config) -> None:
    for k in ("beta1", "beta2"):
        need(0.0 <= float(v[k]) < 1.0, f"foster.{k}={v[k]} is invalid: it must be in [0, 1).")
    choices("foster", v, oofc=FOSTER_OOFC, boost_loss=FOSTER_BOOST_LOSSES, predict_net=FOSTER_PREDICT_NETS)
    need(float(v["lambda_okd"]) >= 0, f"foster.lambda_okd={v['lambda_okd']} is invalid: it must be >= 0.")
    positive("foster", v, "wa_value", "compression_epochs")
    need(float(v["compression_lr"]) > 0 or float(v["compression_lr"]) == -1,
         f"foster.compression_lr={v['compression_lr']} is invalid: > 0, or -1 (cil.update_lr).")
    need(float(v["compression_weight_decay"]) >= 0,
         f"foster.compression_weight_decay={v['compression_weight_decay']} is invalid: it must be >= 0.")


FOSTER = Section(
    "foster",
    dict(beta1=0.96, beta2=0.97, oofc="ft", teacher_wa=False, student_wa=False, lambda_okd=1.0, wa_value=1.0,
         compression_epochs=130, compression_lr=-1.0, compression_weight_decay=0.0, boost_loss="divide",
         predict_net="teacher"),
    dict(beta1="effective-number beta of the boosting phase's class weights",
         beta2="effective-number beta of the compression phase's balanced distillation",
         oofc="old-features -> new-classes weights of the boosted head: 'ft' (trained) or 'az' (kept at zero)",
         teacher_wa="weight-align the boosted (two-backbone) head after boosting",
         student_wa="weight-align the compressed student's head after compression",
         lambda_okd="weight of the distillation from the old model during boosting",
         wa_value="weight aligning's extra factor value^(known / new)",
         compression_epochs="epochs of the compression phase of tasks >= 1 (train.epochs: boosting)",
         compression_lr="learning rate of the compression phase (-1 = cil.update_lr)",
         compression_weight_decay="weight decay of the compression phase (PyCIL: none)",
         boost_loss="boosting CE on 'divide' (logits / class weights, PyCIL), 'logit_adjust' (logits + log "
                    "class prior, balanced softmax) or 'ce' (plain)",
         predict_net="tasks >= 1 predict with the 'teacher' (two backbones, PyCIL's reported accuracy) or the "
                     "compressed 'student'"),
    _check_foster)
# ------------------------------------------------------------ LUCIR and BiC
LUCIR_ADAPTIVE = ("mammoth", "classes")
LUCIR_UNSEEN = ("all", "seen")
EXEMPLAR_REPEATS = ("once", "wrap")
REPEATS_DOC = ("'once' (PyCIL's / Mammoth's union loader: with cil.batching='pycil' every exemplar is replayed "
               "once per epoch, replay slots past the memory are masked out) or 'wrap' (the family's default: "
               "the slots wrap around the memory, a small memory comes back several times per epoch)")


def _check_lucir(v, config) -> None:
    from clj.methods.sections import at_least

    at_least("lucir", v, 0.0, "lamda_base", "lamda_mr", "mr_margin", "finetune_epochs")
    need(int(v["k_mr"]) >= 1, f"lucir.k_mr={v['k_mr']} is invalid: it must be >= 1.")
    choices("lucir", v, adaptive=LUCIR_ADAPTIVE, unseen=LUCIR_UNSEEN, exemplar_repeats=EXEMPLAR_REPEATS)
    positive("lucir", v, "finetune_lr")
    need(all(int(m) >= 0 for m in v["finetune_milestones"]),
         f"lucir.finetune_milestones={tuple(v['finetune_milestones'])} is invalid: batch counts >= 0.")


LUCIR = Section(
    "lucir",
    dict(lamda_base=5.0, lamda_mr=1.0, k_mr=2, mr_margin=0.5, adaptive="mammoth", unseen="all", imprint=True,
         finetune_epochs=20, finetune_lr=0.01, finetune_milestones=(10,), exemplar_repeats="once"),
    dict(lamda_base="base weight of the less-forget (feature cosine) distillation",
         lamda_mr="weight of the margin ranking loss",
         k_mr="K: hard negatives (top-K new-class scores) per old-class example",
         mr_margin="margin m of the margin ranking loss",
         adaptive="less-forget weight of task t: 'mammoth' lamda_base*sqrt(t-1) (Mammoth's code) or "
                  "'classes' lamda_base*sqrt(old/new classes) (the paper's Eq. 7)",
         unseen="'all' (Mammoth: the cross-entropy and the hard negatives include the not-yet-seen classes' "
                "fixed random weights) or 'seen' (only the classes seen so far, as the paper's growing head)",
         imprint="initialise a new task's class weights from the normalised mean feature of its first batch",
         finetune_epochs="class-balanced finetuning of the classifier on the exemplars after each task "
                         "(epochs; 0 = off)",
         finetune_lr="learning rate of the class-balanced finetuning",
         finetune_milestones="batches of the finetuning after which its lr is multiplied by 0.1 "
                             "(Mammoth steps this schedule once per batch)",
         exemplar_repeats=REPEATS_DOC),
    _check_lucir)

BIC_STAGE2_LOSSES = ("softmax_ce", "ce")
BIC_STAGE2_BN = ("train", "eval")


def _check_bic(v, config) -> None:
    from clj.methods.sections import in_interval

    in_interval("bic", v, "split_ratio", "(0, 1)")
    choices("bic", v, stage2_loss=BIC_STAGE2_LOSSES, stage2_bn=BIC_STAGE2_BN, exemplar_repeats=EXEMPLAR_REPEATS)
    positive("bic", v, "stage2_lr")
    need(float(v["stage2_epochs"]) >= 0, f"bic.stage2_epochs={v['stage2_epochs']} is invalid: it must be >= 0 "
                                         "(0 = train.epochs).")


BIC = Section(
    "bic",
    dict(split_ratio=0.1, stage2_epochs=0, stage2_lr=0.1, stage2_weight_decay=2e-4, stage2_milestones=(60, 100, 140),
         stage2_loss="softmax_ce", stage2_bn="train", exemplar_repeats="once"),
    dict(split_ratio="share of the memory held out per class for the bias correction: "
                     "int(split_ratio * memory_size / old classes) images of every class, old and new",
         stage2_epochs="epochs of the bias-correction stage (0 = train.epochs, as PyCIL)",
         stage2_lr="learning rate of the bias-correction stage (SGD, momentum 0.9)",
         stage2_weight_decay="weight decay of alpha and beta in the bias-correction stage",
         stage2_milestones="epochs of the bias-correction stage at which its lr is multiplied by 0.1",
         stage2_loss="'softmax_ce' (PyCIL: cross-entropy of the softmax probabilities) or 'ce' (the paper: "
                     "cross-entropy of the corrected logits)",
         stage2_bn="'train' (PyCIL: BatchNorm in training mode during the bias correction, its running "
                   "statistics follow the validation data) or 'eval' (frozen statistics)",
         exemplar_repeats=REPEATS_DOC),
    _check_bic)


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
