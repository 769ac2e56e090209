"""The ``config.ser`` block (SER, Bellitto et al.) and SER's model rule.
JAX-free."""
from __future__ import annotations

from clj.methods.sections import Section, at_least, choice, need, positive

SER_MNP_MODES = ("multiply",)
SER_NUM_POINTS = 5                      # stem + four stages (clj.models.saliency.NUM_POINTS)
SER_POOL_MODES = ("mammoth_square", "global")
SER_TARGETS = ("dataset", "spectral_residual", "center", "center_sr", "teacher")
SALIENCY_DATASETS = ("mini_imagenet", "fg_imagenet")  # the datasets whose records store SER's saliency maps
SER_CLS_INITS = ("random", "sal_encoder")
SER_CLASSIFIERS = ("resnet18", "resnet18_reduced", "resnet18_imagenet")  # clj.methods.ser.ser.CLASSIFIERS
SER_STEMS = ("cifar", "imagenet")  # model.stem: SER's code's (3x3, no pool) or the ImageNet one


def _check_ser(v, config) -> None:
    choice("ser", "mnp", v["mnp"], SER_MNP_MODES)
    blocks = tuple(v["mnp_blocks"])
    need(len(blocks) == SER_NUM_POINTS and all(b in (0, 1, True, False) for b in blocks),
         f"ser.mnp_blocks={blocks!r} is invalid: five 0/1 flags (stem, stage 1..4).")
    choice("ser", "pool_mode", v["pool_mode"], SER_POOL_MODES)
    choice("ser", "sal_target", v["sal_target"], SER_TARGETS)
    need(v["sal_target"] != "dataset" or str(config.get("dataset", "")) in SALIENCY_DATASETS,
         f"ser.sal_target='dataset' reads the saliency maps stored with the images, and dataset="
         f"{config.get('dataset', '')!r} has none; valid: a dataset of {', '.join(SALIENCY_DATASETS)} "
         f"(python -m clj.data.prepare), or ser.sal_target in spectral_residual, center, center_sr, teacher.")
    si = str(v["sal_init"])
    ok = si == "scratch" or (si.startswith("ckpt:") and len(si) > 5)
    if si.startswith("pretrain:"):
        try:
            ok = int(si.split(":", 1)[1]) >= 0
        except ValueError:
            ok = False
    need(ok, f"ser.sal_init={si!r} is invalid; valid: 'scratch', 'pretrain:<steps>=0..', 'ckpt:<path.npz>'.")
    positive("ser", v, "sal_lr")
    at_least("ser", v, 0, "sal_coeff", "sal_n_gaussians")
    choice("ser", "cls_init", v["cls_init"], SER_CLS_INITS)


SER = Section(
    "ser",
    dict(mnp="multiply", mnp_blocks=(1, 1, 1, 1, 1), pool_mode="mammoth_square", sal_target="spectral_residual",
         sal_init="pretrain:300", sal_lr=0.005, sal_cnn_lr_factor=0.1, sal_momentum=0.9, sal_weight_decay=1e-4,
         sal_cnn_weight_decay=1e-5, sal_coeff=1.0, sal_n_gaussians=0, pretrain_lr_mult=4.0, sr_work_size=64,
         sr_blur_sigma=3.0, center_sigma=0.25, cls_init="random"),
    dict(mnp="how saliency modulates the classifier's features: 'multiply'",
         mnp_blocks="five 0/1 flags: modulate the stem and stages 1..4",
         pool_mode="pooling of the saliency map to each stage: 'mammoth_square' or 'global'",
         sal_target="saliency training target: dataset (the ground-truth maps stored with mini_imagenet / "
                    "fg_imagenet, the paper's), spectral_residual, center, center_sr or teacher",
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


def check_ser_model(config) -> None:
    """SER's classifier backbone, its stem and its augmentation rule (no
    random or evaluation-only transform: SER trains and tests on the same
    resized images, ``docs/ser.md``)."""
    from clj.data.augment_presets import AUGMENT_DEFAULTS, resolve_augment

    need(config.model.name in SER_CLASSIFIERS,
         f"model.name={config.model.name!r} is not supported by SER; valid: {', '.join(SER_CLASSIFIERS)}.")
    if "stem" in config.model:
        choice("model", "stem", config.model.stem, SER_STEMS)
    a = resolve_augment(config.augment)
    need(int(a["crop_pad"]) == 0 and not a["flip"],
         f"augment.crop_pad={a['crop_pad']}, augment.flip={a['flip']}: SER trains without "
         "augmentation (docs/ser.md); set crop_pad=0, flip=False.")
    for k in ("resized_crop", "brightness", "eval_resize", "eval_crop"):
        need(a[k] == AUGMENT_DEFAULTS[k], f"augment.{k}={a[k]!r} (augment.preset={a['preset']!r}): SER trains "
             f"without augmentation (docs/ser.md); set augment.{k}={AUGMENT_DEFAULTS[k]!r}.")
