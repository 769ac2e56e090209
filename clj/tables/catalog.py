"""The seed papers' headline tables: their rows as shipped configs, with the
papers' numbers.

Each :class:`Table` names its source (paper, table), the metrics it reports
and its rows; each :class:`Row` is a shipped config (``configs/<name>.py``,
with its variant and overrides: exactly what ``launch.py`` would run) and the
paper's numbers in the table's metric order (``None`` where the paper has no
cell or none could be retrieved).
Numbers are in percent, as printed by the papers.

JAX-free (importing the catalog imports no JAX).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Metric:
    """A column of a table: ``results["metrics"][setting][name]`` in percent.

    Attributes:
      label: the column's name (``"Avg"``, ``"Last"``, ``"class-IL"``).
      setting: ``class_il`` | ``task_il`` | ``domain_il``.
      name: a metric of results.json (``average_incremental_accuracy``,
        ``final_average_accuracy``, their ``_pooled`` forms...).
    """

    label: str
    setting: str
    name: str


AVG = Metric("Avg", "class_il", "average_incremental_accuracy")
LAST = Metric("Last", "class_il", "final_average_accuracy")
CIL_FINAL = Metric("class-IL", "class_il", "final_average_accuracy")
TIL_FINAL = Metric("task-IL", "task_il", "final_average_accuracy")
POOLED_FINAL = Metric("final", "class_il", "final_average_accuracy_pooled")


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: a shipped config and the paper's numbers.

    Attributes:
      label: the row's name in the table (method and setting).
      config: a shipped config's name (``configs/<config>.py``).
      variant: its variant (the part after ``:``), or None.
      overrides: ``((path, value), ...)`` set on top, as ``--config.<path>=<value>``.
      paper: the paper's numbers, one per metric of the table (None = no cell).
    """

    label: str
    config: str
    variant: str | None = None
    overrides: tuple = ()
    paper: tuple = ()

    def command(self) -> str:
        """The ``launch.py`` command line of the row's run."""
        cfg = f"configs/{self.config}.py" + (f":{self.variant}" if self.variant else "")
        over = "".join(f" --config.{k}={_cli(v)}" for k, v in self.overrides)
        return f"python launch.py --config={cfg}{over}"


def _cli(v) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v))
    return str(v)


@dataclasses.dataclass(frozen=True)
class Table:
    """A seed paper's table.

    Attributes:
      name: the table's name on the command line.
      title: what it is.
      source: paper, table / figure, and where the numbers were read.
      metrics: its columns (:class:`Metric`).
      rows: its rows (:class:`Row`).
      seeds: runs per row by default (the paper's habit).
      note: what differs from the paper's protocol, or where the numbers come from.
    """

    name: str
    title: str
    source: str
    metrics: tuple
    rows: tuple
    seeds: int = 3
    note: str = ""


# ------------------------------------------------------------------ MEMO / PyCIL
_MEMO_ALIGNED = {  # MEMO paper, App. Table 14 and the aligned settings: (avg, last)
    (10, 10): {"replay": (69.98, 55.61), "icarl": (70.94, 58.52), "wa": (69.55, 59.26),
               "dynamic_er": (71.47, 60.26), "memo": (72.37, 61.98)},
    (50, 5): {"replay": (63.55, 56.20), "icarl": (65.28, 58.37), "wa": (65.95, 60.49),
              "dynamic_er": (67.57, 59.84), "memo": (69.08, 63.36)},
    (50, 10): {"replay": (61.19, 53.23), "icarl": (65.48, 57.92), "wa": (67.44, 60.62),
               "dynamic_er": (69.16, 62.48), "memo": (70.09, 63.66)},
}
_MEMO_BENCH = {  # CIL survey Table 5 (CIFAR-100, 2000 exemplars): (avg, last)
    (5, 5): {"replay": (58.20, 38.69), "icarl": (63.51, 45.12), "wa": (64.65, 48.46),
             "dynamic_er": (67.99, 53.95), "memo": (68.10, 54.23)},
    (10, 10): {"replay": (59.31, 41.01), "icarl": (64.42, 49.52), "wa": (67.09, 52.30),
               "dynamic_er": (69.74, 58.59), "memo": (70.20, 58.49)},
    (20, 20): {"replay": (60.03, 43.08), "icarl": (67.00, 54.23), "wa": (68.51, 57.97),
               "dynamic_er": (70.82, 62.40), "memo": (70.43, 61.39)},
    (50, 10): {"replay": (52.37, 41.26), "icarl": (61.29, 52.04), "wa": (64.32, 55.85),
               "dynamic_er": (68.24, 61.94), "memo": (69.39, 62.83)},
}
_MEMO_BENCH_EXTRA = {  # the survey appendix's per-stage MEMO / DER numbers (Avg = their mean); no table cell
    (50, 25): {"memo": (71.31, 66.06)},
    (50, 50): {"memo": (None, None), "dynamic_er": (None, None)},  # B0 Inc50: a setting of the scripts, no number
}
_IN100_BENCH = {  # CIL survey Table 6 (ImageNet-100, 2000 exemplars): (avg, last)
    (5, 5): {"replay": (56.37, 37.32), "icarl": (62.36, 44.10), "wa": (62.96, 46.06),
             "dynamic_er": (73.79, 63.66), "memo": (68.19, 56.10)},
    (10, 10): {"replay": (59.21, 41.00), "icarl": (67.11, 50.98), "wa": (68.60, 55.04),
               "dynamic_er": (77.08, 66.84), "memo": (71.00, 60.96)},
    (20, 20): {"replay": (64.53, 48.76), "icarl": (73.57, 61.50), "wa": (74.44, 64.84),
               "dynamic_er": (78.56, 72.10), "memo": (76.59, 68.64)},
    (50, 10): {"replay": (55.73, 43.38), "icarl": (62.56, 53.68), "wa": (65.81, 56.64),
               "dynamic_er": (77.57, 71.10), "memo": (76.66, 70.22)},
    (50, 25): {"memo": (78.20, 72.96), "dynamic_er": (79.51, 74.88)},  # survey appendix per-stage means
}
_IN_ALIGNED = {  # MEMO paper's aligned settings: ImageNet-100 B50 Inc5 (756 MB), ImageNet-1k B0 Inc100 (3297 MB)
    ("imagenet100", 50, 5): {"replay": (61.04, 51.30), "icarl": (65.90, 57.30), "wa": (65.15, 57.96),
                             "dynamic_er": (76.37, 70.26), "memo": (77.27, 71.54)},
    ("imagenet1k", 100, 100): {"replay": (55.78, 39.40), "icarl": (57.94, 41.30), "wa": (59.86, 43.23),
                               "dynamic_er": (68.36, 58.30), "memo": (68.09, 57.40)},
    ("imagenet1k", 500, 100): {"memo": (None, None), "dynamic_er": (None, None)},
}
_CIL_NAMES = {"replay": "Replay", "icarl": "iCaRL", "wa": "WA", "dynamic_er": "DER", "memo": "MEMO"}


def _setting(init: int, inc: int) -> str:
    return f"B{0 if init == inc else init} Inc{inc}"


def _cil_rows(numbers: dict, budget: str, config: str = "cil_cifar100", prefix: str = "") -> tuple:
    rows = []
    for key, by_method in numbers.items():
        cfg, (init, inc) = (config, key) if len(key) == 2 else (f"cil_{key[0]}", key[1:])
        pre = prefix or ("" if len(key) == 2 else {"imagenet100": "ImageNet-100 ", "imagenet1k": "ImageNet-1k "}[key[0]])
        for m, paper in by_method.items():
            rows.append(Row(f"{_CIL_NAMES[m]} {pre}{_setting(init, inc)}", cfg, f"{m},{init},{inc},{budget}",
                            paper=paper))
    return tuple(rows)


MEMO_CIFAR100_ALIGNED = Table(
    "memo_cifar100_aligned", "MEMO's memory-aligned comparison on CIFAR-100 (ResNet-32)",
    "Zhou et al., ICLR 2023, App. Table 14 and the aligned settings; seed 1993 class order",
    (AVG, LAST), _cil_rows(_MEMO_ALIGNED, "fair"), seeds=3,
    note="The paper reports one run (seed 1993); clj reports the mean of its seeds over the same class order.")

_OWN_BENCH = {  # CIL survey Table 5 rows of methods with their own configs: {setting: (avg, last)}
    ("BiC", "bic", ":fixed"): {(5, 5): (62.38, 43.08), (10, 10): (65.08, 50.79), (20, 20): (67.03, 56.22),
                              (50, 10): (61.01, 49.19)},
    ("AANets (LUCIR)", "lucir", ""): {(5, 5): (59.34, 42.42), (10, 10): (61.73, 45.53)},
    ("GEM", "gem", ""): {(5, 5): (31.73, 19.48), (10, 10): (40.18, 23.03), (20, 20): (50.33, 34.09),
                         (50, 10): (33.28, 21.33)},
    ("PODNet", "podnet", ""): {(5, 5): (47.88, 27.99), (10, 10): (55.22, 36.78), (20, 20): (62.96, 49.08),
                               (50, 10): (64.45, 55.21)},
}
_OWN_IN100 = {("BiC", "bic", ":fixed"): {(5, 5): (58.03, 34.56), (10, 10): (65.13, 42.40), (20, 20): (76.29, 66.92),
                                        (50, 10): (66.36, 49.90)},
              ("PODNet", "podnet", ""): {(5, 5): (53.70, 33.34), (10, 10): (64.03, 45.40), (20, 20): (71.99, 58.04),
                                         (50, 10): (73.83, 62.94)}}


def _own_rows(numbers: dict, dataset: str) -> tuple:
    rows = []
    for (name, m, variant), by in numbers.items():
        for (init, inc), paper in by.items():
            cfg = f"{m}_{dataset}_b{0 if init == inc else init}inc{inc}"
            rows.append(Row(f"{name} {_setting(init, inc)}", cfg, variant[1:] or None, paper=paper))
    return tuple(rows)


MEMO_CIFAR100 = Table(
    "memo_cifar100", "The PyCIL benchmark table on CIFAR-100 (ResNet-32, 2000 exemplars)",
    "Zhou et al., CIL survey, Table 5; seed 1993 class order",
    (AVG, LAST), _cil_rows({**_MEMO_BENCH, **_MEMO_BENCH_EXTRA}, "fixed") + _own_rows(_OWN_BENCH, "cifar100"),
    seeds=3,
    note="B50 Inc25 is the survey appendix's per-stage curve (Avg its mean); B0 Inc50 has no published cell.")

_SURVEY_ALIGNED = {  # CIL survey Table 7 (memory-aligned): (avg, last) for CIFAR B0 Inc5, B0 Inc10
    "replay": ((74.25, 61.09), (69.97, 55.61)), "icarl": ((75.17, 61.88), (70.94, 58.52)),
    "wa": ((74.07, 63.18), (69.55, 59.26)), "dynamic_er": ((70.41, 57.85), (71.47, 60.26)),
    "memo": ((73.57, 62.97), (72.37, 61.98)), "coil": ((74.39, 60.78), (70.69, 54.40)),
    "foster": ((75.06, 62.82), (72.28, 59.39)), "bic": ((71.27, 60.98), (70.69, 59.60)),
}
_OWN_CONFIGS = {"coil", "foster", "bic"}  # methods with their own configs/<method>_cifar100_b0inc<N>.py


def _survey_rows() -> tuple:
    rows = [Row("PODNet B0 Inc10", "podnet_cifar100_b0inc10_fair", paper=(60.80, 45.38))]
    for inc, col in ((5, 0), (10, 1)):
        for m, cells in _SURVEY_ALIGNED.items():
            name = {"coil": "Coil", "foster": "FOSTER", "bic": "BiC"}.get(m) or _CIL_NAMES[m]
            if m in _OWN_CONFIGS:
                rows.append(Row(f"{name} B0 Inc{inc}", f"{m}_cifar100_b0inc{inc}", paper=cells[col]))
            else:
                rows.append(Row(f"{name} B0 Inc{inc}", "cil_cifar100", f"{m},{inc},{inc},fair", paper=cells[col]))
    return tuple(rows)


MEMO_SURVEY_ALIGNED = Table(
    "memo_survey_aligned", "The CIL survey's memory-aligned table on CIFAR-100 (ResNet-32, every method at DER's bytes)",
    "Zhou et al., CIL survey, Table 7 (B0 Inc5 at 41.22 MB, B0 Inc10 at 23.5 MB)",
    (AVG, LAST), _survey_rows(), seeds=3,
    note="GEM's aligned rows (20.30 / 7.99, 27.03 / 10.72) need a per-task memory of the aligned size: "
         "not configured yet. PODNet B0 Inc5 (59.03 / 42.98) has no aligned config yet.")

MEMO_IMAGENET100 = Table(
    "memo_imagenet100", "The PyCIL benchmark table on ImageNet-100 (ResNet-18, 2000 exemplars)",
    "Zhou et al., CIL survey, Table 6; the class subset and seed-1993 order of PyCIL's list",
    (AVG, LAST), _cil_rows(_IN100_BENCH, "fixed", config="cil_imagenet100") + _own_rows(_OWN_IN100, "imagenet100"),
    seeds=1,
    note="The paper reports one run. B50 Inc25 is the survey appendix's per-stage curve (Avg its mean).")

MEMO_IMAGENET_ALIGNED = Table(
    "memo_imagenet_aligned", "MEMO's memory-aligned comparison on ImageNet-100 and ImageNet-1k (ResNet-18)",
    "Zhou et al., ICLR 2023, the aligned settings (ImageNet-100 B50 Inc5, ImageNet-1k B0 Inc100)",
    (AVG, LAST), _cil_rows(_IN_ALIGNED, "fair"), seeds=1,
    note="The ImageNet-1k cells sit under a mislabelled caption in the transcription read; B500 Inc100 has "
         "no published cell.")

# ------------------------------------------------------------------ AKR
_AKR = {  # AKR project page figure, CIFAR-100: avg incremental accuracy
    "b0inc20": ("TFS N=5", {"none": 67.24, "mixup": 69.96, "attentive": 70.38}),
    "b0inc10": ("TFS N=10", {"none": 63.53, "mixup": 68.14, "attentive": 69.11}),
    "b0inc5": ("TFS N=20", {"none": 59.14, "mixup": 66.04, "attentive": 67.40}),
    "b50inc10": ("TFH N=5", {"none": 61.88, "mixup": 66.97, "attentive": 67.73}),
    "b50inc5": ("TFH N=10", {"none": 57.84, "mixup": 63.84, "attentive": 65.15}),
    "b50inc2": ("TFH N=25", {"none": 53.57, "mixup": 59.68, "attentive": 60.38}),
}
_AKR_NAMES = {"none": "Base", "mixup": "Mixup", "attentive": "AKR"}
_AKR_OTHERS = {  # the same figure's BiC and LUCIR rows (quoted or reproduced there from their papers)
    "b0inc20": {"bic": 66.70, "lucir": 64.82}, "b0inc10": {"bic": 61.90, "lucir": 60.26},
    "b0inc5": {"bic": 60.32, "lucir": 57.97}, "b50inc10": {"bic": 62.15, "lucir": 62.18},
    "b50inc5": {"bic": 58.84, "lucir": 60.22}, "b50inc2": {"bic": 53.82, "lucir": 57.73},
}
AKR_CIFAR100 = Table(
    "akr_cifar100", "AKR's CIFAR-100 table (ResNet-32, 2000 exemplars, TFS / TFH)",
    "AKR project page, quantitative results figure, average incremental accuracy",
    (AVG,), tuple(Row(f"{_AKR_NAMES[r]} {col}", f"akr_cifar100_{setting}", r, paper=(num,))
                  for setting, (col, by) in _AKR.items() for r, num in by.items())
    + tuple(Row(f"{'BiC' if m == 'bic' else 'LUCIR'} {_AKR[setting][0]}", f"{m}_cifar100_{setting}",
                "fixed" if m == "bic" else None, paper=(num,))
            for setting, by in _AKR_OTHERS.items() for m, num in by.items()), seeds=3,
    note="The BiC and LUCIR rows run clj's BiC (PyCIL's protocol, 2000 exemplars) and LUCIR (the original "
         "code's CIFAR settings); the figure quotes or reproduces them from their papers.")

_AKR_IN = {  # AKR project page figure, ImageNet-subset: avg incremental accuracy
    (0, 20): ("TFS N=5", {"none": 78.88, "mixup": 78.54, "attentive": 79.04}),
    (0, 10): ("TFS N=10", {"none": 73.32, "mixup": 72.75, "attentive": 74.53}),
    (0, 5): ("TFS N=20", {"none": 65.07, "mixup": 65.50, "attentive": 67.37}),
    (50, 10): ("TFH N=5", {"none": 72.55, "mixup": 73.43, "attentive": 74.75}),
    (50, 5): ("TFH N=10", {"none": 66.82, "mixup": 68.71, "attentive": 70.85}),
    (50, 2): ("TFH N=25", {"none": 61.00, "mixup": 63.88, "attentive": 65.11}),
}
AKR_IMAGENET100 = Table(
    "akr_imagenet100", "AKR's ImageNet-subset table (ResNet-18, 2000 exemplars, TFS / TFH)",
    "AKR project page, quantitative results figure, average incremental accuracy",
    (AVG,), tuple(Row(f"{_AKR_NAMES[r]} {col}", "akr_imagenet100", f"{r},{init},{inc}", paper=(num,))
                  for (init, inc), (col, by) in _AKR_IN.items() for r, num in by.items()), seeds=3,
    note="The paper gives no ImageNet schedule: the config takes official iCaRL's ImageNet one "
         "(configs/akr_common.py).")

# ------------------------------------------------------------------ SERENA
_SERENA = {  # SERENA README figure (pixel readings, +-0.5): final accuracy
    "mnist": ("Split-MNIST", {"official": 98.5, "iid_offline": 98.4, "iid_online": 96.4, "er": 92.1}),
    "cifar10": ("Split-CIFAR-10", {"official": 88.5, "iid_offline": 85.3, "iid_online": 60.2, "er": 42.3}),
    "cifar100": ("Split-CIFAR-100", {"official": 60.7, "iid_offline": 57.3, "iid_online": 22.1, "er": 21.1}),
}
_SERENA_BASELINES = {"mnist": {"cope": 93.8, "mir": 92.1, "gss": 91.9},
                     "cifar10": {"cope": 50.6, "mir": 38.5, "gss": 29.3},
                     "cifar100": {"cope": 23.0, "mir": 17.3, "gss": 14.3}}
_SERENA_NAMES = {"official": "SERENA", "iid_offline": "iid offline", "iid_online": "iid online",
                 "er": "reservoir ER"}
SERENA = Table(
    "serena", "SERENA's online data-incremental figure (Split-MNIST / CIFAR-10 / CIFAR-100)",
    "SERENA README figure, final accuracy over all test examples",
    (POOLED_FINAL,), tuple(Row(f"{_SERENA_NAMES[v]} {title}", f"serena_{ds}", v, paper=(num,))
                           for ds, (title, by) in _SERENA.items() for v, num in by.items())
    + tuple(Row(f"{name} {title}", f"{m}_{ds}", paper=(_SERENA_BASELINES[ds].get(m.split("_")[0]),))
            for ds, (title, _) in _SERENA.items()
            for m, name in (("cope", "CoPE"), ("mir", "MIR"), ("gss_online", "GSS"), ("gdumb_online", "GDumb"))),
    seeds=3,
    note="The class order follows the seed (the official rule): each seed runs as its own program. GDumb is "
         "not in SERENA's figure (the usual online floor; its retraining at the end of the stream).")

# ------------------------------------------------------------------ NISPA
NISPA = Table(
    "nispa", "NISPA on EF-MNIST / CIFAR-10 / CIFAR-100 (task-IL, sparse networks)",
    "NISPA authors' committed seed-0 results; the paper's table was not retrieved",
    (TIL_FINAL,), (Row("NISPA CIFAR-10", "nispa_cifar10", paper=(91.28,)),
                   Row("NISPA CIFAR-100", "nispa_cifar100", paper=(None,)))
    + tuple(Row(f"{name} {title}", f"{m}_{ds}", paper=(None,))
            for ds, title in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"))
            for m, name in (("stl", "STL"), ("stl_iso", "STL-iso"), ("clnp", "CLNP"), ("gem", "GEM"))), seeds=3,
    note="The paper's numbers are 5-seed means; only the authors' seed-0 runs could be read. EF-MNIST "
         "(authors' seed 0: 91.72) is a stream of two datasets that launch.py does not build: "
         "experiments/nispa.py --bench ef_mnist runs it.")

# ------------------------------------------------------------------ DER (Buzzega et al. 2020)
_DER = {  # DER paper Table 2 (class-IL, task-IL), DER++
    "seq_cifar10": ("Seq-CIFAR-10", {200: (64.88, 91.92), 500: (72.70, 93.88), 5120: (85.24, 96.12)}),
    "seq_tinyimg": ("Seq-Tiny-ImageNet", {200: (10.96, 40.87), 500: (19.38, 51.91), 5120: (39.02, 69.84)}),
}
DERPP = Table(
    "derpp", "DER++ on Seq-CIFAR-10 and Seq-Tiny-ImageNet (ResNet-18, buffers 200 / 500 / 5120)",
    "Buzzega et al., NeurIPS 2020, Table 2 (10 runs)", (CIL_FINAL, TIL_FINAL),
    tuple(Row(f"DER++ {title} buffer {b}", f"derpp_{ds}", str(b), paper=num)
          for ds, (title, by) in _DER.items() for b, num in by.items()), seeds=10)

# ------------------------------------------------------------------ SER
SER = Table(
    "ser", "SER's main table (class-IL, 20 tasks x 5 classes, buffers 1000 / 2000 / 5000)",
    "Bellitto et al., SER, Table 1; the cells could not be retrieved",
    (CIL_FINAL,), tuple(Row(f"{name} buffer {b}", cfg, overrides=(("replay.buffer_size", b),), paper=(None,))
                        for name, cfg in (("DER++ + SER", "ser_derpp_paper"), ("ER-ACE + SER", "ser_er_ace_paper"))
                        for b in (1000, 2000, 5000)), seeds=3,
    note="Split Mini-ImageNet prepared with python -m clj.data.prepare mini_imagenet (SER's layout and label "
         "map; --config.dataset=fg_imagenet for Split FG-ImageNet). The paper's cells could not be retrieved.")

TABLES = {t.name: t for t in (MEMO_CIFAR100_ALIGNED, MEMO_CIFAR100, MEMO_SURVEY_ALIGNED, MEMO_IMAGENET100, MEMO_IMAGENET_ALIGNED,
                               AKR_CIFAR100, AKR_IMAGENET100, SERENA, NISPA, DERPP, SER)}
"""Every table, by name."""
